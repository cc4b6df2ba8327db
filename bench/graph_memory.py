"""Memory a gradient step holds per parameter byte, plain vs spectral-normalised convolutions, graph vs PyNative.

    python bench/graph_memory.py [--layers 40] [--channels 512] [--size 8] [--cpu_conv native|matmul]

Each case runs in its own process: a stack of ``--layers`` 3x3 convolutions (``common.conv.Conv2d``,
``--channels`` in and out) on a [1, C, size, size] input, one ``value_and_grad`` of the output sum w.r.t.
every weight, every gradient consumed (so none is pruned). Printed: the resident memory the step adds, in
copies of the parameters (weights + biases, float32). A small ``--size`` makes the weights dominate, which
is where CoCosNet's generator (96.7M spectral-normalised parameters, 1024 channels at 8x8-32x32) spends its
memory in graph mode; ``cocosnet/README.md`` Performance has the figures.
"""
import argparse
import os
import resource
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [("graph", "plain"), ("graph", "spectral"), ("pynative", "plain"), ("pynative", "spectral")]


def run_case(mode, kind, layers, channels, size, cpu_conv):
    """One case in this process; prints a line of figures."""
    sys.path.insert(0, REPO)
    from common.runtime import init_runtime
    rt = init_runtime("CPU", mode, seed=0, cpu_conv=cpu_conv)
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor, nn
    from common.conv import Conv2d, use_conv_impl
    from common.spectral_norm import spectral_norm

    convs = [Conv2d(channels, channels, 3, pad_mode="pad", padding=1, has_bias=True) for _ in range(layers)]
    net = nn.SequentialCell([spectral_norm(c) for c in convs] if kind == "spectral" else convs)
    use_conv_impl(net, rt.conv_impl)
    net.set_train()
    params = net.trainable_params()

    def loss(x):
        return net(x).sum()

    grad_fn = ms.value_and_grad(loss, None, params)

    class Step(nn.Cell):
        def __init__(self):
            super().__init__()
            self.net = net

        def construct(self, x):
            value, grads = grad_fn(x)
            for g in grads:
                value = value + g.sum()
            return value

    step = Step()
    x = Tensor(np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    for _ in range(2):
        step(x).asnumpy()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    param_gb = sum(p.size for p in params) * 4 / 2 ** 30
    print(f"{mode:8s} {kind:8s} {cpu_conv:6s}: parameters {param_gb:.2f} GB, the step adds {peak - before:.2f} GB "
          f"= {(peak - before) / param_gb:.1f} parameter copies", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--cpu_conv", choices=["native", "matmul", "winograd"], default="native",
                        help="convolution path (common/conv.py)")
    parser.add_argument("--case", choices=[f"{m}-{k}" for m, k in CASES], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        mode, kind = args.case.split("-")
        run_case(mode, kind, args.layers, args.channels, args.size, args.cpu_conv)
        return
    for mode, kind in CASES:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", f"{mode}-{kind}",
                              "--layers", str(args.layers), "--channels", str(args.channels),
                              "--size", str(args.size), "--cpu_conv", args.cpu_conv], capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if "parameter copies" in line]
        print(lines[-1] if lines else f"{mode} {kind}: failed\n{out.stderr[-800:]}")


if __name__ == "__main__":
    main()
