"""Median milliseconds per training step of a model, optionally beside the PyTorch reference.

    python bench/train_step.py --model pix2pix --size 256 --batch 1 [--steps 7] [--torch] [--cpu_conv native]

Each model folder provides ``<model>/src/utils.py: make_bench_step(size, batch)``, a zero-argument
callable running one full train step on random data. ``--cpu_conv`` overrides the model config's CPU
convolution path (``common/conv.py``; pix2pix's ``auto``: Im2Col + AVX-512 MatMul where available). ``--torch`` first runs
the PyTorch reference (``../shared/bench/torch_pix2pix_step.py``; for CRN ``torch_crn_step.py SIZE 9 STEPS``)
in the same run, for a same-machine comparison, and prints the ratio.
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

TORCH_REFERENCES = {  # model -> (script, arguments after the size)
    "pix2pix": (os.path.join(os.path.dirname(REPO), "shared", "bench", "torch_pix2pix_step.py"), []),
    "crn": (os.path.join(os.path.dirname(REPO), "shared", "bench", "torch_crn_step.py"), ["9"]),
}


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
                        help="CPU convolution path (common/conv.py); default: the model config's cpu_conv")
    parser.add_argument("--torch", action="store_true", help="also time the PyTorch reference (pix2pix, crn)")
    parser.add_argument("--mode", choices=["graph", "pynative"], default="graph",
                        help="MindSpore execution mode of the step (CRN at 256p: see crn/README.md Performance)")
    args = parser.parse_args()
    torch_ms = None
    if args.torch:
        if args.model not in TORCH_REFERENCES:
            parser.error(f"--torch: no PyTorch reference for {args.model} (have: {', '.join(TORCH_REFERENCES)})")
        script, extra = TORCH_REFERENCES[args.model]
        if not os.path.isfile(script):
            parser.error(f"PyTorch reference {script} not found")
        if args.model == "crn":
            extra = extra + [str(args.steps)]
        # before MindSpore is loaded, with the caller's environment (no oneDNN ISA cap for torch)
        out = subprocess.run([sys.executable, script, str(args.size)] + extra, capture_output=True, text=True)
        if out.returncode == 0:
            lines = out.stdout.strip().splitlines()
            print(" | ".join(line for line in lines if "ms" in line or "RSS" in line))
            torch_ms = float(next(line for line in lines if "median ms" in line).split()[-1])
        else:
            print(f"torch reference failed: {out.stderr[-500:]}")

    from common.config import load_config
    from common.runtime import init_runtime
    cfg = load_config(os.path.join(REPO, args.model, "default_config.yaml"))
    cpu_conv = (args.cpu_conv or cfg.cpu_conv) if "cpu_conv" in cfg else "native"
    rt = init_runtime(args.device, args.mode, seed=0, cpu_conv=cpu_conv)
    utils = importlib.import_module(f"{args.model}.src.utils")
    t = time.perf_counter()
    step = utils.make_bench_step(args.size, args.batch, conv_impl=rt.conv_impl)
    step()
    first = time.perf_counter() - t
    ms_step = median_ms(step, args.steps)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"mindspore {args.model} size {args.size} batch {args.batch} on {args.device}: median {ms_step:.1f} ms/step "
          f"over {args.steps} steps (build+compile+first step {first:.1f} s, peak RSS {peak_gb:.2f} GB; {rt.describe_conv}, "
          f"{args.mode} mode)")
    if torch_ms:
        print(f"ratio mindspore / torch: {ms_step / torch_ms:.2f}")


if __name__ == "__main__":
    main()
