"""common.conv: the matmul path equals MindSpore's convolutions (values and gradients); runtime selection.

Values and gradients are compared with ``nn.Conv2d`` / ``nn.Conv2dTranspose`` on the same weights, in
PyNative mode (fast) and once through a compiled vjp graph, the way GANTrainStep differentiates G.
"""
import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import nn

from common.conv import Conv2d, ConvTranspose2d, conv_impl, set_conv_impl, set_native
from common.export import prepare_for_export
from common.runtime import cpu_has_avx512, select_cpu_conv


def _pair(native, matmul):
    matmul.weight.set_data(native.weight.data)
    if native.has_bias:
        matmul.bias.set_data(native.bias.data)
    return native, matmul


def _value_and_grads(net, x):
    def loss(x):
        return (net(x) ** 2).sum()
    _, (dx, dw) = ms.value_and_grad(loss, grad_position=0, weights=net.trainable_params())(x)
    return [net(x).asnumpy(), dx.asnumpy()] + [g.asnumpy() for g in dw]


def _assert_same(native, matmul, x):
    assert matmul.matmul
    expected, got = _value_and_grads(native, x), _value_and_grads(matmul, x)
    assert got[0].shape == expected[0].shape
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


CONV_CASES = [  # (C_in, C_out, kernel, stride, padding, size, batch, bias)
    (3, 8, 4, 2, 1, 16, 1, True),     # pix2pix encoder
    (8, 16, 4, 1, 1, 9, 2, False),    # PatchGAN last layers
    (5, 7, 4, 2, 1, 7, 2, True),      # odd size
    (4, 6, 3, 1, 1, 8, 1, False),
    (4, 6, 1, 1, 0, 5, 2, True),
    (4, 6, 3, 2, 1, 8, 1, True),      # ResNet-generator down-sampling
    (3, 4, 7, 1, 0, 12, 1, True),     # ResNet-generator stem (after reflect padding)
    (4, 6, (3, 5), (1, 2), 1, 9, 2, True),
]


DECONV_CASES = [  # (C_in, C_out, kernel, stride, padding, size, batch, bias)
    (8, 4, 4, 2, 1, 8, 1, True),                 # pix2pix decoder
    (6, 3, 4, 2, 1, 5, 2, False),
    (4, 4, 2, 2, 0, 6, 1, True),
    (4, 5, 3, 1, 1, 6, 2, True),
    (4, 5, 3, 2, 1, 4, 1, False),
    (4, 5, 3, 2, (1, 0, 1, 0), 4, 2, True),      # PyTorch output_padding=1 (ResNet generator)
]


PAIRS = {"conv": (nn.Conv2d, Conv2d), "deconv": (nn.Conv2dTranspose, ConvTranspose2d)}


@pytest.mark.parametrize("kind, cin, cout, k, s, p, size, batch, bias",
                         [("conv",) + c for c in CONV_CASES] + [("deconv",) + c for c in DECONV_CASES])
def test_matmul_path_equals_native(pynative, kind, cin, cout, k, s, p, size, batch, bias):
    native_cls, matmul_cls = PAIRS[kind]
    native, matmul = _pair(native_cls(cin, cout, k, s, pad_mode="pad", padding=p, has_bias=bias),
                           matmul_cls(cin, cout, k, s, pad_mode="pad", padding=p, has_bias=bias, impl="matmul"))
    x = ms.Tensor(np.random.default_rng(0).normal(size=(batch, cin, size, size)).astype(np.float32))
    _assert_same(native, matmul, x)


class _VJP(nn.Cell):
    """(x, dy) -> (dx, dW...) through ms.vjp in a compiled graph, as common.train.GANTrainStep does."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.weights = ms.ParameterTuple(net.trainable_params())

    def construct(self, x, dy):
        y, pullback = ms.vjp(self.net, x, weights=self.weights)
        dx, dw = pullback(dy)
        return (y, dx) + dw


def _flat(outputs):
    if isinstance(outputs, (tuple, list)):
        return [a for o in outputs for a in _flat(o)]
    return [outputs.asnumpy()]


def test_graph_mode_vjp_matches_native():
    net = nn.SequentialCell([Conv2d(3, 8, 4, 2, pad_mode="pad", padding=1, impl="matmul"), nn.ReLU(),
                             ConvTranspose2d(8, 3, 4, 2, pad_mode="pad", padding=1, impl="matmul")])
    rng = np.random.default_rng(2)
    x = ms.Tensor(rng.normal(size=(2, 3, 16, 16)).astype(np.float32))
    dy = ms.Tensor(rng.normal(size=(2, 3, 16, 16)).astype(np.float32))
    got = _flat(_VJP(net)(x, dy))
    assert set_native(net) == 2 and not net[0].matmul and not net[2].matmul
    expected = _flat(_VJP(net)(x, dy))
    assert len(got) == len(expected) == 4  # y, dx, two weight gradients
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


def test_same_parameters_as_native_cells():
    a = Conv2d(6, 64, 4, 2, pad_mode="pad", padding=1, has_bias=True, impl="matmul")
    b = nn.Conv2d(6, 64, 4, 2, pad_mode="pad", padding=1, has_bias=True)
    assert [(p.name, p.shape) for p in a.get_parameters()] == [(p.name, p.shape) for p in b.get_parameters()]
    a = ConvTranspose2d(128, 3, 4, 2, pad_mode="pad", padding=1, impl="matmul")
    b = nn.Conv2dTranspose(128, 3, 4, 2, pad_mode="pad", padding=1)
    assert [(p.name, p.shape) for p in a.get_parameters()] == [(p.name, p.shape) for p in b.get_parameters()]


def test_unsupported_configurations_stay_native():
    assert not Conv2d(4, 4, 3, pad_mode="same", impl="matmul").matmul
    assert not Conv2d(4, 4, 3, pad_mode="pad", padding=(1, 0, 1, 1), impl="matmul").matmul
    assert not Conv2d(4, 4, 3, pad_mode="pad", padding=2, dilation=2, impl="matmul").matmul
    assert not Conv2d(4, 4, 3, pad_mode="pad", padding=1, group=2, impl="matmul").matmul
    assert not ConvTranspose2d(4, 4, 4, 2, pad_mode="same", impl="matmul").matmul
    assert not Conv2d(4, 4, 3, pad_mode="pad", padding=1, impl="native").matmul


def test_default_impl_and_prepare_for_export():
    assert conv_impl() == "native"
    set_conv_impl("matmul")
    try:
        net = nn.SequentialCell([Conv2d(3, 4, 4, 2, pad_mode="pad", padding=1), nn.ReLU()])
        assert net[0].matmul
        prepare_for_export(net)
        assert not net[0].matmul
    finally:
        set_conv_impl("native")
    with pytest.raises(ValueError, match="conv_impl='fast'.*native"):
        set_conv_impl("fast")


@pytest.mark.parametrize("cpu_conv, device, user_isa, avx512, expected", [
    ("auto", "CPU", None, True, ("matmul", "AVX512_CORE")),
    ("auto", "CPU", None, False, ("native", "AVX2")),
    ("auto", "CPU", "AVX2", True, ("native", None)),           # the user's cap rules out AVX-512 matmuls
    ("auto", "CPU", "avx512_core", True, ("matmul", None)),
    ("native", "CPU", None, True, ("native", "AVX2")),
    ("matmul", "CPU", None, False, ("matmul", "AVX2")),
    ("matmul", "GPU", None, True, ("native", None)),
])
def test_select_cpu_conv(cpu_conv, device, user_isa, avx512, expected):
    assert select_cpu_conv(cpu_conv, device, user_isa, avx512) == expected


def test_select_cpu_conv_rejects_unknown_choice():
    with pytest.raises(ValueError, match="cpu_conv='gpu'.*auto"):
        select_cpu_conv("gpu", "CPU", None, True)


def test_cpu_has_avx512_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512dq\n")
    assert cpu_has_avx512(str(info))
    info.write_text("processor : 0\nflags : fpu sse avx2\n")
    assert not cpu_has_avx512(str(info))
    assert not cpu_has_avx512(str(tmp_path / "missing"))



@pytest.mark.parametrize("netG", ["unet_64", "resnet_6blocks"])
def test_pix2pix_train_step_same_on_both_paths(netG):
    """One compiled pix2pix D+G step: the matmul path gives the native path's losses and updated weights.

    SGD rather than the recipe's Adam: Adam's first update is lr * sign(gradient), which rounding can flip
    for near-zero gradients; SGD's update is proportional to the gradient it checks.
    """
    import os
    from common.config import load_config
    from pix2pix.src.train_step import Pix2PixTrainStep
    from pix2pix.src.utils import build_networks
    cfg = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pix2pix",
                                   "default_config.yaml"), netG=netG, ngf=8, ndf=8, crop_size=64, use_dropout=False)
    rng = np.random.default_rng(3)
    a, b = (ms.Tensor(rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)) for _ in range(2))
    runs = []
    for impl in ("native", "matmul"):
        set_conv_impl(impl)
        try:
            G, D = build_networks(cfg)
        finally:
            set_conv_impl("native")
        if runs:
            ms.load_param_into_net(G, runs[0][1])
            ms.load_param_into_net(D, runs[0][2])
        n_matmul = sum(isinstance(c, (Conv2d, ConvTranspose2d)) and c.matmul for _, c in G.cells_and_names())
        assert (n_matmul > 0) == (impl == "matmul")
        initial = ({p.name: p.clone() for p in G.get_parameters()}, {p.name: p.clone() for p in D.get_parameters()})
        opt_G, opt_D = (nn.SGD(net.trainable_params(), learning_rate=0.1) for net in (G, D))
        step = Pix2PixTrainStep(G, D, opt_G, opt_D, cfg.gan_mode, cfg.lambda_L1)
        step.set_train()
        losses = [float(v.asnumpy()) for v in step(a, b)]
        runs.append((losses, initial[0], initial[1], [p.asnumpy() for p in G.trainable_params() + D.trainable_params()]))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-4)
    for native, matmul in zip(runs[0][3], runs[1][3]):
        np.testing.assert_allclose(matmul, native, rtol=1e-4, atol=1e-5)
