"""common.layers: reduce_mean / reduce_sum (2-D reshape and matrix-product forms) and expand against NumPy, values and
gradients; Standardize and
the norms built on it against NumPy, gradients against float64 central differences; Float32Only under mixed precision."""
import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import Tensor, nn

from common.layers import (Float32Softmax, InstanceNorm2d, LayerNorm2d, Softmax, Standardize, expand, reduce_mean,
                           reduce_sum)
from common.train import mixed_precision


class _Reduce(nn.Cell):
    def __init__(self, axes, keep_dims):
        super().__init__()
        self.axes, self.keep_dims = axes, keep_dims

    def construct(self, x):
        return reduce_mean(x, self.axes, self.keep_dims), reduce_sum(x, self.axes, self.keep_dims)


class _SquaredMean(nn.Cell):
    def __init__(self, axes):
        super().__init__()
        self.axes = axes

    def construct(self, x):
        return (reduce_mean(x, self.axes, False) ** 2).sum()


@pytest.mark.parametrize("axes", [(1, 2, 3), (2, 3), (3,), (0, 2, 3), (-1, -2), (1,), (1, 2), (2,), (0, 1), (1, 3)])
@pytest.mark.parametrize("keep_dims", [True, False])
def test_reductions_match_numpy(axes, keep_dims):
    """Trailing axes and (0, 2, 3) take the reshape forms, inner blocks ((1,), (1, 2), (2,), (0, 1)) the
    matrix product with ones, (1, 3) the fallback; odd sizes, batch 3."""
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 7)).astype(np.float32) * 2 + 1
    mean, total = _Reduce(axes, keep_dims)(Tensor(x))
    np.testing.assert_allclose(mean.asnumpy(), x.mean(axis=axes, keepdims=keep_dims), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(total.asnumpy(), x.sum(axis=axes, keepdims=keep_dims), rtol=1e-5, atol=1e-4)
    grad = ms.grad(_SquaredMean(axes))(Tensor(x)).asnumpy()
    count = np.prod([x.shape[a] for a in axes])
    np.testing.assert_allclose(grad, np.broadcast_to(2 * x.mean(axis=axes, keepdims=True) / count, x.shape),
                               rtol=1e-5, atol=1e-7)


class _WeightedExpand(nn.Cell):
    def __init__(self, w):
        super().__init__()
        self.w = Tensor(w)

    def construct(self, stat):
        return (expand(stat, self.w) * self.w).sum()


@pytest.mark.parametrize("stat_shape", [(3, 1, 5, 7), (1, 1, 5, 7), (3, 1, 1, 7), (3, 4, 1, 1), (1, 4, 1, 1), (3, 4, 5, 1)])
def test_expand_matches_numpy_broadcast(stat_shape):
    """Inner blocks ([3, 1, 5, 7], [3, 1, 1, 7], and [1, 1, 5, 7] with a leading block) take the outer product
    with ones, trailing ones BroadcastTo; the gradient is the sum of the weights over the broadcast axes."""
    rng = np.random.default_rng(1)
    stat = rng.standard_normal(stat_shape).astype(np.float32)
    w = rng.standard_normal((3, 4, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(expand(Tensor(stat), Tensor(w)).asnumpy(), np.broadcast_to(stat, w.shape))
    axes = tuple(i for i, n in enumerate(stat_shape) if n == 1)
    grad = ms.grad(_WeightedExpand(w))(Tensor(stat)).asnumpy()
    np.testing.assert_allclose(grad, w.sum(axis=axes, keepdims=True), rtol=1e-5, atol=1e-5)


def _np_standardize(x, axes, eps, ddof):
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=axes, ddof=ddof, keepdims=True) + eps)


def _central_difference(f, x, h=1e-6):
    """d sum(f(x) * w) / dx in float64 for the fixed weights w inside f."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = h
        grad[i] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


class _Weighted(nn.Cell):
    def __init__(self, net, w):
        super().__init__()
        self.net, self.w = net, Tensor(w)

    def construct(self, x):
        return (self.net(x) * self.w).sum()


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
@pytest.mark.parametrize("axes, ddof", [((2, 3), 0), ((1, 2, 3), 0), ((1,), 1), ((0, 2, 3), 0)])
def test_standardize_values_and_hand_written_gradient_match_numpy(axes, ddof, mode):
    """Instance, layer, positional (N-1) and batch-statistics forms; odd sizes, batch 2; the backward is the
    cell's own bprop, checked against central differences of the NumPy forward in float64."""
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        _check_standardize(axes, ddof)
    finally:
        ms.set_context(mode=previous)  # other test files of this process compile in their own mode


def _check_standardize(axes, ddof):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, 3, 5, 3)) * 2 + 0.5).astype(np.float32)
    w = rng.standard_normal(x.shape).astype(np.float32)
    net = Standardize(axes, eps=1e-3, ddof=ddof)
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), _np_standardize(x.astype(np.float64), axes, 1e-3, ddof),
                               rtol=1e-5, atol=1e-5)
    got = ms.grad(_Weighted(net, w))(Tensor(x)).asnumpy()
    want = _central_difference(lambda v: (_np_standardize(v, axes, 1e-3, ddof) * w).sum(), x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_softmax_values_and_hand_written_gradient_match_numpy(mode):
    """Last-axis softmax of [2, 3, 7] (logits up to ~10): values against NumPy, the cell's bprop against central
    differences of the NumPy forward in float64."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 3, 7)) * 3).astype(np.float32)
    w = rng.standard_normal(x.shape).astype(np.float32)
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        net = Softmax()
        np.testing.assert_allclose(net(Tensor(x)).asnumpy(), _np_softmax(x.astype(np.float64)), rtol=1e-5, atol=1e-7)
        got = ms.grad(_Weighted(net, w))(Tensor(x)).asnumpy()
    finally:
        ms.set_context(mode=previous)
    want = _central_difference(lambda v: (_np_softmax(v) * w).sum(), x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("amp_level", ["O2", "to_float(float16)", "to_float(bfloat16)"])
def test_float32_only_cells_stay_float32_under_any_mixed_precision(amp_level):
    """A dense layer then softmaxes: mixed precision (O2 marks every cell, one by one) or a network-wide
    ``to_float`` leaves the dense layer and the plain Softmax in the lower precision, while Float32Softmax stays
    float32 and computes the float64 softmax of the dense layer's (rounded) output to float32 accuracy."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    net = nn.SequentialCell([nn.Dense(6, 5), Float32Softmax(), Softmax()])
    low = ms.bfloat16 if "bfloat16" in amp_level else ms.float16
    if amp_level == "O2":
        mixed_precision(net, "O2")
    else:
        net.to_float(low)
    flag = "bf16" if low == ms.bfloat16 else "fp16"
    assert getattr(net[0], flag) and getattr(net[2], flag)
    assert net[1].fp32 and not (net[1].fp16 or net[1].bf16)
    if low == ms.float16:  # the CPU has float16 MatMul; bfloat16 only the flags
        logits = net[0](Tensor(x))
        assert logits.dtype == ms.float16
        y = net[1](logits)
        assert y.dtype == ms.float32
        np.testing.assert_allclose(y.asnumpy(), _np_softmax(logits.asnumpy().astype(np.float64)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cell", ["instance", "layer"])
def test_affine_norms_gradients_of_gamma_and_beta(cell):
    """d/dgamma = sum of dy * y and d/dbeta = sum of dy per channel, with y the standardized input."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    w = rng.standard_normal(x.shape).astype(np.float32)
    if cell == "instance":
        net, axes, eps = InstanceNorm2d(4, affine=True), (2, 3), 1e-5
    else:
        net, axes, eps = LayerNorm2d(4), (1, 2, 3), 1e-12
    net.gamma.set_data(Tensor(np.array([0.5, 1.0, 2.0, -1.0], np.float32)))
    net.beta.set_data(Tensor(np.array([0.1, 0.0, -0.3, 1.0], np.float32)))
    y = _np_standardize(x.astype(np.float64), axes, eps, 0)
    want = y * net.gamma.asnumpy().reshape(1, -1, 1, 1) + net.beta.asnumpy().reshape(1, -1, 1, 1)
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), want, rtol=1e-5, atol=1e-5)
    d_gamma, d_beta = ms.grad(_Weighted(net, w), grad_position=None, weights=[net.gamma, net.beta])(Tensor(x))
    np.testing.assert_allclose(d_gamma.asnumpy(), (w * y).sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d_beta.asnumpy(), w.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)
