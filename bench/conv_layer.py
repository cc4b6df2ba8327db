"""Median milliseconds of one 3x3 (or 4x4) stride-1 convolution, forward + both gradients, per CPU convolution path.

    python bench/conv_layer.py --cin 1024 --cout 1024 --height 64 --width 128 [--batch 1] [--steps 3]
    python bench/conv_layer.py ... --cpu_conv matmul|winograd|onednn|native   # one path in this process
    python bench/conv_layer.py ... --both                          # matmul, then winograd, each in its own process
    python bench/conv_layer.py ... --paths native,onednn,winograd  # those paths, each in its own process
    python bench/conv_layer.py ... --keep_transforms               # winograd, transformed input kept for the backward
    python bench/conv_layer.py ... --precision bf16                # MatMuls with bf16 inputs (AMX / AVX512_BF16 CPUs)
    python bench/conv_layer.py ... --kernel 4                      # a 4x4 layer (PatchGAN's stride-1 ones)
    python bench/conv_layer.py ... --kernel 4 --stride 2 [--transposed]  # pix2pix's down (up) layers

The layer is ``common.conv.Conv2d(cin, cout, kernel, stride, padding=1)`` (``--transposed``:
``ConvTranspose2d``, the input ``--height`` x ``--width``) with random weights; one iteration is a compiled
``value_and_grad`` of ``sum(conv(x) * dy)`` with respect to the [B, cin, H, W] input and the weight (the work of
one layer in a training step). ``winograd`` prints the tile :func:`common.conv.winograd_tile` chose (0: the
layer stays Im2Col + MatMul). Prints the median wall ms/iter and the process's peak resident memory; the
per-layer figures of ``common/conv.py`` and docs/performance.md come from this script.
"""
import argparse
import os
import subprocess
import sys

from vgg_step import timed_ms  # (importing it also puts the repository on sys.path)


def run(cpu_conv, cin, cout, height, width, batch, steps, keep_transforms=False, precision="f32", kernel=3, stride=1,
        transposed=False):
    from common.runtime import init_runtime, peak_memory_gb
    rt = init_runtime("CPU", "graph", seed=0, cpu_conv=cpu_conv, precision=precision)
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor
    from common.conv import Conv2d, ConvTranspose2d, onednn_is_faster, use_conv_impl, winograd_tile

    layer = ConvTranspose2d if transposed else Conv2d
    conv = layer(cin, cout, kernel, stride, pad_mode="pad", padding=1)
    use_conv_impl(conv, rt.conv_impl, keep_transforms=keep_transforms)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((batch, cin, height, width), dtype=np.float32))
    if transposed:
        out_h, out_w = (height - 1) * stride + kernel - 2, (width - 1) * stride + kernel - 2
    else:
        out_h, out_w = (height + 2 - kernel) // stride + 1, (width + 2 - kernel) // stride + 1
    dy = Tensor(rng.standard_normal((batch, cout, out_h, out_w), dtype=np.float32))

    def loss(x):
        return (conv(x) * dy).sum()

    grad = ms.value_and_grad(loss, 0, conv.trainable_params())

    @ms.jit
    def step(x):
        _, (dx, dw) = grad(x)
        return dx, dw[0]

    ms_iter, _ = timed_ms(lambda: [t.asnumpy() for t in step(x)], steps)
    tile = winograd_tile(batch, cin, out_h, out_w, conv.largest_tile, kernel) \
        if rt.conv_impl in ("winograd", "mixed") and conv.has_winograd_form else 0
    if conv.mixed and onednn_is_faster(batch, cout, out_h, out_w, winograd_tile_size=tile, pointwise=conv.pointwise):
        tile = 0  # the layer ran on oneDNN's kernels
        path_note = " (oneDNN's kernels)"
    else:
        path_note = f" (tile {tile})" if tile else ""
    peak = peak_memory_gb()
    name = f"{'transposed ' if transposed else ''}conv{kernel}x{kernel}" + (f" stride {stride}" if stride > 1 else "")
    print(f"{name} {cin}->{cout} {height}x{width} batch {batch}, forward + both gradients: "
          f"median {ms_iter:.0f} ms/iter over {steps}, peak RSS {peak:.2f} GB; {rt.conv_impl}"
          + path_note
          + (", transforms kept" if keep_transforms and tile else "") + (", bf16" if precision == "bf16" else ""),
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu_conv", choices=["matmul", "winograd", "onednn", "mixed", "native"], default="winograd")
    parser.add_argument("--cin", type=int, default=1024)
    parser.add_argument("--cout", type=int, default=1024)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--kernel", type=int, choices=[3, 4], default=3, help="kernel size (padding 1)")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--transposed", action="store_true", help="a transposed convolution (its input size given)")
    parser.add_argument("--both", action="store_true", help="matmul, then winograd, each in a fresh process")
    parser.add_argument("--paths", default="", help="comma-separated paths, each in a fresh process (e.g. "
                                                     "native,onednn,winograd)")
    parser.add_argument("--keep_transforms", action="store_true",
                        help="winograd: keep the transformed input for the backward (common.conv.use_conv_impl)")
    parser.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                        help="bf16: oneDNN MatMuls with bf16 inputs (common.runtime.select_cpu_precision)")
    args = parser.parse_args()
    shape = ["--cin", str(args.cin), "--cout", str(args.cout), "--height", str(args.height), "--width",
             str(args.width), "--batch", str(args.batch), "--steps", str(args.steps), "--precision", args.precision,
             "--kernel", str(args.kernel), "--stride", str(args.stride)] + ["--transposed"] * args.transposed
    if args.both or args.paths:
        for impl in args.paths.split(",") if args.paths else ("matmul", "winograd"):
            subprocess.run([sys.executable, os.path.abspath(__file__), "--cpu_conv", impl] + shape, check=True)
        return
    run(args.cpu_conv, args.cin, args.cout, args.height, args.width, args.batch, args.steps, args.keep_transforms,
        args.precision, args.kernel, args.stride, args.transposed)


if __name__ == "__main__":
    main()
