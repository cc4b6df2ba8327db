"""OSMIS networks: exact parameter counts of the reference, branch shapes, losses, EMA, augmentation."""
import contextlib
import itertools

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import Tensor, nn

from common.layers import count_params
from common.train import EMA
from osmis.src.augment import ContentFA, DiffAugment, LayoutFA, LayoutSlots, sample_affine, sample_layout_fa
from osmis.src.config import layout_sizes
from osmis.src.loss import DiversityLoss, class_weights, weighted_cross_entropy
from osmis.src.model import Discriminator, FlatRows, Generator


# parameter counts the official code prints (spectral-norm weight once, u/v not counted)
COUNTS = [
    ("320x320 OSMIS C=3", (5, 5), 7, 7, 3, 3, 6_051_288, 2_443_581),
    ("320x320 SIV-GAN", (5, 5), 7, 7, 3, 0, 6_050_421, 1_256_497),
    ("192x320 OSMIS C=3", (3, 5), 7, 7, 3, 3, 5_887_448, 2_443_581),
    ("64x64 OSMIS C=3", (4, 4), 5, 6, 2, 3, 3_398_610, 1_705_580),
    ("64x64 SIV-GAN", (4, 4), 5, 6, 2, 0, 3_397_743, 649_568),
]


@pytest.mark.parametrize("name, noise, g, d, d0, c, n_g, n_d", COUNTS)
def test_parameter_counts(name, noise, g, d, d0, c, n_g, n_d):
    assert count_params(Generator(noise, g, c)) == n_g
    assert count_params(Discriminator(d, d0, c)) == n_d


def test_too_narrow_discriminator_is_refused_by_name():
    """ch_D below 4 leaves the lower image scales' from_rgb layers no channel: refused naming the key."""
    Discriminator(3, 1, ch_D=2)
    with pytest.raises(ValueError, match="ch_D=2: .*use --ch_D=4 or more"):
        Discriminator(5, 2, ch_D=2)


@pytest.mark.usefixtures("pynative")
def test_shapes_320_every_branch():
    """320x320, G=7, D=7, D0=3 at ch 4 (channels scale with ch/32; spatial sizes as the full model)."""
    b, c, ch = 2, 3, 4
    net_g = Generator((5, 5), 7, c, ch_G=ch)
    net_g.set_train(False)
    out = net_g(Tensor(np.random.RandomState(0).standard_normal((b, 64, 1, 1)).astype(np.float32)))
    sizes = [5, 10, 20, 40, 80, 160, 320]
    chans = [x * ch // 32 for x in (256, 256, 256, 256, 128, 64, 32)]
    assert [tuple(x.shape) for x in out[:7]] == [(b, 3, s, s) for s in sizes]
    assert [tuple(x.shape) for x in out[7:14]] == [(b, k, s, s) for k, s in zip(chans, sizes)]
    mask = out[14].asnumpy()
    assert mask.shape == (b, c, 320, 320) and np.allclose(mask.sum(axis=1), 1, atol=1e-5)
    net_d = Discriminator(7, 3, c, ch_D=ch, batch_size=b)
    net_d.set_train(False)
    low, y = net_d.low_level(tuple(out[4:7]))
    assert [tuple(x.shape) for x in low] == [(b, 1, 160, 160), (b, 1, 80, 80), (b, 1, 40, 40)]
    assert tuple(y.shape) == (b, 256 * ch // 32, 40, 40)
    hard = Tensor(np.eye(c, dtype=np.float32)[np.random.RandomState(1).randint(0, c, (b, 40, 40))].transpose(0, 3, 1, 2))
    low, content, layout = net_d(tuple(out[4:7]), hard)
    assert [tuple(x.shape) for x in content] == [(c * b, c + 1, 1, 1)] * 4
    assert [tuple(x.shape) for x in layout] == [(b, 1, s, s) for s in (20, 10, 5, 2)]
    assert layout_sizes((320, 320), 7, 3) == [(20, 20), (10, 10), (5, 5), (2, 2)]
    siv = Discriminator(7, 3, 0, ch_D=ch, batch_size=b)
    _, content, _ = siv(tuple(out[4:7]))
    assert [tuple(x.shape) for x in content] == [(b, 1, 1, 1)] * 4


@pytest.mark.parametrize("kernels", ["compiled", "operators"])
def test_diversity_loss_against_numpy(kernels):
    """Value and gradient (sign of each difference, 0 where two samples tie) on both forms."""
    from common import cpu_kernels
    rng = np.random.RandomState(0)
    feats = [rng.standard_normal((5, 3, s, s)).astype(np.float32) for s in (2, 4, 8, 15)]  # 675 values: 2 blocks
    feats[1][2, :, :2] = feats[1][4, :, :2]  # ties
    loss = DiversityLoss(5)
    if kernels == "compiled":
        if cpu_kernels.library() is None:
            pytest.skip(cpu_kernels.status())
        loss.pairwise.use_library(cpu_kernels.library())
    assert (loss.pairwise.custom is not None) == (kernels == "compiled")
    pairs = list(itertools.combinations(range(5), 2))
    scale = -2 / (4 * 3)
    ours = float(loss([Tensor(f) for f in feats]).asnumpy())
    total = sum(np.abs(f[k] - f[m]).mean() for f in feats for k, m in pairs)
    assert ours == pytest.approx(scale * total, rel=1e-5)

    class FourScales(nn.Cell):
        def __init__(self):
            super().__init__()
            self.loss = loss

        def construct(self, a, b, c, d):
            return self.loss((a, b, c, d))

    grads = ms.grad(FourScales(), grad_position=(0, 1, 2, 3))(*[Tensor(f) for f in feats])
    assert len(grads) == 4
    for f, g in zip(feats, grads):
        want = np.zeros_like(f)
        for k, m in pairs:
            want[k] += np.sign(f[k] - f[m]) * scale / f[0].size
            want[m] -= np.sign(f[k] - f[m]) * scale / f[0].size
        np.testing.assert_allclose(g.asnumpy(), want, rtol=1e-5, atol=1e-7)


def test_weighted_cross_entropy_against_numpy():
    rng = np.random.RandomState(0)
    c, b = 3, 2
    logits = rng.standard_normal((c * b, c + 1, 1, 1)).astype(np.float32)
    mask = np.zeros((b, c, 4, 4), np.float32)
    mask[:, 0] = 1
    mask[0, 0, :2], mask[0, 1, :2] = 0, 1  # class 2 absent: weight 0
    w = class_weights(Tensor(mask)).asnumpy()
    assert np.allclose(w, [1 / 24, 1 / 8, 0, 1])
    target = np.repeat(np.arange(c), b)
    onehot = np.eye(c + 1, dtype=np.float32)[target]
    ours = float(weighted_cross_entropy(Tensor(logits), Tensor(onehot), Tensor(w)).asnumpy())
    x = logits[:, :, 0, 0].astype(np.float64)
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    nll = -logp[np.arange(c * b), target]
    assert ours == pytest.approx((w[target] * nll).sum() / w[target].sum(), rel=1e-5)


def test_ema_update_math():
    net, ema = nn.Dense(3, 2), nn.Dense(3, 2)
    for p in ema.get_parameters():
        p.name = "ema." + p.name
    a = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    e = {p.name: p.asnumpy().copy() for p in ema.get_parameters()}
    hook = EMA(net, ema, decay=0.9)
    hook()
    for p in ema.get_parameters():
        assert np.allclose(p.asnumpy(), 0.9 * e[p.name] + 0.1 * a[p.name[4:]], atol=1e-6)


def test_identity_augmentation_is_exact():
    x = np.random.RandomState(0).rand(2, 3, 8, 12).astype(np.float32)
    theta = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (2, 1, 1))
    (y,) = DiffAugment()((Tensor(x),), Tensor(theta))
    assert np.abs(y.asnumpy() - x).max() < 1e-5


def test_augmentation_keeps_image_and_mask_aligned():
    """A mask-painted image, augmented with its mask at two scales, stays painted by the augmented mask."""
    rng = np.random.RandomState(3)
    h, w, c, b = 32, 48, 3, 4
    ids = np.zeros((b, h, w), np.int64)
    ids[:, 8:20, 10:30], ids[:, 22:30, 5:15] = 1, 2
    colours = np.array([[-1, -1, -1], [1, -1, 1], [-1, 1, 1]], np.float32)
    image = colours[ids].transpose(0, 3, 1, 2)
    mask = np.eye(c, dtype=np.float32)[ids].transpose(0, 3, 1, 2)
    small = image.reshape(b, 3, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    theta = np.stack([sample_affine(rng, 1.0, h, w) for _ in range(b)])
    assert not np.allclose(theta, theta[0])  # every sample its own transform
    out_small, out_image, out_mask = [x.asnumpy() for x in DiffAugment()(
        (Tensor(small), Tensor(image), Tensor(mask)), Tensor(theta))]
    sure = out_mask.max(axis=1) > 0.999  # away from class borders
    assert sure.mean() > 0.5
    painted = colours[out_mask.argmax(axis=1)].transpose(0, 3, 1, 2)
    assert np.abs(out_image - painted).max(axis=1)[sure].max() < 1e-3
    up = out_small.repeat(2, axis=2).repeat(2, axis=3)
    inner = sure & (np.abs(out_image - up).max(axis=1) < 10)
    assert np.abs(out_image - up).max(axis=1)[inner].mean() < 0.25  # the low scale follows the same map


def test_feature_augmentation_pairs():
    b, ch = 5, 6
    y = np.arange(b * ch, dtype=np.float32).reshape(b, ch, 1, 1)
    mix = np.zeros((b, ch + 1), np.float32)
    mix[:, 1], mix[2, 3] = 1, 1  # each pair's first sample picks its channels
    mix[0, ch] = 1  # sample 0's draw fires mixing for the batch (the others' flags are not read)
    drop = np.zeros((b, ch), np.float32)
    drop[0, 4] = 1
    out = ContentFA(b)(Tensor(y), Tensor(mix), Tensor(drop)).asnumpy()
    want = y.copy()
    want[0, 1], want[2, 1], want[2, 3] = y[1, 1], y[3, 1], y[3, 3]  # copied from the pair's second sample
    want[:, 4] = 0
    assert np.array_equal(out, want)
    mix[0, ch], mix[1:, ch] = 0, 1  # sample 0's draw does not fire: no pair mixes
    out = ContentFA(b)(Tensor(y), Tensor(mix), Tensor(drop)).asnumpy()
    want = y.copy()
    want[:, 4] = 0
    assert np.array_equal(out, want)
    f = np.random.RandomState(0).rand(b, 2, 4, 4).astype(np.float32)
    slots = LayoutSlots(0)
    draws = np.zeros((b, slots.size), np.float32)
    draws[0, slots.swap_fires], draws[0, slots.swap_rects][:4] = 1, (1, 3, 1, 3)  # rows 1-2, columns 1-2
    draws[1, slots.swap_fires], draws[1, slots.swap_rects][:4] = 1, (0, 1, 0, 1)  # the pair's first sample decides
    draws[2, slots.swap_rects][:4] = (0, 4, 0, 4)  # not fired
    swapped = LayoutFA(b)(Tensor(f), Tensor(draws), None).asnumpy()
    want = f.copy()
    want[0, :, 1:3, 1:3], want[1, :, 1:3, 1:3] = f[1, :, 1:3, 1:3], f[0, :, 1:3, 1:3]
    assert np.array_equal(swapped, want)


def _torch_sn_conv(torch, sn):
    """The inference-mode convolution of a SpectralNorm cell as a torch function (weight W / u^T W v)."""
    w = sn.conv.weight.asnumpy().astype(np.float64)
    sigma = sn.weight_u.asnumpy() @ w.reshape(w.shape[0], -1) @ sn.weight_v.asnumpy()
    weight = torch.from_numpy((w / sigma).astype(np.float32))
    bias = torch.from_numpy(sn.conv.bias.asnumpy()) if sn.conv.has_bias else None
    return lambda x: torch.nn.functional.conv2d(x, weight, bias, padding=w.shape[-1] // 2)


def test_blocks_match_the_reference_order_in_torch():
    """G_block (shortcut convolved before upsampling) and D_block (one pooling of the summed paths)
    against the reference's order of operations restated in torch."""
    torch = pytest.importorskip("torch")
    from osmis.src.model import D_block, G_block
    ms.set_seed(0)  # the blocks' initial weights: without a seed they depended on the tests run before
    f = torch.nn.functional
    lrelu = lambda t: f.leaky_relu(t, 0.2)  # noqa: E731
    rng = np.random.default_rng(0)
    g = G_block(6, 4, "none", first=False)
    d = D_block(4, 6, "none")
    for net in (g, d):
        net.set_train(False)
    c1, c2, sc = (_torch_sn_conv(torch, c) for c in (g.conv1, g.conv2, g.conv_sc))
    x = rng.standard_normal((2, 6, 3, 5)).astype(np.float32)
    up = lambda t: f.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
    t = torch.from_numpy(x)
    want = (sc(up(t)) + c2(lrelu(c1(up(lrelu(t)))))).numpy()
    # float32 rounding scales with the outputs (|y| up to ~80 here): spectral norm may divide before or
    # after the convolution (SpectralNorm.scales_output), so the tolerance is relative to the largest value
    np.testing.assert_allclose(g(Tensor(x)).asnumpy(), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    c1, c2, sc = (_torch_sn_conv(torch, c) for c in (d.conv1, d.conv2, d.conv_sc))
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)  # odd height: the pooling floors
    t = torch.from_numpy(x)
    want = (f.avg_pool2d(c2(lrelu(c1(lrelu(t)))), 2) + f.avg_pool2d(sc(t), 2)).numpy()
    np.testing.assert_allclose(d(Tensor(x)).asnumpy(), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def _loss_cell(warmup):
    from osmis.src.loss import GeneratorLoss
    from osmis.src.model import TrainingOutputs
    arch = {"num_blocks_g": 5, "num_blocks_d0": 2, "num_blocks_d": 4, "num_mask_channels": 3,
            "low_level_size": (2, 2)}
    net_d = Discriminator(4, 2, 3, ch_D=8, batch_size=2)
    outputs = TrainingOutputs(Generator((1, 1), 5, 3, ch_G=2), 2, (16, 16))
    return GeneratorLoss(outputs, net_d, arch, 2, warmup, 0.15), net_d


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_flat_rows_values_and_gradient_by_hand(mode):
    """FlatRows' written-out backward: each piece's gradient lands in its columns, zeros for the piece the loss
    does not use."""
    from common.runtime import eager
    shapes, b = [(2, 1, 3), (1, 2, 2), (3, 1, 1)], 2
    flat = np.random.default_rng(0).standard_normal((b, 13)).astype(np.float32)
    weights = [np.arange(1, 1 + b * 6, dtype=np.float32).reshape(b, 2, 1, 3), np.full((b, 1, 2, 2), -2, np.float32)]

    class Loss(nn.Cell):
        def __init__(self):
            super().__init__()
            self.rows, self.w0, self.w1 = FlatRows(shapes), Tensor(weights[0]), Tensor(weights[1])

        def construct(self, x):
            pieces = self.rows(x)
            return (pieces[0] * self.w0).sum() + (pieces[1] * self.w1).sum()

    with eager() if mode == "pynative" else contextlib.nullcontext():
        got = FlatRows(shapes)(Tensor(flat))
        assert [tuple(x.shape) for x in got] == [(b,) + s for s in shapes]
        for x, start, stop, shape in zip(got, (0, 6, 10), (6, 10, 13), shapes):
            np.testing.assert_array_equal(x.asnumpy(), flat[:, start:stop].reshape((b,) + shape))
        want = np.zeros_like(flat)
        want[:, :6] = weights[0].reshape(b, 6)
        want[:, 6:10] = weights[1].reshape(b, 4)
        np.testing.assert_array_equal(ms.grad(Loss())(Tensor(flat)).asnumpy(), want)


def test_fake_mask_bernoulli_then_argmax_with_straight_through_gradient():
    soft = np.array([0.7, 0.2, 0.1], np.float32)[None, :, None, None] * np.ones((2, 3, 2, 2), np.float32)
    bern = np.zeros((2, 3, 2, 2), np.float32) + np.array([0.9, 0.1, 0.05], np.float32)[None, :, None, None]
    cell, net_d = _loss_cell(warmup=10)
    hard = cell.hard_fake_mask(Tensor(soft), Tensor(bern)).asnumpy()
    assert np.allclose(hard[:, :, 0, 0], [[0, 1, 1], [0, 1, 1]])  # u < p: class 0 off, 1 and 2 on
    net_d.iteration.set_data(Tensor(10.0, net_d.iteration.dtype))
    hard = cell.hard_fake_mask(Tensor(soft), Tensor(bern)).asnumpy()
    assert np.allclose(hard[:, :, 0, 0], [[1, 0, 0], [1, 0, 0]])  # after the warm-up: one-hot argmax
    weights = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)

    class Weighted(nn.Cell):
        def __init__(self):
            super().__init__()
            self.cell, self.bern, self.weights = cell, Tensor(bern), Tensor(weights)

        def construct(self, s):
            return (self.cell.hard_fake_mask(s, self.bern) * self.weights).sum()

    grad = ms.grad(Weighted())(Tensor(soft)).asnumpy()
    assert np.allclose(grad, weights)  # straight through: d hard / d soft = identity


def test_adversarial_branch_weights_against_numpy():
    cell, _ = _loss_cell(warmup=10)
    rng = np.random.RandomState(0)
    low = (rng.standard_normal((2, 1, 4, 4)).astype(np.float32),)
    layout = tuple(rng.standard_normal((2, 1, s, s)).astype(np.float32) for s in (2, 1))
    content = tuple(rng.standard_normal((6, 4, 1, 1)).astype(np.float32) for _ in range(2))
    mask = np.zeros((2, 3, 4, 4), np.float32)
    mask[:, 0], mask[0, 2, :1], mask[0, 0, :1] = 1, 1, 0
    as_t = lambda xs: tuple(Tensor(x) for x in xs)  # noqa: E731
    l_low, l_con, l_lay = [float(v.asnumpy()) for v in cell.adversarial((as_t(low), as_t(content), as_t(layout)),
                                                                        False, Tensor(mask))]

    def bce(x, t):
        return np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))))
    assert l_low == pytest.approx(bce(low[0], 0) / 4, rel=1e-5)
    assert l_lay == pytest.approx(sum(bce(x, 0) for x in layout) * 0.5 / 4, rel=1e-5)
    ce = 0.0
    for x in content:  # D on fakes: every row targets the 'fake' class 3 with weight 1
        z = x[:, :, 0, 0].astype(np.float64)
        ce += np.mean(np.log(np.exp(z).sum(1)) - z[:, 3])
    assert l_con == pytest.approx(ce * 0.5 / 4, rel=1e-5)


def test_segmentation_transfer_scores():
    from osmis.src.segmentation import transfer_scores
    ids = np.zeros((4, 16, 24), np.int64)
    ids[:, 4:12, 6:18], ids[:, 12:, :6] = 1, 2
    colours = np.array([[20, 20, 20], [220, 30, 30], [30, 220, 30]], np.uint8)
    good = transfer_scores(colours[ids], ids, colours[ids], ids, 3, 60, batch=2, lr=3e-3)
    assert good == {"pixel_acc": 1.0, "mean_iou": 1.0}
    swapped = transfer_scores(colours[ids], ids, colours[ids], np.where(ids == 1, 2, np.where(ids == 2, 1, ids)), 3,
                              60, batch=2, lr=3e-3)
    assert swapped["mean_iou"] < 0.5  # masks that do not follow the images score low


def test_class_frequency_scores_by_hand():
    from osmis.src.segmentation import class_frequency_scores
    train = np.zeros((1, 4, 5), np.int64)
    train[0, :, :2] = 1  # 12 pixels of class 0, 8 of class 1
    gen = np.zeros((2, 2, 5), np.int64)
    gen[0, 0, 0] = 1
    gen[1] = 3  # 9 of class 0, 1 of class 1, 10 of class 3 (over 20 pixels)
    scores = class_frequency_scores(gen, train, 4)
    assert scores["classes_missing"] == 0 and scores["classes_extra"] == 1
    assert scores["class_frequency_l1"] == pytest.approx(abs(9 / 20 - 12 / 20) + abs(1 / 20 - 8 / 20) + 10 / 20)
    assert class_frequency_scores(train, train, 4)["class_frequency_l1"] == 0.0
    assert class_frequency_scores(np.full((1, 2, 2), 2), train, 4) == {"class_frequency_l1": 2.0,
                                                                       "classes_missing": 2, "classes_extra": 1}
    with pytest.raises(ValueError, match="mask class id 4 >= num_classes=4"):
        class_frequency_scores(np.full((1, 2, 2), 4), train, 4)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_d_step_runs_reals_and_fakes_as_one_low_level_batch(norm, pynative):
    """The D step's joint low-level pass equals the reference's two calls: fakes and every spectral-norm vector
    exactly; reals equal one call after a single extra low-level iteration (both halves use the second estimate
    of sigma). With batch norm the two calls stay separate (everything equal, running statistics included).
    D's parameter names stay its own. In PyNative (three graph compiles took 40 s; test_osmis_train's resume test
    shows that the compiled train step and PyNative's give the same losses)."""
    from common.spectral_norm import SpectralVectors
    from osmis.src.loss import DiscriminatorLoss
    from osmis.src.model import TrainingOutputs
    b, c = 2, 3
    arch = {"num_blocks_g": 5, "num_blocks_d0": 2, "num_blocks_d": 4, "num_mask_channels": c,
            "low_level_size": (4, 4), "norm_D": norm}
    nets = [Discriminator(4, 2, c, ch_D=8, norm=norm, batch_size=b) for _ in range(3)]
    names = [p.name for p in nets[0].get_parameters()]
    for net in nets[1:]:
        for p, q in zip(nets[0].get_parameters(), net.get_parameters()):
            q.set_data(p.data.copy())
    outputs = TrainingOutputs(Generator((1, 1), 5, c, ch_G=2), 2, (16, 16))
    joint = DiscriminatorLoss(outputs, nets[1], arch, b, 10)
    assert [p.name for p in nets[1].get_parameters()] == names
    rng = np.random.RandomState(0)
    reals = tuple(Tensor(rng.standard_normal((b, 3, s, s)).astype(np.float32)) for s in (8, 16))
    fakes = tuple(Tensor(rng.standard_normal((b, 3, s, s)).astype(np.float32)) for s in (8, 16))
    masks = [Tensor(np.eye(c, dtype=np.float32)[rng.randint(0, c, (b, 4, 4))].transpose(0, 3, 1, 2)) for _ in range(2)]
    ch = nets[0].feature_channels
    fa = (Tensor((rng.rand(b, ch + 1) < 0.5).astype(np.float32)), Tensor((rng.rand(b, ch) < 0.2).astype(np.float32)),
          Tensor(np.stack([sample_layout_fa(rng, 0.9, 4, 4, c) for _ in range(b)])))

    class TwoCalls(nn.Cell):
        def __init__(self, net, *, extra_iteration):
            super().__init__(auto_prefix=False)
            self.net, self.extra = net, extra_iteration
            if extra_iteration:
                self.vectors = SpectralVectors(net.low_level_cells(), take_over=False)

        def construct(self, reals, fakes, real_mask, fake_mask, fa):
            if self.extra:
                iterated = self.vectors.iterate()
                reals = tuple(ms.ops.depend(x, iterated) for x in reals)
            return self.net(reals, real_mask, fa), self.net(fakes, fake_mask)

    class Joint(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.loss = joint

        def construct(self, reals, fakes, real_mask, fake_mask, fa):
            return self.loss.discriminate(reals, fakes, real_mask, fake_mask, fa)

    cells = [TwoCalls(nets[0], extra_iteration=False), Joint(), TwoCalls(nets[2], extra_iteration=True)]
    results = []
    for cell in cells:
        cell.set_train()
        results.append(cell(reals, fakes, masks[0], masks[1], fa))
    arrays = [[[x.asnumpy() for part in out for x in part] for out in r] for r in results]  # [run][reals/fakes]
    for x, y in zip(arrays[1][1], arrays[0][1]):
        assert np.allclose(x, y, rtol=1e-5, atol=1e-6)
    for x, y in zip(arrays[1][0], arrays[2 if norm == "none" else 0][0]):
        assert np.allclose(x, y, rtol=1e-5, atol=1e-6)
    states = [[p.asnumpy() for p in net.get_parameters() if not p.requires_grad] for net in nets[:2]]
    assert len(states[0]) > (1 if norm == "none" else 20)  # the u/v vectors (and running statistics)
    for x, y in zip(*states):
        assert np.allclose(x, y, atol=1e-6)
