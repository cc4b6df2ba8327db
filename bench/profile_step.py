"""Where a model's training step spends its time: MindSpore profiler kernel time per op type and per cell class.

    python bench/profile_step.py --model cocosnet --size 256 [--steps 2] [--cpu_conv winograd] [--top 15]
    python bench/profile_step.py --model pix2pix --size 256 --inference --steps 10

Builds the same step as ``bench/train_step.py`` (``<model>/src/utils.py: make_bench_step``), runs it twice to
compile and warm up, then profiles ``--steps`` steps and prints, per step: the kernel time of each op type
(``cpu_op_type_info``), and the kernel time under each innermost cell class (``_WinogradMatMul``, ``Standardize``,
...; ``(autodiff)`` marks gradient ops MindSpore derived, ``expander:`` the ops of its gradient expanders, which
carry no cell name). Per class rather than per cell instance: MindSpore names the ops of a hand-written backward
(``bprop``) after the first instance of the class, whichever instance ran them. The raw output stays in ``--output``.
``--inference`` profiles one eval-mode forward of the inference network instead (``make_bench_inference``; pix2pix
and CoCosNet).
"""
import argparse
import csv
import importlib
import glob
import os
import sys
import time
from collections import defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

from train_step import parse_size, step_builder  # noqa: E402  (bench/ is on the path above)


def read_rows(output, name):
    """Rows of the profiler CSV ``name`` written under ``output`` (the newest run)."""
    paths = sorted(glob.glob(os.path.join(output, "*", "FRAMEWORK", name)), key=os.path.getmtime)
    if not paths:
        raise SystemExit(f"no {name} under {output}: the profiler wrote nothing (see its log under {output})")
    with open(paths[-1], newline="") as f:
        return list(csv.DictReader(f))


def cell_class_of(full_name):
    """``Default/network-X/netG-TranslationNet/up_3-SPADEResnetBlock/conv_0-SpectralNorm/MatMul-op3`` ->
    ``SpectralNorm``; ``Gradients/...`` -> ``<class> (autodiff)``; ``Expand/_SoftmaxBackward/...`` ->
    ``expander: _SoftmaxBackward``."""
    parts = full_name.split("/")[:-1]
    if parts[:1] == ["Expand"]:
        return "expander: " + "/".join(parts[1:])
    cells = [p.split("-", 1)[1] for p in parts if "-" in p and not p.startswith("network-")]
    name = cells[-1] if cells else "(top level)"
    return name + " (autodiff)" if parts[:1] == ["Gradients"] else name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cocosnet")
    parser.add_argument("--size", type=parse_size, default=128, help="N (square) or HxW (OSMIS)")
    parser.add_argument("--batch", type=int, help="samples per step (default: the model config's batch_size; OSMIS 5)")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps (after two warm-up steps)")
    parser.add_argument("--cpu_conv", choices=["auto", "native", "matmul", "winograd", "onednn", "mixed"],
                        help="CPU convolution path (common/conv.py); default: the model config's cpu_conv")
    parser.add_argument("--no_masks", action="store_true", help="OSMIS: SIV-GAN (no mask branch)")
    parser.add_argument("--inference", action="store_true",
                        help="profile the inference network's forward (<model>/src/utils.py: make_bench_inference)")
    parser.add_argument("--top", type=int, default=15, help="rows printed per table")
    parser.add_argument("--output", default="profile_output", help="folder of the profiler's raw output")
    args = parser.parse_args()

    rt, build, cfg = step_builder(args.model, args.cpu_conv, no_masks=args.no_masks)
    args.batch = args.batch or cfg.batch_size
    from mindspore import Profiler
    if args.inference:
        utils = importlib.import_module(f"{args.model}.src.utils")
        if not hasattr(utils, "make_bench_inference"):
            parser.error(f"--inference: {args.model}/src/utils.py has no make_bench_inference (pix2pix and cocosnet have)")
        step = utils.make_bench_inference(args.size, args.batch, conv_impl=rt.conv_impl)
    else:
        step = build(args.size, args.batch)
    for _ in range(2):
        step()
    profiler = Profiler(output_path=os.path.abspath(args.output))
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    wall = (time.perf_counter() - t) / args.steps
    profiler.analyse()

    types = read_rows(args.output, "cpu_op_type_info_0.csv")
    total = sum(float(r["total_compute_time"]) for r in types) / args.steps
    print(f"{args.model} size {args.size} batch {args.batch}, {rt.describe_conv}: wall {wall:.2f} s/step, "
          f"kernel time {total / 1000:.2f} s/step")
    print(f"\n{'op type':<28}{'ms/step':>10}{'calls/step':>12}{'share':>8}")
    for r in sorted(types, key=lambda r: -float(r["total_compute_time"]))[:args.top]:
        ms_step = float(r["total_compute_time"]) / args.steps
        calls = int(r["type_occurrences"]) / args.steps
        print(f"{r['op_type']:<28}{ms_step:>10.1f}{calls:>12.0f}{ms_step / total:>8.1%}")

    classes = defaultdict(float)
    for r in read_rows(args.output, "cpu_op_detail_info_0.csv"):
        classes[cell_class_of(r["full_op_name"])] += float(r["op_total_time(ms)"]) / args.steps
    print(f"\n{'cell class':<44}{'ms/step':>10}{'share':>8}")
    for name, ms_step in sorted(classes.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{name:<44}{ms_step:>10.1f}{ms_step / total:>8.1%}")


if __name__ == "__main__":
    main()
