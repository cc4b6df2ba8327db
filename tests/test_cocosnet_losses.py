"""CoCosNet objective against NumPy restatements of the reference formulas: the warped-mask loss, the
self-reference weighted L1, the VGG preprocessing of vgg19_conv.pth, and every term of the G and D losses
on a tiny network (64x64, narrow widths, PyNative: no graph compile)."""
import os

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import Tensor, nn

from cocosnet.src.loss import self_reference_l1, warped_mask_loss
from cocosnet.src.model import build_discriminator
from cocosnet.src.train_step import (FM_WEIGHTS, CoCosNetForward, DiscriminatorLoss, GeneratorLoss, VGGFeatures)

RNG = np.random.default_rng(1)
L = 5


pytestmark = pytest.mark.usefixtures("pynative")


def one_hot(labels, n=L):
    return np.eye(n, dtype=np.float32)[labels].transpose(0, 3, 1, 2)


def np_mask_loss(warp_mask, gt, ref):
    """The reference loop: weight 0 for class 0 and for input classes missing from the exemplar."""
    weights = np.ones(gt.shape)
    for i in range(gt.shape[0]):
        for c in np.unique(gt[i]):
            if c not in np.unique(ref[i]) or c == 0:
                weights[i][gt[i] == c] = 0
    picked = np.take_along_axis(warp_mask, gt[:, None], axis=1)[:, 0]
    return (-np.log(picked + 1e-10) * weights).sum() / (weights.sum() + 1e-5)


def test_warped_mask_loss_matches_the_reference_loop():
    gt = RNG.integers(0, L, (2, 4, 4))
    ref = RNG.integers(0, L - 2, (2, 4, 4))  # classes L-2, L-1 never in the exemplar: weight 0 there
    mask = RNG.uniform(0.01, 1, (2, L, 4, 4))
    mask /= mask.sum(axis=1, keepdims=True)
    got = warped_mask_loss(Tensor(mask, ms.float32), Tensor(one_hot(gt)), Tensor(one_hot(ref))).asnumpy()
    np.testing.assert_allclose(got, np_mask_loss(mask, gt, ref), rtol=1e-5)


def test_warped_mask_loss_is_zero_for_a_perfect_warp_and_ignores_class_zero():
    gt = RNG.integers(0, L, (1, 4, 4))
    perfect = warped_mask_loss(Tensor(one_hot(gt)), Tensor(one_hot(gt)), Tensor(one_hot(gt))).asnumpy()
    assert abs(float(perfect)) < 1e-4
    zeros = np.zeros((1, 4, 4), np.int64)
    assert float(warped_mask_loss(Tensor(one_hot(gt)), Tensor(one_hot(zeros)), Tensor(one_hot(zeros))).asnumpy()) == 0


def test_self_reference_l1_weights_samples_by_their_flag():
    fake, real = RNG.normal(size=(3, 2, 4, 4)), RNG.normal(size=(3, 2, 4, 4))
    flags = np.array([1.0, 0.0, 1.0])
    want = np.mean(np.abs(fake - real) * (flags / (flags.sum() + 1e-5))[:, None, None, None])
    got = self_reference_l1(Tensor(fake, ms.float32), Tensor(real, ms.float32), Tensor(flags, ms.float32))
    np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-5)
    none = self_reference_l1(Tensor(fake, ms.float32), Tensor(real, ms.float32), Tensor(np.zeros(3), ms.float32))
    assert float(none.asnumpy()) == 0


class Taps(nn.Cell):
    """Stands in for the VGG trunk: returns what reaches it."""

    def construct(self, x):
        return (x,)


@pytest.mark.parametrize("normalize", ["caffe_bgr", "torch"])
def test_vgg_preprocessing(normalize):
    """caffe_bgr (vgg19_conv.pth): ((x+1)/2 in BGR - BGR mean) * 255; torch: ((x+1)/2 - mean) / std."""
    net = VGGFeatures("vgg16", normalize)
    net.vgg = Taps()
    x = RNG.uniform(-1, 1, (1, 3, 4, 4)).astype(np.float32)
    if normalize == "caffe_bgr":
        want = (((x + 1) / 2)[:, ::-1] - np.array([0.40760392, 0.45795686, 0.48501961]).reshape(1, 3, 1, 1)) * 255
    else:
        want = ((x + 1) / 2 - np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)) / np.array(
            [0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(net(Tensor(x))[0].asnumpy(), want, rtol=1e-5, atol=1e-4)


def np_contextual(x, y, h=0.1):
    b, c = x.shape[:2]
    mu = y.mean(axis=1, keepdims=True)

    def l2(t):
        return t / (np.sqrt((t ** 2).sum(axis=1, keepdims=True)) + np.finfo(np.float64).eps)
    xn, yn = l2(x - mu).reshape(b, c, -1), l2(y - mu).reshape(b, c, -1)
    d = 1 - np.einsum("bci,bcj->bij", xn, yn)
    d_rel = d / (d.min(axis=-1, keepdims=True) + 1e-3)
    w = np.exp((1 - d_rel) / h)
    a = w / w.sum(axis=-1, keepdims=True)
    return -np.log(a.max(axis=-1).mean(axis=1))


def np_pool2(t):
    b, c, h, w = t.shape
    return t.reshape(b, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def test_generator_and_discriminator_losses_match_numpy():
    """Every weighted term of L_G and L_D, recomputed in NumPy from D's and the VGG's own outputs."""
    b, s = 2, 64
    netD = build_discriminator(L, ndf=4)
    vgg = VGGFeatures("vgg16", "torch")
    for p in vgg.get_parameters():
        p.set_data(Tensor(RNG.normal(0, 0.05, p.shape).astype(np.float32)))
    seg, ref_seg = one_hot(RNG.integers(0, L, (b, s, s))), one_hot(RNG.integers(0, L, (b, s, s)))
    fake, ref, real = (RNG.uniform(-1, 1, (b, 3, s, s)).astype(np.float32) for _ in range(3))
    warp_mask = RNG.uniform(0.01, 1, (b, L, 16, 16)).astype(np.float32)
    warp_mask /= warp_mask.sum(axis=1, keepdims=True)
    f_seg, f_real = RNG.normal(size=(2, b, 8, 16, 16)).astype(np.float32)
    flags = np.array([1.0, 0.0], np.float32)
    weights = dict(weight_gan=10.0, lambda_feat=10.0, lambda_vgg=10.0, fm_ratio=0.1, weight_perceptual=0.01,
                   ctx_w=1.0, weight_align=10.0, weight_mask=100.0)
    g_loss = GeneratorLoss(netD, vgg, **weights)
    out = tuple(Tensor(t) for t in (fake, fake, warp_mask, f_seg, f_real))
    batch = tuple(Tensor(t) for t in (seg, ref, ref_seg, real, flags))
    got = [float(t.asnumpy()) for t in g_loss(out, *batch)]
    d_got = [float(t.asnumpy()) for t in DiscriminatorLoss(netD, 10.0)(out, *batch)]

    d_fake = [tuple(t.asnumpy() for t in scale) for scale in netD(Tensor(np.concatenate([seg, fake], 1)))]
    d_real = [tuple(t.asnumpy() for t in scale) for scale in netD(Tensor(np.concatenate([seg, real], 1)))]
    gan = -np.mean([f[-1].mean() for f in d_fake]) * 10
    feat = sum(np.abs(f[j] - r[j]).mean() for f, r in zip(d_fake, d_real) for j in range(4)) / 2 * 10
    vf, vr, ve = ([t.asnumpy() for t in vgg(Tensor(x))] for x in (fake, real, ref))
    sw = (flags / (flags.sum() + 1e-5))[:, None, None, None]
    fm = sum(w * np.mean(np.abs(f - r) * sw) for w, f, r in zip(FM_WEIGHTS, vf, vr)) * 10 * 0.1
    perc = np.mean((vf[-1] - vr[-1]) ** 2) * 0.01
    ctx = (8 * np_contextual(vf[4], ve[4]).mean() + 4 * np_contextual(vf[3], ve[3]).mean()
           + 2 * np_contextual(np_pool2(vf[2]), np_pool2(ve[2])).mean()) * 10
    align = np.abs(f_seg - f_real).mean() * 10
    mask = np_mask_loss(warp_mask, seg[:, :, ::4, ::4].argmax(1), ref_seg[:, :, ::4, ::4].argmax(1)) * 100
    want = [gan, feat, fm, perc, ctx, align, mask]
    np.testing.assert_allclose(got[1:], want, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(got[0], sum(want), rtol=2e-4)
    hinge_fake = np.mean([np.maximum(1 + f[-1], 0).mean() for f in d_fake]) * 10
    hinge_real = np.mean([np.maximum(1 - r[-1], 0).mean() for r in d_real]) * 10
    np.testing.assert_allclose(d_got, [hinge_fake + hinge_real, hinge_fake, hinge_real], rtol=1e-5)


def test_forward_feeds_the_warped_exemplar_then_the_label_map_to_the_generator():
    from cocosnet.src.model import build_correspondence, build_generator
    corr = build_correspondence(L, ngf=4, corr_channels=8, spade_hidden=8)
    netG = build_generator(L, ngf=4, spade_hidden=8)
    seg, ref_seg = one_hot(RNG.integers(0, L, (1, 64, 64))), one_hot(RNG.integers(0, L, (1, 64, 64)))
    ref, real = (Tensor(RNG.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)) for _ in range(2))
    fake, warp_out, warp_mask, f_seg, f_real = CoCosNetForward(corr, netG)(Tensor(seg), ref, Tensor(ref_seg), real)
    want_warp, want_mask = corr(Tensor(seg), ref, Tensor(ref_seg))
    np.testing.assert_allclose(warp_out.asnumpy(), want_warp.asnumpy(), atol=1e-6)
    np.testing.assert_allclose(warp_mask.asnumpy(), want_mask.asnumpy(), atol=1e-6)
    want_fake = netG(ms.ops.cat((want_warp, Tensor(seg)), 1))
    np.testing.assert_allclose(fake.asnumpy(), want_fake.asnumpy(), atol=1e-5)
    np.testing.assert_allclose(f_real.asnumpy(), corr.encode_image(real).asnumpy(), atol=1e-6)
    np.testing.assert_allclose(f_seg.asnumpy(), corr.encode_label(Tensor(seg)).asnumpy(), atol=1e-6)


def test_ttur_schedule_by_hand():
    """lr 2e-4, 100 + 100 epochs: G 1e-4 and D 4e-4 through epoch 100 (0-based 0..100), then minus 1/100 each."""
    from cocosnet.src.utils import ttur_rates
    assert ttur_rates(0, 2e-4, 100, 100) == pytest.approx({"opt_G": 1e-4, "opt_D": 4e-4})
    assert ttur_rates(100, 2e-4, 100, 100) == pytest.approx({"opt_G": 1e-4, "opt_D": 4e-4})
    assert ttur_rates(150, 2e-4, 100, 100) == pytest.approx({"opt_G": 0.5e-4, "opt_D": 2e-4})
    assert ttur_rates(199, 2e-4, 100, 100) == pytest.approx({"opt_G": 1e-6, "opt_D": 4e-6})


def test_demo_config_and_bad_sizes():
    from common.config import ConfigError
    from common.drivers import parse
    from cocosnet.src.spec import CoCosNetSpec
    spec = CoCosNetSpec()
    cfg = parse(spec, ["--demo_ngf=4"])
    notes = spec.check(cfg, None, demo=True)
    assert (cfg.size, cfg.load_size, cfg.ngf, cfg.label_nc, cfg.data_format) == (64, 72, 4, 8, "folders")
    assert (cfg.recompute, cfg.trim_heap) == (False, 0.0)  # the demo's small steps: single pass, no trimming
    assert "demo data" in notes[0] and "recompute=False" in notes[0]
    kept = parse(spec, ["--size=128", "--demo_recompute=true"])
    spec.check(kept, None, demo=True)
    assert (kept.size, kept.load_size, kept.recompute, kept.trim_heap) == (128, 144, True, 0.0)
    full = parse(spec, [])
    spec.check(full, None, demo=False)  # the reference size: recompute and heap trimming on (the memory target)
    assert (full.size, full.recompute, full.trim_heap) == (256, True, 0.2)
    with pytest.raises(ConfigError, match="multiple of 32"):
        spec.check(parse(spec, ["--size=100"]), None, demo=False)
    with pytest.raises(ConfigError, match="hard <= real"):
        spec.check(parse(spec, ["--hard_reference_probability=0.8"]), None, demo=False)


@pytest.mark.parametrize("entry", ["train", "predict"])
def test_bf16_is_refused_since_the_correlation_stays_float32(tmp_path, entry):
    from common import drivers
    from common.config import ConfigError
    from cocosnet.src.spec import CoCosNetSpec
    spec = CoCosNetSpec()
    cfg = drivers.parse(spec, [f"--output_dir={tmp_path}", "--precision=bf16"])
    with pytest.raises(ConfigError, match=r"--precision=bf16: CoCosNet's correlation stays float32.*--precision=f32"):
        getattr(drivers, entry)(spec, cfg)
    assert not os.listdir(tmp_path)  # refused before anything ran or was written
