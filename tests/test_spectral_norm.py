"""common.spectral_norm: power iteration against NumPy and torch.nn.utils.spectral_norm, inference mode
without updates, gradients through sigma, checkpoint round trip of u/v, parameter counting, folding."""
import os

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import Tensor, nn

from common import cpu_kernels
from common.conv import Conv2d, ScaledBiasAdd, use_conv_impl, winograd_tile
from common.layers import PowerIteration, count_params
from common.spectral_norm import SpectralNorm, SpectralVectors, fold_spectral_norm, spectral_norm
from common.train import mixed_precision

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")


def np_normalize(x):
    return x / max(np.linalg.norm(x), 1e-12)


def np_power_iteration(w, u, steps):
    """PyTorch's training-mode update repeated ``steps`` times: v = n(W^T u), u = n(W v)."""
    w = w.reshape(w.shape[0], -1).astype(np.float64)
    u = u.astype(np.float64)
    for _ in range(steps):
        v = np_normalize(w.T @ u)
        u = np_normalize(w @ v)
    return u, v, float(u @ w @ v)


def np_conv(x, w, b):
    """Direct 3x3 / stride 1 / pad 1 cross-correlation (NumPy, float64)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((n, o, h, wd))
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return y + b.reshape(1, -1, 1, 1)


def make_conv(cin=3, cout=5, seed=0):
    conv = Conv2d(cin, cout, 3, 1, pad_mode="pad", padding=1, has_bias=True)
    rng = np.random.default_rng(seed)
    conv.weight.set_data(Tensor(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)))
    conv.bias.set_data(Tensor(rng.standard_normal(cout).astype(np.float32)))
    return conv


def test_training_forward_runs_one_power_iteration_per_call_like_numpy():
    sn = spectral_norm(make_conv(), seed=1)
    sn.set_train(True)
    w = sn.conv.weight.asnumpy()
    b = sn.conv.bias.asnumpy()
    u0 = sn.weight_u.asnumpy().copy()
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 7)).astype(np.float32)
    for step in range(1, 5):
        y = sn(Tensor(x)).asnumpy()
        u, v, sigma = np_power_iteration(w, u0, step)
        np.testing.assert_allclose(sn.weight_u.asnumpy(), u, atol=1e-5)
        np.testing.assert_allclose(sn.weight_v.asnumpy(), v, atol=1e-5)
        np.testing.assert_allclose(y, np_conv(x, w / sigma, b), rtol=1e-4, atol=1e-4)
    top = np.linalg.svd(w.reshape(5, -1), compute_uv=False)[0]
    assert abs(sigma - top) / top < 0.05  # the estimate converges to the largest singular value


def on_library(cell, compiled_kernels):
    """``cell`` (a common.layers.CompiledCell) on the compiled kernels, or on MindSpore's operators."""
    cell.use_library(cpu_kernels.library() if compiled_kernels else None)
    assert (cell.custom is not None) == (compiled_kernels and cpu_kernels.library() is not None)
    return cell


@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (512, 64, 3, 3)])  # the second over a MiB: split over the cores
@pytest.mark.parametrize("compiled_kernels", [True, False])
def test_power_iteration_and_its_gradient_match_numpy(shape, compiled_kernels):
    """common.layers.PowerIteration, compiled (common/kernels/spectral_norm.cc) and on MindSpore's operators:
    u', v', 1/sigma as NumPy's float64 iteration; the gradient of k/sigma is -k u' v'^T / sigma^2."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal(shape).astype(np.float32)
    u = np_normalize(rng.standard_normal(shape[0])).astype(np.float32)
    v = np_normalize(rng.standard_normal(int(np.prod(shape[1:])))).astype(np.float32)
    cell = on_library(PowerIteration(), compiled_kernels)

    class Objective(nn.Cell):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def construct(self, weight, u0, v0):
            return self.cell(weight, u0, v0)[2].sum() * 3.0

    u1, v1, inv_sigma = cell(Tensor(w), Tensor(u), Tensor(v))
    want_u, want_v, want_sigma = np_power_iteration(w, u, 1)
    np.testing.assert_allclose(u1.asnumpy(), want_u, atol=1e-6)
    np.testing.assert_allclose(v1.asnumpy(), want_v, atol=1e-6)
    np.testing.assert_allclose(inv_sigma.asnumpy(), [1 / want_sigma], rtol=1e-6)
    grad = ms.grad(Objective(), grad_position=0)(Tensor(w), Tensor(u), Tensor(v))
    want_grad = -3.0 / want_sigma ** 2 * np.outer(want_u, want_v).reshape(shape)
    np.testing.assert_allclose(grad.asnumpy(), want_grad, rtol=1e-5, atol=1e-6 * np.abs(want_grad).max())


def test_float16_cell_keeps_the_power_iteration_float32():
    """Mixed precision (O2 makes every cell float16), graph mode: the convolution runs in float16, while u, v
    and sigma still follow the float32/NumPy power iteration (they are float32 state, updated in place)."""
    sn = mixed_precision(spectral_norm(make_conv(seed=6), seed=7), "O2")
    sn.set_train(True)
    w, b = sn.conv.weight.asnumpy(), sn.conv.bias.asnumpy()
    u0 = sn.weight_u.asnumpy().copy()
    x = np.random.default_rng(8).standard_normal((1, 3, 6, 7)).astype(np.float32)
    y = sn(Tensor(x))
    assert y.dtype == ms.float16 and sn.weight_u.dtype == ms.float32
    u, v, sigma = np_power_iteration(w, u0, 1)
    np.testing.assert_allclose(sn.weight_u.asnumpy(), u, atol=1e-5)
    np.testing.assert_allclose(sn.weight_v.asnumpy(), v, atol=1e-5)
    want = np_conv(x, w / sigma, b)
    np.testing.assert_allclose(y.asnumpy(), want, atol=2e-2 * np.abs(want).max())


def test_inference_mode_keeps_u_v_and_folding_reproduces_it():
    sn = spectral_norm(make_conv(seed=3), seed=4)
    sn.set_train(True)
    x = Tensor(np.random.default_rng(5).standard_normal((1, 3, 5, 5)).astype(np.float32))
    sn(x)
    sn.set_train(False)
    u, v = sn.weight_u.asnumpy().copy(), sn.weight_v.asnumpy().copy()
    y1, y2 = sn(x).asnumpy(), sn(x).asnumpy()
    np.testing.assert_array_equal(sn.weight_u.asnumpy(), u)
    np.testing.assert_array_equal(sn.weight_v.asnumpy(), v)
    np.testing.assert_array_equal(y1, y2)
    w = sn.conv.weight.asnumpy().astype(np.float64)
    sigma = float(u @ w.reshape(5, -1) @ v)
    np.testing.assert_allclose(y1, np_conv(x.asnumpy(), w / sigma, sn.conv.bias.asnumpy()), rtol=1e-4, atol=1e-4)

    net = nn.SequentialCell([sn, nn.ReLU()])
    assert fold_spectral_norm(net) == 1
    assert not any(isinstance(c, SpectralNorm) for _, c in net.cells_and_names())
    net.set_train(False)
    np.testing.assert_allclose(net(x).asnumpy(), np.maximum(y1, 0), rtol=1e-5, atol=1e-5)


def test_u_v_are_saved_but_not_counted_or_trained(tmp_path):
    sn = spectral_norm(make_conv(cin=4, cout=6), seed=0)
    assert count_params(sn) == 6 * 4 * 9 + 6
    names = {p.name for p in sn.get_parameters()}
    assert {"weight_u", "weight_v"} <= names
    assert {p.name for p in sn.trainable_params()} == names - {"weight_u", "weight_v"}
    sn.set_train(True)
    sn(Tensor(np.ones((1, 4, 4, 4), np.float32)))
    path = os.path.join(str(tmp_path), "sn.ckpt")
    ms.save_checkpoint(sn, path)
    fresh = spectral_norm(make_conv(cin=4, cout=6), seed=9)
    assert not np.allclose(fresh.weight_u.asnumpy(), sn.weight_u.asnumpy())
    ms.load_param_into_net(fresh, ms.load_checkpoint(path))
    np.testing.assert_array_equal(fresh.weight_u.asnumpy(), sn.weight_u.asnumpy())
    np.testing.assert_array_equal(fresh.weight_v.asnumpy(), sn.weight_v.asnumpy())


class _SaveIterateRestore(nn.Cell):
    """save(0), one iteration, save(1), restore(0) (graph mode); ``restore(1)`` by itself with ``last=True``."""

    def __init__(self, vectors, *, last=False):
        super().__init__(auto_prefix=False)
        self.vectors, self.last = vectors, last

    def construct(self, x):
        if self.last:
            return self.vectors.restore(1, after=x)
        saved = self.vectors.save(0, after=x)
        iterated = self.vectors.iterate(after=saved)
        return self.vectors.restore(0, after=self.vectors.save(1, after=iterated))


def test_vector_snapshots_save_and_restore_around_an_iteration():
    """``SpectralVectors(slots=2)``: the slots hold the vectors as they were at each ``save`` (the second after one
    NumPy power iteration), ``restore`` writes them back; the slots are the step's Parameters, not the network's."""
    net = nn.SequentialCell([spectral_norm(make_conv(cin=3, cout=5), seed=1),
                             spectral_norm(make_conv(cin=5, cout=4), seed=2)])
    before = [p.asnumpy().copy() for p in net.get_parameters() if p.name.endswith(("weight_u", "weight_v"))]
    vectors = SpectralVectors(net, slots=2)
    assert not any(cell.iterate_in_forward for cell in vectors.layers)
    assert [p.name for p in vectors.slots][:2] == ["0.weight_u.slot0", "0.weight_v.slot0"]
    assert len(vectors.slots) == 2 * len(before) and not any(".slot" in p.name for p in net.get_parameters())
    n = len(before)
    _SaveIterateRestore(vectors)(Tensor(np.ones(1, np.float32)))
    for value, now, slot0 in zip(before, vectors.vectors, vectors.slots[:n]):
        np.testing.assert_array_equal(now.asnumpy(), value)  # restored
        np.testing.assert_array_equal(slot0.asnumpy(), value)
    for k, cell in enumerate(vectors.layers):
        u, v, _ = np_power_iteration(cell.conv.weight.asnumpy(), before[2 * k], 1)
        np.testing.assert_allclose(vectors.slots[n + 2 * k].asnumpy(), u, atol=1e-6)
        np.testing.assert_allclose(vectors.slots[n + 2 * k + 1].asnumpy(), v, atol=1e-6)
    _SaveIterateRestore(vectors, last=True)(Tensor(np.ones(1, np.float32)))
    for now, slot1 in zip(vectors.vectors, vectors.slots[n:]):
        np.testing.assert_array_equal(now.asnumpy(), slot1.asnumpy())


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (5, 64, 32, 32)])  # the second over a MiB: split over the cores
@pytest.mark.parametrize("compiled_kernels", [True, False])
def test_scaled_bias_add_and_its_gradient_match_numpy(shape, compiled_kernels):
    """The output-scaled form's ``y * s + bias`` (common.conv.ScaledBiasAdd; compiled: ScaleBias and
    ScaleBiasGrad in common/kernels/spectral_norm.cc): values and the three gradients as NumPy's float64."""
    rng = np.random.default_rng(12)
    y = rng.standard_normal(shape).astype(np.float32)
    s = np.array([0.37], np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    cell = on_library(ScaledBiasAdd(), compiled_kernels)

    class Objective(nn.Cell):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def construct(self, y0, s0, b0):
            return (self.cell(y0, s0, b0) * Tensor(r)).sum()

    y64, r64 = y.astype(np.float64), r.astype(np.float64)
    out = cell(Tensor(y), Tensor(s), Tensor(b)).asnumpy()
    np.testing.assert_allclose(out, y64 * s[0] + b[None, :, None, None], rtol=1e-6, atol=1e-6)
    dy, ds, db = ms.grad(Objective(), grad_position=(0, 1, 2))(Tensor(y), Tensor(s), Tensor(b))
    np.testing.assert_allclose(dy.asnumpy(), r64 * s[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ds.asnumpy(), [(r64 * y64).sum()], rtol=1e-5)
    np.testing.assert_allclose(db.asnumpy(), r64.sum((0, 2, 3)), rtol=1e-5, atol=1e-4)


def test_only_convolutions_are_wrapped():
    with pytest.raises(TypeError, match="nn.Conv2d"):
        SpectralNorm(nn.Dense(3, 4))


TORCH_CASES = [(impl, 3, size, scaled, True) for impl in ("native", "matmul", "onednn")
               for size, scaled in (((5, 6), True), ((40, 41), False))] + [
    ("winograd", 16, (8, 8), True, True),     # F(2x2)
    ("winograd", 16, (40, 40), False, True),  # F(4x4)
    ("native", 3, (5, 6), True, False),       # the power iteration on MindSpore's operators
    ("matmul", 3, (40, 41), False, False),
]


@pytest.mark.parametrize("conv_impl, cin, size, scaled_output, compiled_kernels", TORCH_CASES)
def test_matches_torch_spectral_norm_values_and_gradients(conv_impl, cin, size, scaled_output, compiled_kernels):
    """Both forms (output scaled by 1/sigma on small maps, weight divided on large ones) on every path (onednn:
    the bias added by the convolution in the weight form, after the scaling in the other; winograd: by the
    output transform, before the scaling as bias * sigma); the power iteration and its gradient compiled
    (``common/kernels/spectral_norm.cc``) or on MindSpore's operators."""
    torch = pytest.importorskip("torch")
    conv = make_conv(cin=cin, cout=4, seed=6)
    sn = spectral_norm(conv, seed=7)
    use_conv_impl(sn, conv_impl, compiled_kernels=compiled_kernels)
    assert (sn.power_iteration.custom is not None) == (compiled_kernels and cpu_kernels.library() is not None)
    assert sn.scales_output((2, cin) + size) == scaled_output
    if conv_impl == "winograd":
        assert winograd_tile(2, cin, *size) == (2 if scaled_output else 4)
    ref = torch.nn.utils.spectral_norm(torch.nn.Conv2d(cin, 4, 3, padding=1))
    with torch.no_grad():
        ref.weight_orig.copy_(torch.from_numpy(conv.weight.asnumpy()))
        ref.bias.copy_(torch.from_numpy(conv.bias.asnumpy()))
        ref.weight_u.copy_(torch.from_numpy(sn.weight_u.asnumpy()))
        ref.weight_v.copy_(torch.from_numpy(sn.weight_v.asnumpy()))
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, cin) + size).astype(np.float32)
    r = rng.standard_normal((2, 4) + size).astype(np.float32)

    class Objective(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def construct(self, inp, weights):
            return (self.net(inp) * weights).sum()

    objective = Objective(sn)
    objective.set_train(True)
    grad_fn = ms.value_and_grad(objective, None, sn.trainable_params())
    ref.train()
    for _ in range(3):
        loss, (g_w, g_b) = grad_fn(Tensor(x), Tensor(r))
        ref.zero_grad()
        ref_loss = (ref(torch.from_numpy(x)) * torch.from_numpy(r)).sum()
        ref_loss.backward()
        np.testing.assert_allclose(float(loss), float(ref_loss.detach()), rtol=1e-4)
        np.testing.assert_allclose(sn.weight_u.asnumpy(), ref.weight_u.numpy(), atol=1e-5)
        np.testing.assert_allclose(sn.weight_v.asnumpy(), ref.weight_v.numpy(), atol=1e-5)
        np.testing.assert_allclose(g_w.asnumpy(), ref.weight_orig.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(g_b.asnumpy(), ref.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    sn.set_train(False)
    ref.eval()
    with torch.no_grad():
        np.testing.assert_allclose(sn(Tensor(x)).asnumpy(), ref(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)
