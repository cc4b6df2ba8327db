"""Median milliseconds per training step of a model, optionally beside the PyTorch reference.

    python bench/train_step.py --model pix2pix --size 256 --batch 1 [--steps 7] [--torch] [--cpu_conv native]
    python bench/train_step.py --model osmis --size 192x320 --batch 5 [--no_masks] [--torch]

Each model folder provides ``<model>/src/utils.py: make_bench_step(size, batch)``, a zero-argument
callable running one full train step on random data (``--size`` HxW: OSMIS only; ``--no_masks``: OSMIS
as SIV-GAN). ``--cpu_conv`` overrides the model config's CPU convolution path (``common/conv.py``;
pix2pix's ``auto``: Im2Col + AVX-512 MatMul where available). ``--torch`` first runs a PyTorch step in
the same run, for a same-machine comparison: ``../shared/bench/torch_pix2pix_step.py`` (pix2pix) or
``bench/torch_osmis_step.py`` (OSMIS, a restatement of the reference's step).
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

TORCH_REFERENCE = {"pix2pix": os.path.join(os.path.dirname(REPO), "shared", "bench", "torch_pix2pix_step.py"),
                   "osmis": os.path.join(REPO, "bench", "torch_osmis_step.py")}


def parse_size(text):
    """``256`` -> 256; ``192x320`` -> (192, 320) (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size={text!r}: expected N or HxW, e.g. 64 or 192x320") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--size={text!r}: expected N or HxW, e.g. 64 or 192x320")
    return values[0] if len(values) == 1 else tuple(values)


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
    parser.add_argument("--size", type=parse_size, default=256, help="N (square) or HxW (OSMIS)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--cpu_conv", choices=["auto", "native", "matmul"],
                        help="CPU convolution path (common/conv.py); default: the model config's cpu_conv. "
                             "Models without that key (CRN) always run native")
    parser.add_argument("--torch", action="store_true", help="also time the PyTorch reference (pix2pix, osmis)")
    parser.add_argument("--no_masks", action="store_true", help="OSMIS: time SIV-GAN (no mask branch)")
    args = parser.parse_args()
    if args.model != "osmis" and (isinstance(args.size, tuple) or args.no_masks):
        parser.error("--size HxW and --no_masks are OSMIS options")
    if args.torch:
        if args.model not in TORCH_REFERENCE:
            parser.error(f"--torch compares with a PyTorch step of {sorted(TORCH_REFERENCE)} only")
        script = TORCH_REFERENCE[args.model]
        if not os.path.isfile(script):
            parser.error(f"PyTorch reference {script} not found")
        if args.model == "osmis":
            h, w = args.size if isinstance(args.size, tuple) else (args.size, args.size)
            cmd = [script, str(h), str(w), "--steps", str(args.steps)] + (["--no_masks"] if args.no_masks else [])
        else:
            cmd = [script, str(args.size)]
        # before MindSpore is loaded, with the caller's environment (no oneDNN ISA cap for torch)
        out = subprocess.run([sys.executable] + cmd, capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"torch reference failed: {out.stderr[-500:]}")

    from common.config import load_config
    from common.runtime import init_runtime
    cfg = load_config(os.path.join(REPO, args.model, "default_config.yaml"))
    cpu_conv = (args.cpu_conv or cfg.cpu_conv) if "cpu_conv" in cfg else "native"
    rt = init_runtime(args.device, "graph", seed=0, cpu_conv=cpu_conv)
    utils = importlib.import_module(f"{args.model}.src.utils")
    t = time.perf_counter()
    extra = {"masks": not args.no_masks} if args.model == "osmis" else {}
    step = utils.make_bench_step(args.size, args.batch, conv_impl=rt.conv_impl, **extra)
    step()
    first = time.perf_counter() - t
    ms_step = median_ms(step, args.steps)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    size = "x".join(map(str, args.size)) if isinstance(args.size, tuple) else args.size
    name = f"{args.model} (SIV-GAN)" if args.no_masks else args.model
    print(f"mindspore {name} size {size} batch {args.batch} on {args.device}: median {ms_step:.1f} ms/step "
          f"over {args.steps} steps (build+compile+first step {first:.1f} s, peak RSS {peak_gb:.2f} GB; {rt.describe_conv})")


if __name__ == "__main__":
    main()
