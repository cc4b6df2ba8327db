"""Median milliseconds per training step of a model, optionally beside the PyTorch reference.

    python bench/train_step.py --model pix2pix --size 256 --batch 1 [--steps 7] [--torch] [--cpu_conv native]

Each model folder provides ``<model>/src/utils.py: make_bench_step(size, batch)``, a zero-argument
callable running one full train step on random data. ``--cpu_conv`` overrides the model config's CPU
convolution path (``common/conv.py``; pix2pix's ``auto``: Im2Col + AVX-512 MatMul where available). ``--torch`` first runs
``../shared/bench/torch_pix2pix_step.py`` (pix2pix only) in the same run, for a same-machine comparison.
Prints one line per measurement and the peak resident memory.
"""
import argparse
import importlib
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TORCH_REFERENCE = os.path.join(os.path.dirname(REPO), "shared", "bench", "torch_pix2pix_step.py")


def median_ms(step, steps, warmup=2):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1000.0)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pix2pix")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--cpu_conv", choices=["auto", "native", "matmul"],
                        help="CPU convolution path (common/conv.py); default: the model config's cpu_conv. "
                             "Models without that key (CRN) always run native")
    parser.add_argument("--torch", action="store_true", help="also time the PyTorch reference (pix2pix)")
    args = parser.parse_args()
    if args.torch:
        if args.model != "pix2pix":
            parser.error("--torch compares with the PyTorch pix2pix reference only")
        if not os.path.isfile(TORCH_REFERENCE):
            parser.error(f"PyTorch reference {TORCH_REFERENCE} not found")
        # before MindSpore is loaded, with the caller's environment (no oneDNN ISA cap for torch)
        out = subprocess.run([sys.executable, TORCH_REFERENCE, str(args.size)], capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"torch reference failed: {out.stderr[-500:]}")

    from common.config import load_config
    from common.runtime import init_runtime
    cfg = load_config(os.path.join(REPO, args.model, "default_config.yaml"))
    cpu_conv = (args.cpu_conv or cfg.cpu_conv) if "cpu_conv" in cfg else "native"
    rt = init_runtime(args.device, "graph", seed=0, cpu_conv=cpu_conv)
    utils = importlib.import_module(f"{args.model}.src.utils")
    t = time.perf_counter()
    step = utils.make_bench_step(args.size, args.batch, conv_impl=rt.conv_impl)
    step()
    first = time.perf_counter() - t
    ms_step = median_ms(step, args.steps)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"mindspore {args.model} size {args.size} batch {args.batch} on {args.device}: median {ms_step:.1f} ms/step "
          f"over {args.steps} steps (build+compile+first step {first:.1f} s, peak RSS {peak_gb:.2f} GB; {rt.describe_conv})")


if __name__ == "__main__":
    main()
