"""common.conv: the matmul and Winograd paths equal MindSpore's convolutions (values and gradients);
use_conv_impl switches whole networks (VGG, LPIPS, InceptionV3, FCN-8s, pix2pix) with unchanged outputs, and
pack_weights keeps them; runtime selection.

Values and gradients are compared with ``nn.Conv2d`` / ``nn.Conv2dTranspose`` on the same weights, in
PyNative mode (fast) and once through a compiled vjp graph, the way GANTrainStep differentiates G.
"""
import ctypes
import copy
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import nn, ops

from common import cpu_kernels
from common.conv import (Col2Im, Conv2d, ConvTranspose2d, Im2Col, pack_weights, use_conv_impl, use_inference_conv_impl,
                         winograd_tile)
from common.export import prepare_for_export
from common.layers import AffineResample, AvgPool2d, LeakyReLU, NearestUpsample, PairwiseMeanAbs, Softmax
from common.winograd import winograd_matrices
from common.runtime import cpu_flags, cpu_has_avx512, select_cpu_conv, select_cpu_precision


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


def _assert_same(native, matmul, x, tol=1e-4, impl="matmul", keep_transforms=False):
    assert use_conv_impl(matmul, impl, keep_transforms=keep_transforms) == 1
    expected, got = _value_and_grads(native, x), _value_and_grads(matmul, x)
    assert got[0].shape == expected[0].shape
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol * np.abs(e).max())


CONV_CASES = [  # (C_in, C_out, kernel, stride, options, size, batch, tolerance)
    (3, 8, 4, 2, dict(padding=1, has_bias=True), 16, 1, 1e-4),          # pix2pix encoder
    (8, 16, 4, 1, dict(padding=1), 9, 2, 1e-4),                         # PatchGAN last layers
    (5, 7, 4, 2, dict(padding=1, has_bias=True), 7, 2, 1e-4),           # odd size
    (4, 6, 3, 1, dict(padding=1), 8, 1, 1e-4),
    (4, 6, 1, 1, dict(padding=0, has_bias=True), 5, 2, 1e-4),
    (4, 6, 3, 2, dict(padding=1, has_bias=True), 8, 1, 1e-4),           # ResNet-generator down-sampling
    (3, 4, 7, 1, dict(padding=0, has_bias=True), 12, 1, 1e-4),          # ResNet-generator stem (after reflect pad)
    (4, 6, (3, 5), (1, 2), dict(padding=1, has_bias=True), 9, 2, 1e-4),
    (4, 6, (1, 7), 1, dict(padding=(0, 0, 3, 3)), 9, 2, 1e-4),          # InceptionV3 Mixed_6 1x7
    (4, 6, (7, 1), 1, dict(padding=(3, 3, 0, 0)), 9, 2, 1e-4),          # InceptionV3 Mixed_6 7x1
    (4, 6, (1, 3), 1, dict(padding=(0, 0, 1, 1)), 7, 1, 1e-4),          # InceptionV3 Mixed_7 1x3
    (4, 6, 3, 2, dict(pad_mode="valid"), 11, 2, 1e-4),                  # InceptionV3 stem
    (3, 8, 11, 4, dict(padding=2, has_bias=True), 31, 2, 1e-4),         # AlexNet conv1
    (3, 4, 3, 1, dict(padding=100, has_bias=True), 5, 1, 1e-3),         # FCN-8s conv1_1 (bias grad sums 4e4 terms)
    (4, 6, 7, 1, dict(pad_mode="valid", has_bias=True), 9, 2, 1e-4),    # FCN-8s fc6
    (4, 6, 3, 1, dict(padding=(1, 0, 2, 1)), 9, 2, 1e-4),               # unequal sides: padded, then unfolded
    (4, 6, 3, 1, dict(pad_mode="same"), 9, 2, 1e-4),                    # CRN 3x3
    (4, 6, 4, 2, dict(pad_mode="same"), 9, 2, 1e-4),                    # same, uneven split
    (4, 6, 3, 1, dict(padding=2, dilation=2), 9, 2, 1e-4),
    (4, 6, 3, 1, dict(padding=1, group=2, has_bias=True), 9, 2, 1e-4),
]


DECONV_CASES = [  # (C_in, C_out, kernel, stride, options, size, batch, tolerance)
    (8, 4, 4, 2, dict(padding=1, has_bias=True), 8, 1, 1e-4),          # pix2pix decoder
    (6, 3, 4, 2, dict(padding=1), 5, 2, 1e-4),
    (4, 4, 2, 2, dict(padding=0, has_bias=True), 6, 1, 1e-4),
    (4, 5, 3, 1, dict(padding=1, has_bias=True), 6, 2, 1e-4),
    (4, 5, 3, 2, dict(padding=1), 4, 1, 1e-4),
    (4, 5, 3, 2, dict(padding=(1, 0, 1, 0), has_bias=True), 4, 2, 1e-4),  # PyTorch output_padding=1
    (5, 5, 4, 2, dict(pad_mode="valid"), 5, 2, 1e-4),                   # FCN-8s upscore2
    (5, 5, 16, 8, dict(pad_mode="valid"), 3, 1, 1e-4),                  # FCN-8s upscore8
    (4, 3, 3, 2, dict(pad_mode="same"), 5, 2, 1e-4),
    (4, 3, 4, 2, dict(pad_mode="same", has_bias=True), 5, 2, 1e-4),
    (4, 3, 3, 1, dict(padding=2, dilation=2), 5, 2, 1e-4),
]


PAIRS = {"conv": (nn.Conv2d, Conv2d), "deconv": (nn.Conv2dTranspose, ConvTranspose2d)}


@pytest.mark.parametrize("kind, cin, cout, k, s, options, size, batch, tol",
                         [("conv",) + c for c in CONV_CASES] + [("deconv",) + c for c in DECONV_CASES])
def test_matmul_path_equals_native(pynative, kind, cin, cout, k, s, options, size, batch, tol):
    native_cls, matmul_cls = PAIRS[kind]
    options = dict({"pad_mode": "pad"}, **options)
    native, matmul = _pair(native_cls(cin, cout, k, s, **options), matmul_cls(cin, cout, k, s, **options))
    x = ms.Tensor(np.random.default_rng(0).normal(size=(batch, cin, size, size + 1)).astype(np.float32))
    _assert_same(native, matmul, x, tol)


COLUMN_CASES = [  # (batch, C, H, W, kernel, dilation, padding, stride)
    (2, 3, 7, 9, (4, 4), (1, 1), (1, 1), (2, 2)),    # pix2pix's 4x4 stride 2, odd sides
    (1, 5, 8, 6, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 4, 9, 7, (3, 2), (2, 1), (2, 0), (2, 1)),    # unequal kernel, dilation, padding and stride
    (1, 3, 5, 5, (7, 7), (1, 1), (3, 3), (1, 1)),
    (1, 2, 24, 24, (16, 16), (1, 1), (0, 0), (8, 8)),  # FCN-8s upscore8's Col2Im
    (2, 3, 6, 5, (4, 4), (1, 1), (3, 1), (2, 2)),    # padding larger than some taps' reach
    (1, 4, 10, 14, (6, 6), (1, 1), (1, 1), (4, 4)),  # Winograd F(4x4) input tiles
]


@pytest.fixture
def compiled_kernels():
    path = cpu_kernels.library()
    if path is None:
        pytest.skip(cpu_kernels.status())
    return path


@pytest.mark.parametrize("kind, cin, cout, k, s, options, size, batch, tol",
                         [("conv",) + c for c in CONV_CASES] + [("deconv",) + c for c in DECONV_CASES])
def test_onednn_path_equals_native(pynative, compiled_kernels, kind, cin, cout, k, s, options, size, batch, tol):
    """oneDNN's own convolution kernels (``common/kernels/onednn_conv.cc``): values and both gradients of every
    geometry above, transposed and grouped ones included; ``same`` with a stride (padding known per input
    only) takes the matmul form instead."""
    native_cls, onednn_cls = PAIRS[kind]
    options = dict({"pad_mode": "pad"}, **options)
    native, onednn = _pair(native_cls(cin, cout, k, s, **options), onednn_cls(cin, cout, k, s, **options))
    x = ms.Tensor(np.random.default_rng(0).normal(size=(batch, cin, size, size + 1)).astype(np.float32))
    _assert_same(native, onednn, x, tol, impl="onednn")
    assert onednn.onednn != onednn.matmul and onednn.onednn == onednn.has_onednn_form
    assert onednn.has_onednn_form == (options["pad_mode"] != "same" or s == 1 or kind == "deconv")


def test_onednn_in_compiled_vjp_equals_native(compiled_kernels):
    """The oneDNN path through a compiled vjp (the train steps' form): a strided, a grouped, a 1x1 and a
    transposed layer with unequal crops, batch 2."""
    def build():
        return nn.SequentialCell([Conv2d(3, 8, 4, 2, pad_mode="pad", padding=1, has_bias=True), nn.ReLU(),
                                  Conv2d(8, 8, 3, 1, pad_mode="pad", padding=(1, 0, 2, 1), group=2), nn.ReLU(),
                                  Conv2d(8, 6, 1, has_bias=True),
                                  ConvTranspose2d(6, 3, 4, 2, pad_mode="pad", padding=(1, 0, 1, 0), has_bias=True)])
    native, onednn = build(), build()
    ms.load_param_into_net(onednn, {p.name: p for p in native.get_parameters()})
    rng = np.random.default_rng(5)
    x = ms.Tensor(rng.normal(size=(2, 3, 17, 16)).astype(np.float32))
    assert use_conv_impl(onednn, "onednn") == 4
    assert all(onednn[i].onednn for i in (0, 2, 4, 5))
    y = onednn(x)
    dy = ms.Tensor(rng.normal(size=y.shape).astype(np.float32))
    got, expected = _flat(_VJP(onednn)(x, dy)), _flat(_VJP(native)(x, dy))
    assert len(got) == len(expected) == 9  # y, dx, four weights, three biases
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


class _Counted(nn.Cell):
    """``cell`` counting its calls (PyNative: construct runs in Python each call)."""

    def __init__(self, cell):
        super().__init__()
        self.cell, self.calls = cell, 0

    def construct(self, *args):
        self.calls += 1
        return self.cell(*args)


class _MixedNet(nn.Cell):
    """Each layer on a geometry that :func:`common.conv.onednn_is_faster` sends one way: a 4x4 stride-2 layer at
    16x16 outputs (oneDNN) and at 8x8 (Im2Col + MatMul), a 3x3 layer Winograd takes, a 4x4 layer to one channel
    (oneDNN), a 1x1 layer (one MatMul) and a transposed layer (MatMul + Col2Im)."""

    def __init__(self):
        super().__init__()
        self.down = Conv2d(16, 32, 4, 2, pad_mode="pad", padding=1, has_bias=True)
        self.small = Conv2d(16, 32, 4, 2, pad_mode="pad", padding=1, has_bias=True)
        self.wino = Conv2d(32, 16, 3, 1, pad_mode="pad", padding=1)
        self.to_one = Conv2d(16, 1, 4, 1, pad_mode="pad", padding=1)
        self.point = Conv2d(16, 8, 1, has_bias=True)
        self.up = ConvTranspose2d(8, 4, 4, 2, pad_mode="pad", padding=1, has_bias=True)

    def construct(self, x):
        big = self.wino(self.down(x))                                         # [B, 16, 16, 16]
        small = self.small(big)                                               # [B, 32, 8, 8]
        y = self.up(self.point(big)).sum() + self.to_one(big).sum() + (small ** 2).sum()
        return y.reshape(1, 1, 1, 1)


def test_mixed_path_runs_each_layer_where_onednn_is_faster(pynative, compiled_kernels):
    """``mixed``: every Conv2d call takes oneDNN's kernels or the winograd path as onednn_is_faster says for its
    geometry (counted calls), transposed layers stay MatMul + Col2Im, values and both gradients equal native;
    pack_weights leaves the per-call layers 4-D (oneDNN takes the 4-D weight) and packs the others."""
    native, mixed = _MixedNet(), _MixedNet()
    use_conv_impl(native, "native")
    ms.load_param_into_net(mixed, {p.name: p for p in native.get_parameters()})
    assert use_conv_impl(mixed, "mixed") == 6
    assert [cell.mixed for cell in (mixed.down, mixed.small, mixed.wino, mixed.to_one, mixed.point, mixed.up)] == \
        [True] * 5 + [False]
    spied = {}
    for layer, name in (("down", "onednn_conv_bias"), ("small", "onednn_conv_bias"), ("small", "im2col_matmul"),
                        ("wino", "winograd_f2"), ("wino", "onednn_conv"), ("to_one", "onednn_conv")):
        cell = getattr(mixed, layer)
        spied[layer, name] = _Counted(getattr(cell, name))
        setattr(cell, name, spied[layer, name])
    x = ms.Tensor(np.random.default_rng(3).normal(size=(1, 16, 32, 32)).astype(np.float32))
    expected, got = _value_and_grads(native, x), _value_and_grads(mixed, x)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())
    ran = {key for key, spy in spied.items() if spy.calls}
    assert ran == {("down", "onednn_conv_bias"), ("small", "im2col_matmul"), ("wino", "winograd_f2"),
                   ("to_one", "onednn_conv")}  # 16x16 outputs: F(2x2)
    assert pack_weights(mixed) == 1 and mixed.up.packed and not mixed.down.packed and mixed.down.weight.ndim == 4


def test_forward_only_networks_take_winograd_for_mixed(compiled_kernels):
    """use_inference_conv_impl: ``mixed`` (a rule measured on training steps) becomes ``winograd`` for a network that
    only runs forwards, every cell as winograd sets it, and the matmul-path weights are packed."""
    net, ref = _MixedNet(), _MixedNet()
    use_conv_impl(ref, "winograd")
    assert use_inference_conv_impl(net, "mixed") == pack_weights(ref) == 4  # down, small, point, up
    flags = [(c.matmul, c.winograd, c.onednn, c.mixed, c.packed) for c in (net.down, net.small, net.wino, net.to_one,
                                                                          net.point, net.up)]
    assert flags == [(c.matmul, c.winograd, c.onednn, c.mixed, c.packed) for c in (ref.down, ref.small, ref.wino,
                                                                                 ref.to_one, ref.point, ref.up)]
    assert not any(f[3] for f in flags)


class _Weighted(nn.Cell):
    """``sum(cell(x, *args) * weights)``: a loss whose gradient w.r.t. x is the cell's adjoint applied to weights."""

    def __init__(self, cell, weights, *args):
        super().__init__()
        self.cell, self.weights, self.args = cell, weights, args

    def construct(self, x):
        return (self.cell(x, *self.args) * self.weights).sum()


@pytest.mark.parametrize("mode, tap_major", [("pynative", False), ("graph", False), ("graph", True)])
@pytest.mark.parametrize("b, c, h, w, kernel, dilation, padding, stride", COLUMN_CASES)
def test_compiled_im2col_and_col2im_equal_mindspore(compiled_kernels, mode, tap_major, b, c, h, w, kernel, dilation,
                                                    padding, stride):
    """The compiled kernels (common/kernels/im2col.cc) against ops.unfold / ops.fold (tap-major rows: with a row
    Gather), values and gradients: each one's gradient is the other."""
    ms.set_context(mode=ms.PYNATIVE_MODE if mode == "pynative" else ms.GRAPH_MODE)
    try:
        geometry = (kernel, dilation, padding, stride)
        order = dict(tap_major=tap_major, channels=c)
        ours_in, ref_in = Im2Col(*geometry, **order), Im2Col(*geometry, **order)
        ours_out, ref_out = Col2Im(*geometry, **order), Col2Im(*geometry, **order)
        for cell in (ours_in, ours_out):
            cell.use_library(compiled_kernels)
        rng = np.random.default_rng(h * w)
        x = ms.Tensor(rng.normal(size=(b, c, h, w)).astype(np.float32))
        cols = ref_in(x)
        r = ms.Tensor(rng.normal(size=cols.shape).astype(np.float32))
        s = ms.Tensor(rng.normal(size=x.shape).astype(np.float32))
        np.testing.assert_array_equal(ours_in(x).asnumpy(), cols.asnumpy())
        if tap_major:  # row t*C + c of the tap-major matrix is row c*taps + t of ops.unfold's
            taps = kernel[0] * kernel[1]
            unfolded = ops.unfold(x, kernel, dilation, padding, stride).asnumpy()
            np.testing.assert_array_equal(cols.asnumpy().reshape(b, taps, c, -1),
                                          unfolded.reshape(b, c, taps, -1).transpose(0, 2, 1, 3))
        np.testing.assert_allclose(ours_out(r, (h, w)).asnumpy(), ref_out(r, (h, w)).asnumpy(), rtol=1e-6, atol=1e-5)
        for im2col, col2im in ((ours_in, ours_out), (ref_in, ref_out)):
            assert (im2col.custom is None) == (im2col is ref_in)
        grads = [ms.grad(_Weighted(f, r))(x).asnumpy() for f in (ours_in, ref_in)]
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6, atol=1e-5)
        grads = [ms.grad(_Weighted(f, s, (h, w)))(r).asnumpy() for f in (ours_out, ref_out)]
        np.testing.assert_array_equal(grads[0], grads[1])
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_use_conv_impl_gives_the_convolutions_the_compiled_kernels(compiled_kernels):
    net = nn.SequentialCell([Conv2d(3, 8, 4, 2, pad_mode="pad", padding=1), Conv2d(8, 8, 3, pad_mode="pad", padding=1),
                             ConvTranspose2d(8, 3, 4, 2, pad_mode="pad", padding=1)])
    columns = [cell for _, cell in net.cells_and_names() if isinstance(cell, (Im2Col, Col2Im))]
    assert len(columns) == 2 + (2 + 2 * 4) + 1 and all(cell.custom is None for cell in columns)
    use_conv_impl(net, "winograd")
    assert all(cell.library == compiled_kernels and cell.custom is not None for cell in columns)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("slope", [0.2, 0.0])
def test_compiled_leaky_relu_equals_numpy(compiled_kernels, mode, slope):
    """common/kernels/activations.cc: max(x, slope * x) and its gradient, slope * dy at x = 0 (as PyTorch); the
    MindSpore formula it replaces agrees away from 0."""
    ms.set_context(mode=ms.PYNATIVE_MODE if mode == "pynative" else ms.GRAPH_MODE)
    try:
        rng = np.random.default_rng(7)
        x = rng.normal(size=(2, 3, 5, 7)).astype(np.float32)
        x[0, 1, 2] = 0.0  # a row of exact zeros
        dy = rng.normal(size=x.shape).astype(np.float32)
        ours, formula = LeakyReLU(slope), LeakyReLU(slope)
        ours.use_library(compiled_kernels)
        assert ours.custom is not None and formula.custom is None
        y = ours(ms.Tensor(x)).asnumpy()
        np.testing.assert_array_equal(y, np.where(x > 0, x, np.float32(slope) * x))
        dx = ms.grad(_Weighted(ours, ms.Tensor(dy)))(ms.Tensor(x)).asnumpy()
        np.testing.assert_array_equal(dx, np.where(x > 0, dy, np.float32(slope) * dy))
        np.testing.assert_array_equal(formula(ms.Tensor(x)).asnumpy(), y)
        reference = ms.grad(_Weighted(formula, ms.Tensor(dy)))(ms.Tensor(x)).asnumpy()
        nonzero = x != 0
        np.testing.assert_allclose(dx[nonzero], reference[nonzero], rtol=1e-6)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("shape", [(2, 3, 70), (1, 5, 4096), (9, 1)])
def test_compiled_softmax_gradient_equals_numpy(compiled_kernels, mode, shape):
    """common/kernels/activations.cc's SoftmaxGrad, the backward of common.layers.Softmax with the library: against
    the float64 Jacobian-vector product ``y * (dy - sum(dy * y))`` per row (row lengths below, at and above the
    kernel's 8 partial sums, one of length 1), and against the cell's MindSpore-operator backward."""
    ms.set_context(mode=ms.PYNATIVE_MODE if mode == "pynative" else ms.GRAPH_MODE)
    try:
        rng = np.random.default_rng(11)
        x = (rng.standard_normal(shape) * 4).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        compiled, formula = Softmax(), Softmax()
        compiled.use_library(compiled_kernels)
        assert compiled.custom is not None and formula.custom is None
        y = compiled(ms.Tensor(x)).asnumpy()
        np.testing.assert_array_equal(y, formula(ms.Tensor(x)).asnumpy())  # the forward is MindSpore's either way
        dx = ms.grad(_Weighted(compiled, ms.Tensor(dy)))(ms.Tensor(x)).asnumpy()
        y64 = y.astype(np.float64)
        want = y64 * (dy - (dy * y64).sum(axis=-1, keepdims=True))
        np.testing.assert_allclose(dx, want, rtol=1e-5, atol=1e-7 * np.abs(want).max())
        reference = ms.grad(_Weighted(formula, ms.Tensor(dy)))(ms.Tensor(x)).asnumpy()
        np.testing.assert_allclose(dx, reference, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("factor", [2, (3, 2)])
def test_nearest_upsample_equals_numpy(compiled_kernels, mode, factor):
    """common/kernels/resize.cc and the MindSpore form it replaces: each value repeated into an fh x fw block
    (numpy's repeat), the gradient each block's sum."""
    ms.set_context(mode=ms.PYNATIVE_MODE if mode == "pynative" else ms.GRAPH_MODE)
    try:
        fh, fw = (factor, factor) if isinstance(factor, int) else factor
        rng = np.random.default_rng(8)
        x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
        dy = rng.normal(size=(2, 3, 4 * fh, 5 * fw)).astype(np.float32)
        expected_dx = dy.reshape(2, 3, 4, fh, 5, fw).astype(np.float64).sum(axis=(3, 5))
        compiled, formula = NearestUpsample(factor), NearestUpsample(factor)
        compiled.use_library(compiled_kernels)
        assert compiled.custom is not None and formula.custom is None
        for up in (compiled, formula):
            np.testing.assert_array_equal(up(ms.Tensor(x)).asnumpy(), x.repeat(fh, axis=2).repeat(fw, axis=3))
            dx = ms.grad(_Weighted(up, ms.Tensor(dy)))(ms.Tensor(x)).asnumpy()
            np.testing.assert_allclose(dx, expected_dx, rtol=1e-6, atol=1e-6)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("factor, size", [(2, (6, 8)), (2, (7, 5)), (3, (8, 9))])
def test_avg_pool_equals_numpy(compiled_kernels, mode, factor, size):
    """The compiled block mean (``common/kernels/resize.cc``) and ``nn.AvgPool2d(f, f)``: each whole f x f block's
    mean, rows and columns past the last whole block left out (odd sizes); the gradient each output's gradient
    over f * f spread over its block, zero past them."""
    ms.set_context(mode=ms.PYNATIVE_MODE if mode == "pynative" else ms.GRAPH_MODE)
    try:
        h, w = size
        oh, ow = h // factor, w // factor
        rng = np.random.default_rng(9)
        x = rng.normal(size=(2, 3, h, w)).astype(np.float32)
        dy = rng.normal(size=(2, 3, oh, ow)).astype(np.float32)
        blocks = x[:, :, :oh * factor, :ow * factor].astype(np.float64).reshape(2, 3, oh, factor, ow, factor)
        expected_dx = np.zeros(x.shape)
        expected_dx[:, :, :oh * factor, :ow * factor] = np.kron(dy, np.ones((factor, factor))) / factor ** 2
        compiled, operators = AvgPool2d(factor), AvgPool2d(factor)
        compiled.use_library(compiled_kernels)
        assert compiled.custom is not None and operators.custom is None
        for pool in (compiled, operators):
            np.testing.assert_allclose(pool(ms.Tensor(x)).asnumpy(), blocks.mean(axis=(3, 5)), rtol=1e-6, atol=1e-6)
            dx = ms.grad(_Weighted(pool, ms.Tensor(dy)))(ms.Tensor(x)).asnumpy()
            np.testing.assert_allclose(dx, expected_dx, rtol=1e-6, atol=1e-6)
        dx = np.full(x.shape, np.nan, np.float32)  # the kernel itself writes every value (pool memory is reused)
        assert _call_kernel(compiled_kernels, "AvgPoolGrad", dy, np.array([factor] * 2, np.int64),
                            np.zeros(size, np.uint8), dx) == 0
        np.testing.assert_allclose(dx, expected_dx, rtol=1e-6, atol=1e-6)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def _call_kernel(path, name, *arrays):
    """Run the aot kernel ``name`` of the library at ``path`` on C-contiguous numpy ``arrays`` (inputs, then
    outputs, written in place), as MindSpore calls it; returns its status."""
    ptr = ctypes.POINTER
    types = {np.dtype(np.float32): b"float32", np.dtype(np.int64): b"int64", np.dtype(np.uint8): b"uint8"}
    shapes = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in arrays]
    fn = getattr(ctypes.CDLL(path), name)
    fn.restype = ctypes.c_int
    return fn(len(arrays), (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays]),
              (ctypes.c_int * len(arrays))(*[a.ndim for a in arrays]),
              (ptr(ctypes.c_int64) * len(arrays))(*[ctypes.cast(s, ptr(ctypes.c_int64)) for s in shapes]),
              (ctypes.c_char_p * len(arrays))(*[types[a.dtype] for a in arrays]), None, None)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_affine_resample_equals_torch_grid_sample(compiled_kernels, mode):
    """common/kernels/grid_sample.cc and the MindSpore form it replaces against PyTorch's affine_grid + grid_sample
    (bilinear, reflection, align_corners=False): values and input gradients for an identity, a flip with a
    rotation and a shift past the border (reflected), and a zoom; the identity returns the input."""
    torch = pytest.importorskip("torch")
    ms.set_context(mode=ms.PYNATIVE_MODE if mode == "pynative" else ms.GRAPH_MODE)
    try:
        rng = np.random.default_rng(9)
        x = rng.normal(size=(3, 2, 7, 9)).astype(np.float32)
        dy = rng.normal(size=x.shape).astype(np.float32)
        theta = np.array([[[1, 0, 0], [0, 1, 0]], [[-1.1, 0.2, 0.5], [0.1, 0.9, -0.7]], [[0.5, 0, 0.9], [0, 0.5, -0.3]]],
                         np.float32)
        tx = torch.tensor(x, requires_grad=True)
        grid = torch.nn.functional.affine_grid(torch.tensor(theta), list(x.shape), align_corners=False)
        want = torch.nn.functional.grid_sample(tx, grid, "bilinear", "reflection", align_corners=False)
        want.backward(torch.tensor(dy))
        compiled, formula = AffineResample(), AffineResample()
        compiled.use_library(compiled_kernels)
        assert compiled.custom is not None and formula.custom is None
        for cell in (compiled, formula):
            y = cell(ms.Tensor(x), ms.Tensor(theta)).asnumpy()
            np.testing.assert_allclose(y, want.detach().numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(y[0], x[0], rtol=0, atol=1e-5)
            dx = ms.grad(_Weighted(cell, ms.Tensor(dy), ms.Tensor(theta)))(ms.Tensor(x)).asnumpy()
            np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
        # a float16 x (a mixed-precision generator's output, OSMIS's augmentation): sampled in float32 on the float32
        # grid (GridSampler2D takes one dtype), returned as float16
        y16 = formula(ms.Tensor(x.astype(np.float16)), ms.Tensor(theta))
        assert y16.dtype == ms.float16
        np.testing.assert_allclose(y16.asnumpy(), want.detach().numpy(), rtol=2e-3, atol=5e-3)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_use_conv_impl_gives_leaky_relu_the_compiled_kernels_and_export_takes_them_back(compiled_kernels):
    """On CPU every convolution path (native included) runs LeakyReLU compiled; an exported graph holds only
    MindSpore's operators, and a compiled graph refuses the switch."""
    act, up = LeakyReLU(0.2), NearestUpsample(2)
    net = nn.SequentialCell([Conv2d(3, 4, 3, pad_mode="pad", padding=1), act, up])
    use_conv_impl(net, "native")
    assert act.library == up.library == compiled_kernels and act.custom is not None and up.custom is not None
    use_conv_impl(net, "native", compiled_kernels=False)
    assert act.library is None and act.custom is None and up.custom is None
    use_conv_impl(net, "matmul")
    assert act.custom is not None and up.custom is not None
    prepare_for_export(net)
    assert act.custom is None and up.custom is None
    net(ms.Tensor(np.ones((1, 3, 6, 6), np.float32)))
    with pytest.raises(RuntimeError, match="already ran as a compiled graph"):
        use_conv_impl(net, "native")


def test_use_compiled_kernels_reaches_the_cells_of_a_loss(compiled_kernels):
    """A train step's loss cells (outside the networks use_conv_impl switches) get the compiled kernels too."""
    from common.conv import use_compiled_kernels
    warp, pairs = AffineResample(), PairwiseMeanAbs(3)
    step = nn.CellList([nn.CellList([warp]), pairs])
    use_compiled_kernels(step)
    assert warp.library == pairs.library == compiled_kernels and warp.custom is not None and pairs.custom is not None


@pytest.fixture
def fresh_kernel_build(monkeypatch, tmp_path):
    """cpu_kernels' build decision made again under the test's environment (and again after it)."""
    monkeypatch.setenv("SYNTHZOO_CACHE", str(tmp_path / "cache"))
    cpu_kernels._build.cache_clear()
    yield monkeypatch
    cpu_kernels._build.cache_clear()


@pytest.mark.parametrize("env, reason", [
    ({"SYNTHZOO_CPU_KERNELS": "0"}, r"MindSpore's own \(SYNTHZOO_CPU_KERNELS=0\)"),
    ({"CXX": "/bin/false"}, r"MindSpore's own \(/bin/false failed on .*im2col.cc"),
    ({"MS_CUSTOM_AOT_WHITE_LIST": "/nonexistent"}, r"MS_CUSTOM_AOT_WHITE_LIST=/nonexistent does not hold .*kernels"),
])
def test_cpu_kernels_fall_back_and_say_why(fresh_kernel_build, env, reason):
    for key, value in env.items():
        fresh_kernel_build.setenv(key, value)
    assert cpu_kernels.library() is None
    assert re.search(reason, cpu_kernels.status()), cpu_kernels.status()


def test_cpu_kernels_without_a_compiler(fresh_kernel_build):
    fresh_kernel_build.delenv("CXX", raising=False)
    fresh_kernel_build.setenv("PATH", "/nonexistent")
    assert cpu_kernels.library() is None and cpu_kernels.status().endswith("(no C++ compiler (install g++))")


def test_cpu_kernels_build_portable_where_the_compiler_refuses_march_native(fresh_kernel_build, tmp_path):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    picky = tmp_path / "picky-c++"
    picky.write_text(f'#!/bin/sh\ncase "$*" in *-march=native*) echo "error: unknown -march" >&2; exit 1;; esac\n'
                     f'exec {compiler} "$@"\n')
    picky.chmod(0o755)
    fresh_kernel_build.setenv("CXX", str(picky))
    path = cpu_kernels.library()
    assert path and os.path.isfile(path)
    assert re.search(r"compiled kernels .* \(portable: -march=native failed: error: unknown -march\)$",
                     cpu_kernels.status()), cpu_kernels.status()
    cpu_kernels._build.cache_clear()
    assert cpu_kernels.library() == path  # found in the cache: no second attempt at the tuned build


def test_cpu_kernels_compile_once_into_the_cache(fresh_kernel_build, tmp_path):
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler")
    path = cpu_kernels.library()
    assert path and os.path.dirname(path) == str(tmp_path / "cache" / "kernels") and os.path.isfile(path)
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temporary file left
    cpu_kernels._build.cache_clear()
    fresh_kernel_build.setenv("CXX", "/bin/false")  # a cached library needs no compiler
    assert cpu_kernels.library() == path


@pytest.mark.parametrize("tile, kernel", [(2, 3), (4, 3), (3, 4), (6, 3)])
def test_winograd_matrices_compute_the_valid_correlation(tile, kernel):
    """K_out ((K_w g) * (K_in d)) of F(m x m, r x r) equals the m x m valid correlation of an (m + r - 1)^2 tile
    with an r x r kernel, written out as loops (float64)."""
    k_in, k_w, k_out = winograd_matrices(tile, kernel)
    a = tile + kernel - 1
    assert k_in.shape == (a * a, a * a) and k_w.shape == (a * a, kernel ** 2) and k_out.shape == (tile ** 2, a * a)
    rng = np.random.default_rng(tile)
    d, g = rng.normal(size=(a, a)), rng.normal(size=(kernel, kernel))
    expected = np.array([[sum(d[i + u, j + v] * g[u, v] for u in range(kernel) for v in range(kernel))
                          for j in range(tile)] for i in range(tile)])
    got = (k_out @ ((k_w @ g.ravel()) * (k_in @ d.ravel()))).reshape(tile, tile)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tile, kernel", [(4, 4), (1, 3), (5, 3), (7, 3)])
def test_winograd_matrices_refuse_other_tiles(tile, kernel):
    with pytest.raises(ValueError, match=f"F\\({tile}x{tile}, {kernel}x{kernel}\\) is not supported"):
        winograd_matrices(tile, kernel)


@pytest.mark.parametrize("batch, cin, out_h, out_w, expected", [
    (1, 64, 32, 32, 4), (1, 64, 64, 128, 4), (5, 64, 16, 16, 4),  # >= 1024 output pixels per call
    (1, 1024, 16, 32, 2), (1, 64, 30, 30, 2),                      # fewer, or sides not multiples of 4
    (1, 1024, 4, 8, 0), (1, 8, 128, 128, 0), (1, 64, 33, 32, 0),   # tiny map, few channels, odd side
])
def test_winograd_tile_rule(batch, cin, out_h, out_w, expected):
    assert winograd_tile(batch, cin, out_h, out_w) == expected
    assert winograd_tile(batch, cin, out_h, out_w, largest=2) == (expected if expected != 4 else 2)


@pytest.mark.parametrize("batch, cin, out_h, out_w, expected", [
    (1, 256, 31, 31, 3), (2, 64, 16, 17, 3),       # PatchGAN's 4x4 stride-1 layer; any side (whole tiles)
    (1, 256, 15, 15, 0), (1, 8, 64, 64, 0),        # under 512 output pixels per call, few channels
])
def test_winograd_tile_rule_for_4x4_kernels(batch, cin, out_h, out_w, expected):
    assert winograd_tile(batch, cin, out_h, out_w, kernel=4) == expected
    assert winograd_tile(batch, cin, out_h, out_w, largest=2, kernel=4) == 0  # bf16 MatMuls: direct


def test_bf16_matmuls_cap_the_winograd_tile_at_two(monkeypatch):
    conv = Conv2d(16, 8, 3, pad_mode="pad", padding=1)
    use_conv_impl(conv, "winograd")
    assert conv.largest_tile == 4
    monkeypatch.setenv("ONEDNN_DEFAULT_FPMATH_MODE", "bf16")  # read by use_conv_impl only; no kernel runs here
    use_conv_impl(conv, "winograd")
    assert conv.largest_tile == 2


WINOGRAD_CASES = [  # (C_in, C_out, options, batch, H, W, expected tile): every tile, padding form and batch
    (16, 8, dict(kernel_size=4, padding=1, has_bias=True), 1, 32, 32, 3),  # 31x31 output: last tiles cropped
    (16, 8, dict(kernel_size=4, padding=(2, 1, 0, 1)), 2, 20, 25, 3),      # unequal sides, odd output 20x23
    (16, 8, dict(padding=1, has_bias=True), 1, 32, 36, 4),
    (16, 8, dict(padding=1, has_bias=True), 2, 12, 20, 2),
    (16, 8, dict(pad_mode="same"), 3, 16, 24, 4),
    (16, 8, dict(pad_mode="valid", has_bias=True), 1, 34, 34, 4),
    (16, 8, dict(padding=(1, 1, 2, 0)), 2, 16, 18, 2),  # unequal sides: padded, then transformed
    (16, 8, dict(padding=1), 2, 9, 12, 0),               # odd side: Im2Col + MatMul
]


@pytest.mark.parametrize("kernels", ["compiled", "mindspore"])
@pytest.mark.parametrize("keep_transforms", [False, True])
@pytest.mark.parametrize("cin, cout, options, batch, h, w, tile", WINOGRAD_CASES)
def test_winograd_path_equals_native(pynative, monkeypatch, cin, cout, options, batch, h, w, tile, keep_transforms,
                                     kernels):
    """Values and gradients of the ``winograd`` path equal ``nn.Conv2d``'s (F(4x4): ~1e-5 of the output scale),
    with the backward recomputing the transformed input or reusing the forward's, and the tile transforms on
    the compiled kernels (common/kernels/winograd.cc) or on MindSpore's Im2Col / Col2Im and MatMuls."""
    if kernels == "compiled" and cpu_kernels.library() is None:
        pytest.skip(cpu_kernels.status())
    if kernels == "mindspore":
        monkeypatch.setattr(cpu_kernels, "library", lambda: None)
    options = dict({"pad_mode": "pad", "kernel_size": 3}, **options)
    native, cell = _pair(nn.Conv2d(cin, cout, **options), Conv2d(cin, cout, **options))
    top, bottom, left, right = cell.pads
    r = cell.kernel[0]
    assert winograd_tile(batch, cin, h + top + bottom - r + 1, w + left + right - r + 1, kernel=r) == tile
    x = ms.Tensor(np.random.default_rng(tile).normal(size=(batch, cin, h, w)).astype(np.float32))
    _assert_same(native, cell, x, tol=1e-4, impl="winograd", keep_transforms=keep_transforms)
    assert cell.winograd and all(w.keep_transforms == keep_transforms for w in cell.winograd_cells())
    assert all(w.compiled_transforms == (kernels == "compiled") for w in cell.winograd_cells())


@pytest.mark.parametrize("keep_transforms", [False, True])
def test_winograd_in_compiled_vjp_equals_native(keep_transforms):
    """Both Winograd tiles and the direct form in one compiled vjp (batch 2), transformed inputs recomputed or
    kept for the backward: values and gradients of ``nn.Conv2d``, and ``matmul`` leaves the 3x3 layers direct."""
    options = dict(kernel_size=3, pad_mode="pad", padding=1, has_bias=True)
    pairs = [_pair(nn.Conv2d(16, 16, **options), Conv2d(16, 16, **options)) for _ in range(3)]
    native = nn.SequentialCell([pairs[0][0], nn.ReLU(), nn.MaxPool2d(2, 2), pairs[1][0], nn.ReLU(),
                                nn.MaxPool2d(4, 4), pairs[2][0]])
    mine = nn.SequentialCell([pairs[0][1], nn.ReLU(), nn.MaxPool2d(2, 2), pairs[1][1], nn.ReLU(),
                              nn.MaxPool2d(4, 4), pairs[2][1]])
    assert [winograd_tile(2, 16, s, s) for s in (32, 16, 4)] == [4, 2, 0]
    rng = np.random.default_rng(5)
    x = ms.Tensor(rng.normal(size=(2, 16, 32, 32)).astype(np.float32))
    dy = ms.Tensor(rng.normal(size=(2, 16, 4, 4)).astype(np.float32))
    assert use_conv_impl(mine, "winograd", keep_transforms=keep_transforms) == 3
    assert all(mine[i].winograd for i in (0, 3, 6))
    got, expected = _flat(_VJP(mine)(x, dy)), _flat(_VJP(native)(x, dy))
    assert len(got) == len(expected) == 8  # y, dx, three (dW, db)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())
    other = Conv2d(16, 16, **options)
    assert use_conv_impl(other, "matmul") == 1 and other.matmul and not other.winograd


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
    net = nn.SequentialCell([Conv2d(3, 8, 4, 2, pad_mode="pad", padding=1), nn.ReLU(),
                             Conv2d(8, 8, 3, 2, pad_mode="same"), nn.ReLU(),
                             ConvTranspose2d(8, 3, 4, 4, pad_mode="pad", padding=(1, 0, 1, 0))])
    rng = np.random.default_rng(2)
    x = ms.Tensor(rng.normal(size=(2, 3, 16, 16)).astype(np.float32))
    dy = ms.Tensor(rng.normal(size=(2, 3, 15, 15)).astype(np.float32))
    assert use_conv_impl(net, "matmul") == 3
    got = _flat(_VJP(net)(x, dy))
    assert use_conv_impl(net, "native") == 0 and not any(net[i].matmul for i in (0, 2, 4))
    expected = _flat(_VJP(net)(x, dy))
    assert len(got) == len(expected) == 5  # y, dx, three weight gradients
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


def test_batch_in_compiled_vjp_equals_native():
    """The matmul path runs a batch one sample at a time (forward and recomputing backward): values and
    gradients of a batch of 3 through a compiled vjp equal ``nn.Conv2d``'s."""
    options = dict(kernel_size=3, stride=1, pad_mode="pad", padding=1, has_bias=True)
    native, matmul = _pair(nn.Conv2d(4, 6, **options), Conv2d(4, 6, **options))
    rng = np.random.default_rng(3)
    x = ms.Tensor(rng.normal(size=(3, 4, 7, 8)).astype(np.float32))
    dy = ms.Tensor(rng.normal(size=(3, 6, 7, 8)).astype(np.float32))
    assert use_conv_impl(matmul, "matmul") == 1
    got, expected = _flat(_VJP(matmul)(x, dy)), _flat(_VJP(native)(x, dy))
    assert len(got) == len(expected) == 4  # y, dx, dW, db
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


GRAD_CHANNEL_CASES = [  # (impl, kernel, stride, H, grad_channels, batch, Winograd tile): blocks at either end, inside
    ("winograd", 3, 1, 24, (0, 3), 2, 4),     # CoCosNet's SPADE: the warped exemplar before the label map
    ("winograd", 3, 1, 12, (17, 20), 1, 2),   # the last channels
    ("matmul", 4, 2, 9, (17, 20), 2, 0),      # CoCosNet's D input: label map, then the image
    ("matmul", 3, 1, 7, (5, 9), 2, 0),        # odd map, a block inside
]


@pytest.mark.parametrize("impl, kernel, stride, size, grad_channels, batch, tile", GRAD_CHANNEL_CASES)
def test_grad_channels_compute_only_their_input_gradient(impl, kernel, stride, size, grad_channels, batch, tile):
    """``grad_channels=(first, stop)``: through a compiled vjp, the output, the weight and bias gradients and
    ``dx[:, first:stop]`` equal ``nn.Conv2d``'s; ``dx`` is exactly zero on the other channels."""
    options = dict(kernel_size=kernel, stride=stride, pad_mode="pad", padding=1, has_bias=True)
    native = nn.Conv2d(20, 16, **options)
    cell = Conv2d(20, 16, grad_channels=grad_channels, **options)
    _pair(native, cell)
    assert use_conv_impl(cell, impl) == 1
    rng = np.random.default_rng(7)
    x = ms.Tensor(rng.normal(size=(batch, 20, size, size)).astype(np.float32))
    out_size = (size + 2 - kernel) // stride + 1
    dy = ms.Tensor(rng.normal(size=(batch, 16, out_size, out_size)).astype(np.float32))
    got, expected = _flat(_VJP(cell)(x, dy)), _flat(_VJP(native)(x, dy))
    if impl == "winograd":
        assert winograd_tile(batch, 20, out_size, out_size) == tile
    first, stop = grad_channels
    keep = np.zeros(20, bool)
    keep[first:stop] = True
    np.testing.assert_array_equal(got[1][:, ~keep], 0.0)
    expected[1], got[1] = expected[1][:, keep], got[1][:, keep]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


def test_grad_channels_are_checked():
    for bad in [(3, 3), (-1, 2), (0, 21), (5, 2)]:
        with pytest.raises(ValueError, match="grad_channels"):
            Conv2d(20, 4, 3, grad_channels=bad)


def test_same_parameters_as_native_cells():
    a = Conv2d(6, 64, 4, 2, pad_mode="pad", padding=1, has_bias=True)
    b = nn.Conv2d(6, 64, 4, 2, pad_mode="pad", padding=1, has_bias=True)
    assert [(p.name, p.shape) for p in a.get_parameters()] == [(p.name, p.shape) for p in b.get_parameters()]
    a = ConvTranspose2d(128, 3, 4, 2, pad_mode="pad", padding=1)
    b = nn.Conv2dTranspose(128, 3, 4, 2, pad_mode="pad", padding=1)
    assert [(p.name, p.shape) for p in a.get_parameters()] == [(p.name, p.shape) for p in b.get_parameters()]


def test_fallbacks_stay_native_and_compute(pynative):
    """Transposed convolutions with groups, or ``same`` with kernel < stride, keep the native operator."""
    x = ms.Tensor(np.random.default_rng(1).normal(size=(2, 4, 5, 5)).astype(np.float32))
    for options in (dict(kernel_size=3, stride=2, pad_mode="pad", padding=1, group=2),
                    dict(kernel_size=1, stride=2, pad_mode="same")):
        native, cell = _pair(nn.Conv2dTranspose(4, 4, **options), ConvTranspose2d(4, 4, **options))
        assert use_conv_impl(cell, "matmul") == 0 and not cell.matmul
        np.testing.assert_array_equal(cell(x).asnumpy(), native(x).asnumpy())


def test_use_conv_impl_errors():
    with pytest.raises(ValueError, match="conv_impl='fast'.*native"):
        use_conv_impl(Conv2d(3, 4, 3), "fast")
    mixed = nn.SequentialCell([Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)])
    with pytest.raises(TypeError, match=r"\['1'\] are plain nn.Conv2d.*common.conv.Conv2d"):
        use_conv_impl(mixed, "matmul")
    assert use_conv_impl(mixed, "native") == 0
    net = nn.SequentialCell([Conv2d(3, 4, 3, pad_mode="pad", padding=1)])
    net(ms.Tensor(np.ones((1, 3, 8, 8), np.float32)))  # compiled (graph mode) with the native path
    with pytest.raises(RuntimeError, match="already ran as a compiled graph.*right after building"):
        use_conv_impl(net, "matmul")
    assert use_conv_impl(net, "native") == 0  # no change: allowed


def test_pack_weights_stores_matrices_and_computes_the_same(tmp_path):
    """Graph mode: the Im2Col and Col2Im layers (a 1x1 one and a spectral-norm one included) hold their MatMul's
    matrix under the same names and give the same outputs; Winograd layers keep their 4-D weights; a packed
    network refuses another path and saving."""
    from common.checkpoint import CheckpointError, save_cell
    from common.spectral_norm import spectral_norm
    layers = [Conv2d(3, 8, 4, 2, pad_mode="pad", padding=1, has_bias=True), nn.ReLU(),
              Conv2d(8, 8, 3, pad_mode="pad", padding=1),  # Winograd
              Conv2d(8, 6, 1, has_bias=True),
              spectral_norm(Conv2d(6, 6, 4, 2, pad_mode="pad", padding=(1, 2, 1, 2)), seed=0),
              ConvTranspose2d(6, 5, 4, 2, pad_mode="pad", padding=1, has_bias=True)]
    net = nn.SequentialCell(layers)
    twin = nn.SequentialCell([copy.deepcopy(layer) for layer in layers])
    for net_ in (net, twin):
        net_.set_train(False)
        assert use_conv_impl(net_, "winograd") == 5
    x = _images((2, 3, 16, 18))
    expected = twin(x).asnumpy()
    names = [p.name for p in net.get_parameters()]
    shapes = [tuple(cell.weight.shape) for cell in (layers[0], layers[3], layers[4].conv, layers[5])]
    assert pack_weights(net) == 4 and pack_weights(net) == 0
    assert [tuple(cell.weight.shape) for cell in (layers[0], layers[3], layers[4].conv, layers[5])] == [
        (s[0], int(np.prod(s[1:]))) for s in shapes]
    assert layers[2].weight.shape == (8, 8, 3, 3) and not layers[2].packed
    assert [p.name for p in net.get_parameters()] == names
    np.testing.assert_allclose(net(x).asnumpy(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    with pytest.raises(RuntimeError, match="packed for inference.*build and load it again for 'native'"):
        use_conv_impl(net, "native")
    assert use_conv_impl(net, "winograd") == 5  # no change: allowed
    with pytest.raises(CheckpointError, match="packed for inference.*save the network before packing"):
        save_cell(net, str(tmp_path / "G.ckpt"))
    assert not os.path.exists(tmp_path / "G.ckpt")


def test_prepare_for_export_switches_to_native():
    net = nn.SequentialCell([Conv2d(3, 4, 4, 2, pad_mode="pad", padding=1), nn.ReLU(), Conv2d(4, 4, 3)])
    assert use_conv_impl(net, "winograd") == 2 and net[0].matmul and net[2].winograd
    prepare_for_export(net)
    assert not net[0].matmul and not net[2].matmul and not net[2].winograd
    if cpu_kernels.library() is not None:
        assert use_conv_impl(net, "onednn") == 2 and net[0].onednn and not net[0].matmul
        prepare_for_export(net)
        assert not net[0].onednn and not net[2].onednn


def _check_switch(net, inputs, n_convs):
    """``net`` (native) then switched to matmul, then its weights packed: every conv cell switches and packs,
    and the outputs agree to 1e-4."""
    net.set_train(False)
    expected = _flat(net(*inputs))
    assert use_conv_impl(net, "matmul") == n_convs
    got = _flat(net(*inputs))
    assert pack_weights(net) == n_convs
    packed = _flat(net(*inputs))
    for e, g, p in zip(expected, got, packed):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())
        np.testing.assert_allclose(p, g, rtol=1e-6, atol=1e-6 * np.abs(g).max())


def _images(shape, seed=0, low=-1.0):
    return ms.Tensor(np.random.default_rng(seed).uniform(low, 1, shape).astype(np.float32))


@pytest.mark.parametrize("arch, n_convs", [("vgg16", 13), ("vgg19", 16)])
def test_use_conv_impl_switches_vgg(pynative, arch, n_convs):
    from common.vgg import VGG
    taps = ("relu1_2", "relu3_1", "pool5")
    _check_switch(VGG(arch, taps), (_images((2, 3, 32, 32), low=0.0),), n_convs)
    assert VGG(arch, taps, conv_impl="matmul").convs["conv1_1"].matmul


@pytest.mark.parametrize("net, size, n_convs", [("alexnet", 64, 5 + 5), ("vgg16", 32, 13 + 5)])
def test_use_conv_impl_switches_lpips(pynative, net, size, n_convs):
    from common.metrics.lpips import LPIPS
    _check_switch(LPIPS(net), (_images((2, 3, size, size)), _images((2, 3, size, size), seed=1)), n_convs)


def test_use_conv_impl_switches_inception(pynative):
    """All 94 convolutions of the FID InceptionV3, 1x7 / 7x1 / 1x3 / 3x1 included (75x75: its smallest input)."""
    from common.metrics.inception import InceptionV3
    net = InceptionV3(taps=("conv2b", "mixed6e", "pool3"), resize=False)
    _check_switch(net, (_images((2, 3, 75, 75), low=0.0),), 94)


def test_metric_and_loss_builders_take_conv_impl():
    """The conv_impl keyword of LPIPSMetric, InceptionMetrics and PerceptualLoss reaches every convolution."""
    from common.metrics.fid import InceptionMetrics
    from common.metrics.inception import InceptionV3
    from common.metrics.lpips import LPIPS, LPIPSMetric
    from common.perceptual import PerceptualLoss
    assert LPIPSMetric(model=LPIPS("alexnet"), conv_impl="matmul").model.lins[0].matmul
    metric = InceptionMetrics(net=InceptionV3(taps=("pool3", "logits_unbiased")), conv_impl="matmul")
    loss = PerceptualLoss({"pixel": 1.0, "relu2_2": 1.0}, arch="vgg19", conv_impl="matmul")
    for net, n_convs in ((metric.net, 94), (loss.vgg, 4)):
        convs = [c for _, c in net.cells_and_names() if isinstance(c, Conv2d)]
        assert len(convs) == n_convs and all(c.matmul for c in convs)
    assert not PerceptualLoss({"relu1_1": 1.0}).vgg.convs["conv1_1"].matmul


def test_use_conv_impl_switches_fcn8s(pynative):
    from common.metrics.fcn import FCN8s
    _check_switch(FCN8s(num_classes=5, channels=(4, 4, 8, 8, 8), fc=8), (_images((1, 3, 20, 24)),), 13 + 5 + 3)


AVX512 = frozenset({"sse", "avx2", "avx512f"})
AVX2 = frozenset({"sse", "avx2"})


@pytest.mark.parametrize("cpu_conv, device, user_isa, flags, expected", [
    ("auto", "CPU", None, AVX512, ("winograd", "AVX512_CORE")),
    ("auto", "CPU", None, AVX2, ("winograd", "AVX2")),
    ("auto", "CPU", None, frozenset({"sse"}), ("native", "AVX2")),
    ("auto", "CPU", "AVX2", AVX512, ("winograd", None)),          # the user's cap is kept
    ("auto", "CPU", "avx512_core", AVX512, ("winograd", None)),
    ("winograd", "CPU", None, AVX512, ("winograd", "AVX512_CORE")),
    ("native", "CPU", None, AVX512, ("native", "AVX2")),
    ("matmul", "CPU", None, AVX2, ("matmul", "AVX2")),
    ("matmul", "GPU", None, AVX512, ("native", None)),
    ("onednn", "CPU", None, AVX512, ("onednn", "AVX512_CORE")),
    ("onednn", "CPU", None, AVX2, ("onednn", "AVX2")),
    ("mixed", "CPU", None, AVX512, ("mixed", "AVX512_CORE")),
])
def test_select_cpu_conv(cpu_conv, device, user_isa, flags, expected):
    assert select_cpu_conv(cpu_conv, device, user_isa, flags) == expected


def test_select_cpu_conv_rejects_unknown_choice():
    with pytest.raises(ValueError, match="cpu_conv='gpu'.*auto"):
        select_cpu_conv("gpu", "CPU", None, AVX512)


def test_cpu_has_avx512_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512dq\n")
    assert cpu_has_avx512(str(info))
    assert cpu_flags(str(info)) == {"fpu", "sse", "avx2", "avx512f", "avx512dq"}
    info.write_text("processor : 0\nflags : fpu sse avx2 avx512fx\n")
    assert not cpu_has_avx512(str(info))
    assert not cpu_has_avx512(str(tmp_path / "missing"))


@pytest.mark.parametrize("precision, impl, user_isa, flags, expected", [
    ("f32", "winograd", None, {"amx_bf16"}, None),
    ("bf16", "winograd", None, {"avx512f", "avx512_bf16", "amx_bf16"}, "AVX512_CORE_AMX"),
    ("bf16", "onednn", None, {"avx512f", "avx512_bf16"}, "AVX512_CORE_BF16"),
    ("bf16", "matmul", "AVX512_CORE_BF16", {"avx512f", "avx512_bf16", "amx_bf16"}, None),  # the user's cap is kept
])
def test_select_cpu_precision(precision, impl, user_isa, flags, expected):
    assert select_cpu_precision(precision, "CPU", impl, user_isa, frozenset(flags)) == expected


@pytest.mark.parametrize("precision, device, impl, flags, message", [
    ("fp16", "CPU", "matmul", {"amx_bf16"}, r"precision='fp16' is not supported.*'f32', 'bf16'"),
    ("bf16", "GPU", "native", {"amx_bf16"}, r"bf16 is a CPU option.*on GPU use amp_level=O1 or O2"),
    ("bf16", "CPU", "native", {"amx_bf16"}, r"native convolutions run under the AVX2 cap.*use cpu_conv=winograd"),
    ("bf16", "CPU", "winograd", {"avx512f"}, r"needs a CPU with AMX or AVX512_BF16.*use precision=f32"),
    ("bf16", "CPU", "matmul", {"avx512f", "avx512_bf16"}, r"cpu_conv=matmul: oneDNN computes MatMul in bf16 on AMX "
                                                            r"tiles only.*use cpu_conv=onednn"),
])
def test_select_cpu_precision_refuses_what_cannot_take_effect(precision, device, impl, flags, message):
    with pytest.raises(ValueError, match=message):
        select_cpu_precision(precision, device, impl, None, frozenset(flags))


_PRECISION_SCRIPT = """
import sys
import numpy as np
from common.runtime import init_runtime
rt = init_runtime("CPU", "graph", seed=0, cpu_conv=sys.argv[1], precision=sys.argv[2])
import mindspore as ms
from common.conv import Conv2d, use_conv_impl
conv = Conv2d(96, 96, 3, pad_mode="pad", padding=1, has_bias=False)
use_conv_impl(conv, rt.conv_impl)
rng = np.random.default_rng(0)
w = rng.standard_normal((96, 96, 3, 3)).astype(np.float32)
x = rng.standard_normal((2, 96, 24, 40)).astype(np.float32)
conv.weight.set_data(ms.Tensor(w))
def loss(x):
    return (conv(x) ** 2).sum()
grad = ms.jit(ms.grad(loss, grad_position=0))
np.savez(sys.argv[3], y=conv(ms.Tensor(x)).asnumpy(), dx=grad(ms.Tensor(x)).asnumpy(), w=w, x=x, describe=rt.describe_conv)
"""


NO_AMX = pytest.mark.skipif("amx_bf16" not in cpu_flags(), reason="oneDNN's MatMul takes bf16 on AMX only")


@pytest.mark.skipif(not cpu_has_avx512() or not {"amx_bf16", "avx512_bf16"} & cpu_flags(),
                    reason="the CPU has no AVX-512 bf16 instructions")
@pytest.mark.parametrize("impl", [pytest.param("matmul", marks=NO_AMX), pytest.param("winograd", marks=NO_AMX),
                                  "onednn"])
def test_bf16_precision_rounds_matmul_inputs_to_bf16_and_accumulates_in_f32(tmp_path, impl):
    """In a process of its own (oneDNN reads the mode once): the convolution's output against a float64
    numpy sum, and its input gradient against the f32 run's, differ at bf16's level (2^-8 relative rounding of
    each operand), neither f32's (~1e-6: bf16 not in effect) nor worse than 1e-2. 96 channels: oneDNN keeps
    its f32 GEMM for products with fewer than ~96 rows (fpmath=bf16 allows bf16, it does not force it)."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("ONEDNN_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE"):  # each run sets its own
        env.pop(name, None)
    script = tmp_path / "conv_precision.py"  # a file: MindSpore compiles from source
    script.write_text(_PRECISION_SCRIPT)
    runs = {}
    for precision in ("f32", "bf16"):
        path = tmp_path / f"{precision}.npz"
        res = subprocess.run([sys.executable, str(script), impl, precision, str(path)], env=env,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        runs[precision] = np.load(path)
    f32, bf16 = runs["f32"], runs["bf16"]
    assert "ONEDNN_DEFAULT_FPMATH_MODE=BF16" in str(bf16["describe"])
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(f32["x"].astype(np.float64), [(0, 0), (0, 0), (1, 1), (1, 1)]),
                                                       (3, 3), axis=(2, 3))
    reference = np.einsum("bchwij,ocij->bohw", windows, f32["w"].astype(np.float64))

    def rel(a, b):
        return np.abs(a - b).max() / np.abs(b).max()
    assert rel(f32["y"], reference) < 1e-5
    assert 1e-4 < rel(bf16["y"], reference) < 1e-2
    assert 1e-4 < rel(bf16["dx"], f32["dx"]) < 1e-2


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
        G, D = build_networks(cfg)
        n_matmul = use_conv_impl(G, impl) + use_conv_impl(D, impl)
        assert (n_matmul > 0) == (impl == "matmul")
        if runs:
            ms.load_param_into_net(G, runs[0][1])
            ms.load_param_into_net(D, runs[0][2])
        initial = ({p.name: p.clone() for p in G.get_parameters()}, {p.name: p.clone() for p in D.get_parameters()})
        opt_G, opt_D = (nn.SGD(net.trainable_params(), learning_rate=0.1) for net in (G, D))
        step = Pix2PixTrainStep(G, D, opt_G, opt_D, cfg.gan_mode, cfg.lambda_L1)
        step.set_train()
        losses = [float(v.asnumpy()) for v in step(a, b)]
        runs.append((losses, initial[0], initial[1], [p.asnumpy() for p in G.trainable_params() + D.trainable_params()]))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-4)
    for native, matmul in zip(runs[0][3], runs[1][3]):
        np.testing.assert_allclose(matmul, native, rtol=1e-4, atol=1e-5)
