"""Do denormal (subnormal) float32 values slow MindSpore's CPU kernels? Normal vs denormal inputs, same shapes.

    python bench/denormals.py [--cpu_conv matmul|native|auto] [--steps 15]

PyTorch's CoCosNet training slowed from 22 to 39 s/iteration on denormal gradients until flush-to-zero
was set (issue 10). This times, for inputs drawn from N(0, 1) and the same inputs times 1e-39 (all
subnormal), a 1024x1024 matmul, a 3x3 64->64 convolution forward and its input gradient at 128x128
(through ``common.conv.Conv2d`` on the chosen CPU path) and an elementwise multiply-add over 4x64x128x128
values, interleaved, median wall ms of ``--steps`` calls each. It also prints the share of each result
that is subnormal and that is exactly zero: a kernel that flushes returns zeros for subnormal inputs.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402,F401  (sets ONEDNN_MAX_CPU_ISA before mindspore loads)
import mindspore as ms  # noqa: E402
from mindspore import ops  # noqa: E402

from common.conv import Conv2d, use_conv_impl  # noqa: E402
from common.runtime import CPU_CONV_CHOICES, init_runtime  # noqa: E402

TINY = np.finfo(np.float32).tiny


def shares(t):
    """(subnormal share, exact-zero share) of a result."""
    v = np.abs(t.asnumpy())
    return ((v > 0) & (v < TINY)).mean(), (v == 0).mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu_conv", default="auto", choices=CPU_CONV_CHOICES)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    rt = init_runtime("CPU", "pynative", 0, cpu_conv=args.cpu_conv)
    rng = np.random.RandomState(0)
    conv = Conv2d(64, 64, 3, pad_mode="pad", padding=1)
    use_conv_impl(conv, rt.conv_impl)
    conv_grad = ms.grad(lambda x: (conv(x) * x.mean()).sum(), grad_position=0)
    cases = {
        "matmul 1024": (lambda a: ops.matmul(a, a), rng.randn(1024, 1024)),
        f"conv 3x3 64ch 128x128 ({rt.conv_impl})": (conv, rng.randn(1, 64, 128, 128)),
        f"conv input gradient ({rt.conv_impl})": (conv_grad, rng.randn(1, 64, 128, 128)),
        "elementwise x*0.75 + x*0.5": (lambda x: x * 0.75 + x * 0.5, rng.randn(4, 64, 128, 128)),
    }
    for name, (fn, base) in cases.items():
        inputs = {scale: ms.Tensor((base * scale).astype(np.float32)) for scale in (1.0, 1e-39)}
        times = {scale: [] for scale in inputs}
        for x in inputs.values():
            fn(x).asnumpy()
        for _ in range(args.steps):
            for scale, x in inputs.items():
                start = time.perf_counter()
                out = fn(x)
                out.asnumpy()
                times[scale].append(time.perf_counter() - start)
        sub, zero = shares(fn(inputs[1e-39]))
        print(f"{name}: normal {np.median(times[1.0]) * 1e3:.1f} ms, denormal {np.median(times[1e-39]) * 1e3:.1f} ms; "
              f"denormal-input result: {sub:.0%} subnormal, {zero:.0%} exact zeros")


if __name__ == "__main__":
    main()
