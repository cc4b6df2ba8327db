"""Memory a gradient step holds in MindSpore's CPU graphs: per parameter byte (spectral norm) or per activation
(normalisation layers).

    python bench/graph_memory.py [--stack spectral] [--layers 40] [--channels 512] [--size 8] [--cpu_conv native]
    python bench/graph_memory.py --stack norm [--layers 4] [--channels 256] [--size 128] [--cpu_conv winograd]

Each case runs in its own process: a stack of ``--layers`` 3x3 convolutions (``common.conv.Conv2d``,
``--channels`` in and out, each followed by the case's layer) on a [1, C, size, 2 * size] (norm) or
[1, C, size, size] (spectral) input, one ``value_and_grad`` of the output sum w.r.t. every weight, every
gradient consumed (so none is pruned). Printed: the resident memory the step adds,

* ``--stack spectral`` (graph and PyNative, plain vs spectral-normalised convolutions): in copies of the
  parameters (weights + biases, float32). A small ``--size`` makes the weights dominate, which is where
  CoCosNet's generator (96.7M spectral-normalised parameters, 1024 channels at 8x8-32x32) spends its memory;
* ``--stack norm`` (graph mode): in full-size activations ([1, C, size, 2 * size] float32) per layer beyond the
  convolutions alone, for instance and positional norm composed of mean/variance ops (autodiff) vs
  ``common.layers.Standardize`` (hand-written backward), and a per-channel scale by a broadcasting Mul vs
  ``common.layers.expand`` + a same-shape Mul.

``cocosnet/README.md`` Performance has the figures.
"""
import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACKS = {
    "spectral": ["graph-plain", "graph-spectral", "pynative-plain", "pynative-spectral"],
    "norm": ["graph-conv", "graph-instance_composed", "graph-instance", "graph-positional_composed",
             "graph-positional", "graph-scale_broadcast", "graph-scale_expand"],
}
DEFAULTS = {"spectral": dict(layers=40, channels=512, size=8, cpu_conv="native"),
            "norm": dict(layers=4, channels=256, size=128, cpu_conv="winograd")}


def norm_layer(kind, channels, size):
    """The layer that follows each convolution in ``--stack norm``."""
    import numpy as np
    from mindspore import Tensor, nn, ops
    from common.layers import InstanceNorm2d, Standardize, expand

    class Composed(nn.Cell):
        """(x - mean) / sqrt(var + eps) from mean/variance ops over ``axes``, differentiated by MindSpore."""

        def __init__(self, axes, divisor):
            super().__init__()
            self.axes, self.divisor = axes, divisor

        def construct(self, x):
            centred = x - x.mean(axis=self.axes, keep_dims=True)
            var = ops.square(centred).sum(axis=self.axes, keepdims=True) / self.divisor
            return centred / ops.sqrt(var + 1e-5)

    class Scale(nn.Cell):
        def __init__(self, explicit):
            super().__init__()
            self.scale = Tensor(np.linspace(0.5, 1.5, channels, dtype=np.float32).reshape(1, -1, 1, 1))
            self.explicit = explicit

        def construct(self, x):
            return x * (expand(self.scale, x) if self.explicit else self.scale)

    return {"instance_composed": lambda: Composed((2, 3), size * 2 * size), "instance": lambda: InstanceNorm2d(channels),
            "positional_composed": lambda: Composed((1,), channels - 1), "positional": lambda: Standardize((1,), ddof=1),
            "scale_broadcast": lambda: Scale(False), "scale_expand": lambda: Scale(True)}[kind]()


def run_case(stack, mode, kind, layers, channels, size, cpu_conv):
    """One case in this process; prints a line of figures."""
    sys.path.insert(0, REPO)
    from common.runtime import init_runtime, peak_memory_gb
    rt = init_runtime("CPU", mode, seed=0, cpu_conv=cpu_conv)
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor, nn
    from common.conv import Conv2d, use_conv_impl
    from common.spectral_norm import spectral_norm

    convs = [Conv2d(channels, channels, 3, pad_mode="pad", padding=1, has_bias=True) for _ in range(layers)]
    if stack == "spectral":
        cells = [spectral_norm(c) for c in convs] if kind == "spectral" else convs
        shape = (1, channels, size, size)
    else:
        cells = [cell for c in convs for cell in ((c,) if kind == "conv" else (c, norm_layer(kind, channels, size)))]
        shape = (1, channels, size, 2 * size)
    net = nn.SequentialCell(cells)
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
    x = Tensor(np.random.default_rng(0).random(shape, dtype=np.float32))
    before = peak_memory_gb()
    for _ in range(2):
        step(x).asnumpy()
    added = peak_memory_gb() - before
    if stack == "spectral":
        param_gb = sum(p.size for p in params) * 4 / 2 ** 30
        print(f"{mode:8s} {kind:8s} {cpu_conv:6s}: parameters {param_gb:.2f} GB, the step adds {added:.2f} GB "
              f"= {added / param_gb:.1f} parameter copies", flush=True)
    else:
        activation_gb = int(np.prod(shape)) * 4 / 2 ** 30
        print(f"{kind:20s}: the step adds {added:.2f} GB = {added / activation_gb:.1f} activations", flush=True)
        print(f"RESULT {added / activation_gb:.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=sorted(STACKS), default="spectral")
    parser.add_argument("--layers", type=int, help="convolutions in the stack (spectral: 40, norm: 4)")
    parser.add_argument("--channels", type=int, help="channels (spectral: 512, norm: 256)")
    parser.add_argument("--size", type=int, help="input height (spectral: 8, square; norm: 128, width twice)")
    parser.add_argument("--cpu_conv", choices=["native", "matmul", "winograd", "onednn", "mixed"],
                        help="convolution path (common/conv.py; spectral: native, norm: winograd)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    opts = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in DEFAULTS[args.stack].items()}
    if args.case:
        mode, kind = args.case.split("-")
        run_case(args.stack, mode, kind, **opts)
        return
    baseline = None
    for case in STACKS[args.stack]:
        cmd = [sys.executable, os.path.abspath(__file__), "--stack", args.stack, "--case", case]
        for key, value in opts.items():
            cmd += [f"--{key}", str(value)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if "the step adds" in line]
        if not lines:
            print(f"{case}: failed\n{out.stderr[-800:]}")
            continue
        result = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("RESULT")]
        if args.stack == "norm" and result:
            baseline = result[0] if baseline is None else baseline
            lines[-1] += f"; per layer beyond the convolutions: {(result[0] - baseline) / opts['layers']:.1f}"
        print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
