"""CoCosNet networks: reference parameter counts at full width, positional norm, contextual loss,
correlation and warp against NumPy, self-attention against NumPy, SPADE and residual blocks and the discriminator against
the PyTorch restatement of the official code (bench/torch_cocosnet.py, the reference's parameter names), every intermediate shape at 256x256
(narrow channels), bad sizes."""

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import Tensor, nn, ops

from common.conv import Unfold, use_conv_impl
from common import cpu_kernels
from common.layers import Softmax, count_params
from common.vgg import VGG
from cocosnet.src.blocks import Attention, ResidualBlock, PositionalNorm2d, SPADEResnetBlock, nearest_resize
from common.train import mixed_precision
from cocosnet.src.correspondence import CorrelationWarp, center_normalize, correlation, warp
from cocosnet.src.loss import contextual_loss
from cocosnet.src.model import (REFERENCE_PARAMS, CoCosNet, build_correspondence, build_discriminator,
                                build_generator)

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")

RNG = np.random.default_rng(0)


class Call(nn.Cell):
    """Runs ``fn(*inputs)`` (a module-level function or a bound method) as a compiled graph."""

    def __init__(self, fn, owner=None):
        super().__init__()
        self.fn = fn
        self.owner = owner

    def construct(self, *inputs):
        return self.fn(*inputs)


def run(fn, *arrays, owner=None):
    out = Call(fn, owner)(*[Tensor(np.asarray(a, np.float32)) for a in arrays])
    return tuple(o.asnumpy() for o in out) if isinstance(out, tuple) else out.asnumpy()


def one_hot(labels, n):
    return np.eye(n, dtype=np.float32)[labels].transpose(0, 3, 1, 2)


# NumPy restatements ----------------------------------------------------------------------------------

def np_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def np_l2(x, axis):
    return x / (np.sqrt((x ** 2).sum(axis=axis, keepdims=True)) + np.finfo(np.float64).eps)


def np_contextual(x, y, h=0.1):
    b, c = x.shape[:2]
    mu = y.mean(axis=1, keepdims=True)
    xs = np_l2(x - mu, 1).reshape(b, c, -1)
    ys = np_l2(y - mu, 1).reshape(b, c, -1)
    out = []
    for i in range(b):
        d = 1 - xs[i].T @ ys[i]
        d_rel = d / (d.min(axis=1, keepdims=True) + 1e-3)
        w = np.exp((1 - d_rel) / h)
        a = w / w.sum(axis=1, keepdims=True)
        out.append(-np.log(a.max(axis=1).mean()))
    return np.array(out)


def np_unfold(x, k):
    """Zero-padded k x k neighbourhoods, rows ordered (channel, dy, dx) as PyTorch's ``F.unfold``."""
    b, c, h, w = x.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    rows = [xp[:, :, dy:dy + h, dx:dx + w].reshape(b, c, 1, h * w) for dy in range(k) for dx in range(k)]
    return np.concatenate(rows, 2).reshape(b, c * k * k, h * w)


def resize_2x3(t):
    return nearest_resize(t, (2, 3))


def resize_16x36(t):
    return nearest_resize(t, (16, 36))


def resize_3x3(t):
    return nearest_resize(t, (3, 3))


def weighted_2x3(t, r):
    return (resize_2x3(t) * r).sum()


def weighted_16x36(t, r):
    return (resize_16x36(t) * r).sum()


UNFOLD = Unfold(3)  # native form (slices)
SOFTMAX = Softmax()  # MindSpore's operators


def unfolded_correlation(s, t):
    return correlation(center_normalize(UNFOLD(s)), center_normalize(UNFOLD(t)), 0.01, SOFTMAX)


class WeightedUnfold(nn.Cell):
    def __init__(self, impl, w):
        super().__init__()
        self.unfold = Unfold(3)
        use_conv_impl(self.unfold, impl)
        self.w = Tensor(w)

    def construct(self, x):
        return (self.unfold(x) * self.w).sum()


def correlate_and_warp(t, p, s):
    return warp(correlation(t, p, 0.01, SOFTMAX), s)


# Parameter counts ------------------------------------------------------------------------------------

def test_full_width_parameter_counts_match_the_reference():
    assert count_params(build_correspondence()) == REFERENCE_PARAMS["correspondence"] == 59_315_716
    assert count_params(build_generator()) == REFERENCE_PARAMS["generator"] == 96_664_260
    assert count_params(build_discriminator()) == REFERENCE_PARAMS["discriminator"] == 6_000_772
    vgg = VGG("vgg19", taps=("relu5_4",))
    assert count_params(vgg, trainable_only=False) == REFERENCE_PARAMS["vgg19"] == 20_024_384


def test_discriminator_count_by_hand():
    """Per scale: conv 154->64 k4 (bias), SN convs 64->128->256->512 k4 (no bias), attention on 256
    (1x1 convs 256->32, 256->32, 256->128, 128->256 without bias, gain), conv 512->1 k4 (bias)."""
    per_scale = (154 * 64 * 16 + 64) + (64 * 128 + 128 * 256 + 256 * 512) * 16 \
        + (2 * 256 * 32 + 256 * 128 + 128 * 256 + 1) + (512 * 16 + 1)
    assert 2 * per_scale == count_params(build_discriminator())


def test_the_pytorch_benchmark_restatement_has_the_official_parameter_counts():
    """``bench/torch_cocosnet_step.py`` (the same-run speed reference) builds the official networks' widths."""
    torch = pytest.importorskip("torch")
    import torch_cocosnet_step as bench
    with torch.device("meta"):  # shapes only
        nets = (bench.NoVGGCorrespondence(bench.LABELS), bench.SPADEGenerator(bench.LABELS),
                bench.MultiscaleDiscriminator(3 + bench.LABELS), bench.VGG19())
    counts = tuple(sum(p.numel() for p in net.parameters()) for net in nets)
    assert counts == tuple(REFERENCE_PARAMS[k] for k in ("correspondence", "generator", "discriminator", "vgg19"))


# Positional norm, contextual loss, resizing ----------------------------------------------------------

def test_positional_norm_uses_the_unbiased_channel_variance():
    x = RNG.standard_normal((2, 5, 3, 4)).astype(np.float32) * 3 + 1
    want = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, ddof=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(PositionalNorm2d()(Tensor(x)).asnumpy(), want, rtol=1e-5, atol=1e-5)


def test_contextual_loss_matches_numpy():
    x = RNG.standard_normal((2, 6, 3, 4)).astype(np.float32)
    y = RNG.standard_normal((2, 6, 3, 4)).astype(np.float32)
    got = run(contextual_loss, x, y)
    assert got.shape == (2,)
    np.testing.assert_allclose(got, np_contextual(x.astype(np.float64), y.astype(np.float64)), rtol=1e-4)
    same = run(contextual_loss, y, y)
    assert np.all(same < got)  # an exemplar matches itself better than random features


def test_contextual_loss_rejects_mismatched_features():
    with pytest.raises(ValueError, match="same shape"):
        run(contextual_loss, np.zeros((1, 4, 2, 2)), np.zeros((1, 4, 2, 3)))


def test_nearest_resize_down_and_up():
    x = RNG.standard_normal((1, 2, 8, 12)).astype(np.float32)
    np.testing.assert_array_equal(run(resize_2x3, x), x[:, :, ::4, ::4])
    np.testing.assert_array_equal(run(resize_16x36, x),
                                  np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))
    with pytest.raises(ValueError, match="integer factors"):
        run(resize_3x3, x)
    # gradients of sum(resize(x) * r): the picked values get r (down), each value the sum of its copies' r (up)
    r_down = RNG.standard_normal((1, 2, 2, 3)).astype(np.float32)
    r_up = RNG.standard_normal((1, 2, 16, 36)).astype(np.float32)
    down = ms.grad(Call(weighted_2x3))(Tensor(x), Tensor(r_down)).asnumpy()
    want = np.zeros_like(x)
    want[:, :, ::4, ::4] = r_down
    np.testing.assert_array_equal(down, want)
    up = ms.grad(Call(weighted_16x36))(Tensor(x), Tensor(r_up)).asnumpy()
    np.testing.assert_allclose(up, r_up.reshape(1, 2, 8, 2, 12, 3).sum((3, 5)), rtol=1e-6, atol=1e-6)


# Correlation and warp --------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["native", "matmul"])
def test_unfold_matches_numpy_in_both_forms(impl):
    """Slices (native, exported) and Im2Col (matmul/winograd paths): values, and the gradient of a weighted sum
    (each input value summed over the taps that hold it)."""
    a = RNG.standard_normal((2, 4, 3, 5)).astype(np.float32)
    w = RNG.standard_normal((2, 36, 15)).astype(np.float32)
    net = WeightedUnfold(impl, w)
    assert use_conv_impl(net.unfold, impl) == 0 and net.unfold.matmul == (impl == "matmul")  # switched, not counted
    np.testing.assert_allclose(net.unfold(Tensor(a)).asnumpy(), np_unfold(a, 3), atol=0)
    grad = ms.grad(net)(Tensor(a)).asnumpy()
    eps = 1e-3  # the weighted sum is linear: a central difference per input value is exact up to rounding
    want = np.zeros_like(a, np.float64)
    for i in np.ndindex(a.shape):
        step = np.zeros_like(a, np.float64)
        step[i] = eps
        want[i] = ((np_unfold(a + step, 3) - np_unfold(a - step, 3)) * w).sum() / (2 * eps)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-4)


def test_unfold_and_normalised_correlation_match_numpy():
    a = RNG.standard_normal((2, 4, 3, 5)).astype(np.float32)
    b = RNG.standard_normal((2, 4, 3, 5)).astype(np.float32)

    def centred(u):
        u = u - u.mean(axis=1, keepdims=True)
        return np_l2(u, 1)

    theta, phi = centred(np_unfold(a.astype(np.float64), 3)), centred(np_unfold(b.astype(np.float64), 3))
    want = np_softmax(np.einsum("bdn,bdm->bnm", theta, phi) / 0.01)
    got = run(unfolded_correlation, a, b)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_one_hot_correlation_moves_pixels_exactly():
    src = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)
    perm = RNG.permutation(16)
    corr = np.eye(16, dtype=np.float32)[perm][None]  # output position i takes source position perm[i]
    got = run(warp, corr, src)
    np.testing.assert_array_equal(got, src.reshape(1, 3, 16)[:, :, perm])

    # orthonormal features whose exemplar copy is permuted: softmax(cos / 0.01) is one-hot to fp32
    theta = np.eye(16, dtype=np.float32)[None]
    phi = theta[:, :, np.argsort(perm)]  # phi column perm[i] equals theta column i
    got = run(correlate_and_warp, theta, phi, src)
    np.testing.assert_allclose(got, src.reshape(1, 3, 16)[:, :, perm], atol=1e-6)


@pytest.mark.usefixtures("pynative")
def test_correspondence_forward_matches_numpy_correlation_and_warp():
    label_nc, size = 5, 32
    net = build_correspondence(label_nc=label_nc, ngf=8, corr_channels=8, spade_hidden=8)
    net.set_train(False)
    seg = one_hot(RNG.integers(0, label_nc, (2, size, size)), label_nc)
    ref_seg = one_hot(RNG.integers(0, label_nc, (2, size, size)), label_nc)
    ref = RNG.uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    warp_out, warp_mask, f_seg, f_ref, theta, phi, corr, warp_small = run(net.correspond, seg, ref, ref_seg,
                                                                          owner=net)
    n = (size // 4) ** 2
    assert theta.shape == phi.shape == (2, 9 * 8, n) and corr.shape == (2, n, n)
    for feat in (theta, phi):
        np.testing.assert_allclose(feat.mean(axis=1), 0, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(feat, axis=1), 1, atol=1e-5)
    for feat in (f_seg, f_ref):
        np.testing.assert_allclose(np.linalg.norm(feat, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(corr, np_softmax(np.einsum("bdn,bdm->bnm", theta, phi) / 0.01), atol=1e-5)
    pooled = ref.reshape(2, 3, 8, 4, 8, 4).mean(axis=(3, 5)).reshape(2, 3, n)
    np.testing.assert_allclose(warp_small.reshape(2, 3, n), np.einsum("bnm,bcm->bcn", corr, pooled), atol=1e-5)
    np.testing.assert_array_equal(warp_out, np.repeat(np.repeat(warp_small, 4, axis=2), 4, axis=3))
    small_seg = ref_seg[:, :, ::4, ::4].reshape(2, label_nc, n)
    np.testing.assert_allclose(warp_mask.reshape(2, label_nc, n), np.einsum("bnm,bcm->bcn", corr, small_seg),
                               atol=1e-5)
    np.testing.assert_allclose(warp_mask.sum(axis=1), 1, atol=1e-5)  # soft class probabilities


def np_matching(theta_feat, phi_feat, ref_small, ref_seg_small):
    """CorrelationWarp in float64: (warp_small, warp_mask, corr)."""
    b, _, h, w = ref_small.shape

    def centred(u):
        u = np_unfold(u.astype(np.float64), 3)
        return np_l2(u - u.mean(axis=1, keepdims=True), 1)

    corr = np_softmax(np.einsum("bdn,bdm->bnm", centred(theta_feat), centred(phi_feat)) / 0.01)
    warped = [np.einsum("bnm,bcm->bcn", corr, s.reshape(b, s.shape[1], h * w).astype(np.float64)).reshape(s.shape)
              for s in (ref_small, ref_seg_small)]
    return warped[0], warped[1], corr


@pytest.mark.parametrize("asked", [None, ms.float16, ms.bfloat16])
def test_correlation_runs_in_float32_on_float16_features(asked):
    """float16 features (as under --amp_level) are matched in float32, also after ``to_float`` asked the cell, or
    (as O2 does, one cell at a time) its softmax, for a lower precision: the correlation, the softmax and both warps
    stay float32."""
    cell = CorrelationWarp(0.01, 3)
    if asked is not None:
        cell.to_float(asked)
        cell.softmax.to_float(asked)
    assert cell.fp32 and cell.softmax.fp32 and not (cell.fp16 or cell.bf16 or cell.softmax.fp16 or cell.softmax.bf16)
    theta_feat, phi_feat = (RNG.standard_normal((2, 6, 4, 5)).astype(np.float16) for _ in range(2))
    ref_small = RNG.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float16)
    ref_seg_small = one_hot(RNG.integers(0, 4, (2, 4, 5)), 4).astype(np.float16)
    warp_small, warp_mask, theta, phi, corr = cell(*(Tensor(a) for a in (theta_feat, phi_feat, ref_small,
                                                                            ref_seg_small)))
    assert all(t.dtype == ms.float32 for t in (warp_small, warp_mask, theta, phi, corr))
    want_small, want_mask, want_corr = np_matching(theta_feat, phi_feat, ref_small, ref_seg_small)
    np.testing.assert_allclose(corr.asnumpy(), want_corr, atol=2e-5)
    np.testing.assert_allclose(warp_mask.asnumpy(), want_mask, atol=2e-5)
    np.testing.assert_allclose(warp_small.asnumpy(), want_small, atol=2e-5)


@pytest.mark.parametrize("amp_level", ["O1", "O2"])
def test_mixed_precision_keeps_the_correlation_float32(amp_level):
    """common.train.mixed_precision (the driver's --amp_level) on a narrow correspondence net: the
    convolutions turn float16, the matching cell stays float32, and the correlation equals the float64
    softmax of the returned (float32) matching features."""
    label_nc, size = 5, 32
    net = build_correspondence(label_nc=label_nc, ngf=8, corr_channels=8, spade_hidden=8)
    net.set_train(False)
    mixed_precision(net, amp_level)
    assert net.theta.fp16 and net.adaptive_model_seg.layer1[0].conv.fp16
    assert net.matching.fp32 and not net.matching.fp16
    seg = one_hot(RNG.integers(0, label_nc, (1, size, size)), label_nc)
    ref_seg = one_hot(RNG.integers(0, label_nc, (1, size, size)), label_nc)
    ref = RNG.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    out = Call(net.correspond, net)(*(Tensor(a) for a in (seg, ref, ref_seg)))
    warp_mask, f_seg, theta, phi, corr = out[1], out[2], out[4], out[5], out[6]
    assert corr.dtype == warp_mask.dtype == theta.dtype == ms.float32
    if amp_level == "O2":
        assert f_seg.dtype == ms.float16  # the encoders did run in float16
    theta, phi = theta.asnumpy().astype(np.float64), phi.asnumpy().astype(np.float64)
    # float32 dot products round to ~1e-7 of the logit, which the temperature (1/0.01) amplifies 100x: the
    # softmax may differ by ~5e-5 of its value (float16 logits would differ by ~1e-1)
    np.testing.assert_allclose(corr.asnumpy(), np_softmax(np.einsum("bdn,bdm->bnm", theta, phi) / 0.01),
                               rtol=2e-4, atol=1e-6)
    with pytest.raises(ValueError, match="choose O0, O1 or O2"):
        mixed_precision(net, "O3")


# Self-attention --------------------------------------------------------------------------------------

def test_attention_matches_numpy():
    ch, h, w = 16, 4, 6
    att = Attention(ch, spectral=False)
    att.gamma.set_data(Tensor(0.7, ms.float32))
    mats = {name: getattr(att, name).weight.asnumpy()[:, :, 0, 0].astype(np.float64)
            for name in ("theta", "phi", "g", "o")}
    x = RNG.standard_normal((2, ch, h, w)).astype(np.float32)

    def pool(t):
        return t.reshape(t.shape[0], t.shape[1], h // 2, 2, w // 2, 2).max(axis=(3, 5)).reshape(t.shape[0],
                                                                                              t.shape[1], -1)

    xf = x.astype(np.float64).reshape(2, ch, h * w)
    theta = np.einsum("oc,bcn->bon", mats["theta"], xf)
    phi = pool(np.einsum("oc,bcn->bon", mats["phi"], xf).reshape(2, ch // 8, h, w))
    g = pool(np.einsum("oc,bcn->bon", mats["g"], xf).reshape(2, ch // 2, h, w))
    beta = np_softmax(np.einsum("bdn,bdm->bnm", theta, phi))
    o = np.einsum("oc,bcn->bon", mats["o"], np.einsum("bcm,bnm->bcn", g, beta))
    want = (0.7 * o + xf).reshape(x.shape)
    np.testing.assert_allclose(att(Tensor(x)).asnumpy(), want, rtol=1e-4, atol=1e-4)


# The reference blocks against their PyTorch restatement (bench/torch_cocosnet.py) --------------------

def torch_state(net):
    """Our parameters under the reference's names: a spectral-normalised conv's ``X.conv.weight`` /
    ``X.conv.bias`` are PyTorch's ``X.weight_orig`` / ``X.bias``; every other name is the same (true of the SPADE
    and residual blocks; the discriminator nests its spectral norms one level deeper, see ``cocosnet/src/convert.py``)."""
    import torch
    return {p.name.replace(".conv.weight", ".weight_orig").replace(".conv.bias", ".bias"): torch.from_numpy(p.asnumpy())
            for p in net.get_parameters()}


@pytest.mark.usefixtures("pynative")
def test_spade_and_residual_blocks_match_a_pytorch_restatement():
    torch = pytest.importorskip("torch")
    import torch_cocosnet as official

    x = RNG.standard_normal((2, 16, 8, 8)).astype(np.float32)
    seg = one_hot(RNG.integers(0, 5, (2, 32, 32)), 5)
    ms.set_seed(0)  # the weights and spectral vectors: the same whatever ran before in this process
    ours = SPADEResnetBlock(16, 8, 5, hidden=12)
    ours.set_train(False)
    theirs = official.SPADEResnetBlock(16, 8, 5, 12).eval()
    theirs.load_state_dict(torch_state(ours), strict=True)
    with torch.no_grad():
        want = theirs(torch.from_numpy(x), torch.from_numpy(seg)).numpy()
    # In eval mode sigma = u^T W v from the stored (random) vectors, so the output's scale varies widely with the draw
    # (15 to 560 over 12 seeds): float32 rounding (about 5e-7 of that scale) is judged against it.
    np.testing.assert_allclose(ours(Tensor(x), Tensor(seg)).asnumpy(), want, rtol=1e-4,
                               atol=1e-5 * np.abs(want).max())

    res = ResidualBlock(16)
    res.prelu.weight.set_data(Tensor([0.1], ms.float32))
    theirs = official.ResidualBlock(16).eval()
    theirs.load_state_dict(torch_state(res), strict=True)
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(res(Tensor(x)).asnumpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("pynative")
def test_discriminator_matches_a_pytorch_restatement():
    """The official two-scale D (with its never-called decoder registered, as in ``latest_net_D.pth``), random
    trained-like weights (``torch_cocosnet.randomize``), mapped into ours by the importer's ``reference_to_ours``."""
    torch = pytest.importorskip("torch")
    import torch_cocosnet as official
    from cocosnet.src.convert import reference_to_ours

    x = RNG.standard_normal((2, 8, 64, 64)).astype(np.float32)
    torch.manual_seed(0)
    theirs = official.MultiscaleDiscriminator(8, 8, num_D=2, semantic_nc=5)
    official.randomize(theirs, torch.from_numpy(x), seed=0)
    ours = build_discriminator(label_nc=5, ndf=8)
    arrays = reference_to_ours({k: v.numpy() for k, v in theirs.state_dict().items()}, ours)
    for p in ours.get_parameters():
        p.set_data(Tensor(arrays[p.name], p.dtype))
    ours.set_train(False)
    with torch.no_grad():
        want = theirs(torch.from_numpy(x))
    got = ours(Tensor(x))
    for scale_got, scale_want in zip(got, want):
        for a, b in zip(scale_got, scale_want):
            # float32 rounding through five conv + instance-norm layers, relative to the output scale: up to 1.8e-6
            # of it with these weights (1.6e-4 with our own random u, v, whose sigma can be near 0); a wrong layer
            # differs by O(1)
            b = b.numpy()
            np.testing.assert_allclose(a.asnumpy(), b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))


# Shapes at 256x256 -----------------------------------------------------------------------------------

@pytest.mark.usefixtures("pynative")
def test_every_intermediate_shape_at_256_narrow():
    """ngf/ndf 8 and 12 classes keep the run short; the spatial pipeline is the published one. PyNative: 9 s
    instead of 32 s with three graph compiles (alone on 2 cores)."""
    label_nc, ngf = 12, 8
    corr_net = build_correspondence(label_nc=label_nc, ngf=ngf, corr_channels=16, spade_hidden=16)
    gen = build_generator(label_nc=label_nc, ngf=ngf, spade_hidden=16)
    disc = build_discriminator(label_nc=label_nc, ndf=ngf)
    seg = one_hot(RNG.integers(0, label_nc, (1, 256, 256)), label_nc)
    ref_seg = one_hot(RNG.integers(0, label_nc, (1, 256, 256)), label_nc)
    ref = RNG.uniform(-1, 1, (1, 3, 256, 256)).astype(np.float32)

    outs = run(corr_net.correspond, seg, ref, ref_seg, owner=corr_net)
    assert [o.shape for o in outs] == [(1, 3, 256, 256), (1, label_nc, 64, 64), (1, 4 * ngf, 64, 64),
                                       (1, 4 * ngf, 64, 64), (1, 9 * 16, 4096), (1, 9 * 16, 4096),
                                       (1, 4096, 4096), (1, 3, 64, 64)]
    cond = np.concatenate([outs[0], seg], 1)
    assert cond.shape == (1, 3 + label_nc, 256, 256)
    stages = run(gen.stages, cond, owner=gen)
    assert [s.shape for s in stages] == [
        (1, 16 * ngf, 8, 8), (1, 16 * ngf, 8, 8), (1, 16 * ngf, 16, 16), (1, 16 * ngf, 16, 16),
        (1, 8 * ngf, 32, 32), (1, 4 * ngf, 64, 64), (1, 4 * ngf, 128, 128), (1, 2 * ngf, 128, 128),
        (1, ngf, 256, 256), (1, 3, 256, 256)]
    assert np.all(np.abs(stages[-1]) <= 1 + 1e-4)  # tanh (the CPU kernel's approximation overshoots by ~1e-5)

    scales = disc(Tensor(np.concatenate([seg, stages[-1]], 1)))
    assert [[o.shape for o in s] for s in scales] == [
        [(1, ngf, 128, 128), (1, 2 * ngf, 64, 64), (1, 4 * ngf, 32, 32), (1, 8 * ngf, 31, 31), (1, 1, 30, 30)],
        [(1, ngf, 64, 64), (1, 2 * ngf, 32, 32), (1, 4 * ngf, 16, 16), (1, 8 * ngf, 15, 15), (1, 1, 14, 14)]]


def test_use_conv_impl_gives_both_softmaxes_the_compiled_gradient_and_the_correlation_stays_float32():
    """The attention's softmax (the step's largest tensor, [B, 16384, 4096] at 256x256) and the correlation's
    ([B, 4096, 4096], at the recomputing step's memory peak) are cells of their networks, so ``use_conv_impl`` hands
    them the compiled backward (``common/kernels/activations.cc``: no tensor beside the gradient). A network-wide
    float16 (``to_float``, as O2's) leaves the correlation's float32, and the attention's float16."""
    path = cpu_kernels.library()
    if path is None:
        pytest.skip(cpu_kernels.status())
    gen = build_generator(label_nc=12, ngf=8, spade_hidden=16)
    corr = build_correspondence(label_nc=5, ngf=8, corr_channels=8, spade_hidden=8)
    softmaxes = [cell for net in (gen, corr) for _, cell in net.cells_and_names() if isinstance(cell, Softmax)]
    assert softmaxes == [gen.attn.softmax, corr.matching.softmax] and all(s.custom is None for s in softmaxes)
    use_conv_impl(gen, "winograd")
    use_conv_impl(corr, "winograd")
    assert all(s.library == path and s.custom is not None for s in softmaxes)
    for net in (gen, corr):
        net.to_float(ms.float16)
    assert gen.attn.softmax.fp16 and corr.theta.fp16
    assert corr.matching.softmax.fp32 and not corr.matching.softmax.fp16


class _InputAndWeightGrads(nn.Cell):
    """x -> (d sum(r * net(x)) / dx, the gradients of every trainable weight); ``net`` returns one
    tensor or (D) nested tuples whose last entries are the patch scores."""

    def __init__(self, net, r):
        super().__init__()
        self.net, self.r = net, r
        self.grad = ops.GradOperation(get_all=True, get_by_list=True)
        self.weights = ms.ParameterTuple(net.trainable_params())

    def score(self, x):
        out = self.net(x)
        if isinstance(out, tuple):
            return sum(scale[-1].mean() for scale in out) + (out[0][0] * self.r).sum()
        return (out * self.r).sum()

    def construct(self, x):
        return self.grad(self.score, self.weights)(x)


@pytest.mark.usefixtures("pynative")
def test_label_channels_declared_data_leave_every_needed_gradient_unchanged():
    """G's SPADEs and D's first convolution compute input gradients only for the warped exemplar / image
    channels (``grad_channels``): against the native path (full autodiff), the gradients of every weight and of
    those channels are unchanged on the matmul path (direct sums; tests/test_conv.py checks Winograd's
    ``grad_channels`` layer by layer). Even direct sums differ from native ones by ~1e-6, which can flip a ReLU
    whose input is that close to 0 and move a few gradient entries by far more (one weight draw: 2 of 147,456,
    by 0.24 of ~100), so each gradient must match as a whole (relative L2 error) and in all but 0.1 % of its
    entries; a channel declared wrongly zeroes whole gradients. PyNative: the same bprops without four graph
    compiles (14 s instead of 96 s on 2 cores; the compiled paths: tests/test_conv.py)."""
    label_nc, ngf = 16, 8
    ms.set_seed(11)  # the weight draw: the same whatever ran before in this process
    rng = np.random.default_rng(11)
    image = rng.uniform(-1, 1, (1, 3, 64, 64))
    label = one_hot(rng.integers(0, label_nc, (1, 64, 64)), label_nc)
    for build, x, out_shape, keep in [
            (lambda: build_generator(label_nc=label_nc, ngf=ngf, spade_hidden=16), np.concatenate([image, label], 1),
             (1, 3, 64, 64), slice(0, 3)),
            (lambda: build_discriminator(label_nc=label_nc, ndf=ngf), np.concatenate([label, image], 1),
             (1, ngf, 32, 32), slice(label_nc, label_nc + 3))]:
        native, switched = build(), build()
        ms.load_param_into_net(switched, {p.name: p for p in native.get_parameters()})
        assert use_conv_impl(switched, "matmul") > 0
        r = Tensor(rng.normal(size=out_shape).astype(np.float32))
        (dx_n,), dw_n = _InputAndWeightGrads(native, r)(Tensor(x.astype(np.float32)))
        (dx_s,), dw_s = _InputAndWeightGrads(switched, r)(Tensor(x.astype(np.float32)))
        _assert_close_but_for_rare_flips(dx_s.asnumpy()[:, keep], dx_n.asnumpy()[:, keep])
        assert len(dw_n) == len(dw_s) > 10
        for e, g in zip(dw_n, dw_s):
            _assert_close_but_for_rare_flips(g.asnumpy(), e.asnumpy())


def _assert_close_but_for_rare_flips(got, want):
    assert np.linalg.norm(got - want) <= 1e-3 * np.linalg.norm(want)
    off = ~np.isclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    assert off.mean() <= 1e-3, f"{off.sum()} of {off.size} entries differ"


def test_discriminator_downsample_excludes_padding_from_the_mean():
    disc = build_discriminator(label_nc=1, ndf=8)
    x = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones((6, 6)), 1)
    want = np.zeros((1, 4, 3, 3))
    for i in range(3):
        for j in range(3):
            win = (slice(2 * i, 2 * i + 3), slice(2 * j, 2 * j + 3))
            want[:, :, i, j] = xp[:, :, win[0], win[1]].sum(axis=(2, 3)) / ones[win].sum()
    np.testing.assert_allclose(disc.downsample(Tensor(x)).asnumpy(), want, atol=1e-6)


@pytest.mark.usefixtures("pynative")
def test_composite_equals_chaining_and_rejects_bad_sizes():
    """PyNative (no graph compilation) keeps this wiring check to seconds."""
    label_nc = 4
    corr_net = build_correspondence(label_nc=label_nc, ngf=8, corr_channels=8, spade_hidden=8)
    gen = build_generator(label_nc=label_nc, ngf=8, spade_hidden=8)
    net = CoCosNet(corr_net, gen)
    net.set_train(False)
    seg = Tensor(one_hot(RNG.integers(0, label_nc, (1, 64, 64)), label_nc))
    ref = Tensor(RNG.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32))
    image, warp_out, warp_mask = net.translate(seg, ref, seg)
    assert image.shape == (1, 3, 64, 64) and warp_mask.shape == (1, label_nc, 16, 16)
    np.testing.assert_array_equal(net(seg, ref, seg).asnumpy(), image.asnumpy())
    chained = gen(ops.cat((corr_net(seg, ref, seg)[0], seg), 1))
    np.testing.assert_allclose(image.asnumpy(), chained.asnumpy(), atol=1e-6)
    with pytest.raises(ValueError, match="multiples of 32 and at least 64"):
        gen(Tensor(np.zeros((1, 3 + label_nc, 32, 32), np.float32)))
