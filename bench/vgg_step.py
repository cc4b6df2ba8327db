"""Median milliseconds per VGG19 forward+backward (a perceptual loss's work) on one CPU convolution path.

    python bench/vgg_step.py [--cpu_conv matmul|native|auto] [--size 128] [--batch 1] [--steps 5]
    python bench/vgg_step.py --both    # matmul, then native, each in its own process
    python bench/vgg_step.py --size 256 --torch   # also bench/torch_vgg19_step.py, same step in PyTorch

One process, one path, as a training process runs: ``init_runtime(cpu_conv=...)`` sets the oneDNN ISA
cap (``matmul``: AVX512_CORE where the CPU has it; ``native``: AVX2) and ``use_conv_impl`` puts every
convolution of the network on that path. The network is ``common.vgg.VGG("vgg19", taps=("relu5_4",))``
with random weights, frozen as in a loss network; one iteration is the compiled forward pass and the
gradient of ``mean(relu5_4)`` with respect to the [B, 3, size, size] input. Prints one line with the
median wall ms/iter, the process CPU time per iteration (all threads: steadier than wall time on a shared
machine) and the process's peak resident memory.
"""
import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def timed_ms(step, steps, warmup=1):
    """(median wall ms, mean process CPU ms) per call of ``step`` over ``steps`` calls after ``warmup``."""
    for _ in range(warmup):
        step()
    times, cpu = [], time.process_time()
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1000.0)
    return sorted(times)[len(times) // 2], (time.process_time() - cpu) * 1000.0 / steps


def run(cpu_conv, size, batch, steps):
    import numpy as np

    from common.conv import use_conv_impl
    from common.runtime import init_runtime, peak_memory_gb
    import mindspore as ms
    from mindspore import nn, ops

    from common.vgg import VGG

    rt = init_runtime("CPU", "graph", seed=0, cpu_conv=cpu_conv)

    class InputGradient(nn.Cell):
        """[B, 3, H, W] -> d mean(relu5_4) / dx [B, 3, H, W]."""

        def __init__(self, vgg):
            super().__init__()
            self.vgg = vgg
            self.grad = ops.GradOperation()

        def loss(self, x):
            return self.vgg(x)[0].mean()

        def construct(self, x):
            return self.grad(self.loss)(x)

    vgg = VGG("vgg19", taps=("relu5_4",), pool="max")
    n_matmul = use_conv_impl(vgg, rt.conv_impl)
    step_cell = InputGradient(vgg)
    x = ms.Tensor(np.random.default_rng(0).uniform(-100, 100, (batch, 3, size, size)).astype(np.float32))

    def step():
        step_cell(x).asnumpy()

    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    ms_iter, cpu_iter = timed_ms(step, steps)
    peak_gb = peak_memory_gb()
    print(f"vgg19 forward+backward {size}x{size} batch {batch}: median {ms_iter:.1f} ms/iter over {steps} iterations "
          f"(CPU time {cpu_iter:.0f} ms/iter; compile+first {first:.1f} s), peak RSS {peak_gb:.2f} GB; {rt.describe_conv}, "
          f"{n_matmul} of {len(vgg.conv_layers())} convolutions on matmul", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu_conv", choices=["auto", "native", "matmul", "winograd", "onednn", "mixed"], default="matmul",
                        help="CPU convolution path of this process (common/conv.py)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--both", action="store_true", help="run matmul, then native, each in a fresh process")
    parser.add_argument("--torch", action="store_true",
                        help="first run bench/torch_vgg19_step.py (the same step in PyTorch) in its own process")
    args = parser.parse_args()
    if args.torch:
        script = os.path.join(REPO, "bench", "torch_vgg19_step.py")
        out = subprocess.run([sys.executable, script, str(args.size), str(args.batch), str(args.steps)],
                             capture_output=True, text=True)
        print(" ".join(out.stdout.split("\n")).strip() if out.returncode == 0 else f"torch failed: {out.stderr[-400:]}",
              flush=True)
    if args.both:
        for impl in ("matmul", "native"):
            subprocess.run([sys.executable, os.path.abspath(__file__), "--cpu_conv", impl, "--size", str(args.size),
                            "--batch", str(args.batch), "--steps", str(args.steps)], check=True)
        return
    run(args.cpu_conv, args.size, args.batch, args.steps)


if __name__ == "__main__":
    main()
