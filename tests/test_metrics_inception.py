"""InceptionV3 (FID layout) loading by pt_inception names, pooling semantics, FID/KID/IS and SIFID plumbing."""
import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import nn, ops

from common.metrics.fid import InceptionMetrics
from common.metrics.inception import InceptionV3, _avg_pool, load_inception, to_inception_input
from common.metrics.sifid import SIFID, sifid_from_features
from common.metrics.frechet import frechet_distance, inception_score, kernel_inception_distance

RNG = np.random.RandomState(0)

# (pt_inception-2015-12-05 key, shape) as in pytorch-fid / torchvision's Inception3
PT_INCEPTION_KEYS = [
    ("Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)), ("Conv2d_1a_3x3.bn.running_var", (32,)),
    ("Mixed_5b.branch_pool.conv.weight", (32, 192, 1, 1)), ("Mixed_6b.branch7x7_2.conv.weight", (128, 128, 1, 7)),
    ("Mixed_6e.branch7x7dbl_5.conv.weight", (192, 192, 1, 7)), ("Mixed_7a.branch3x3_2.conv.weight", (320, 192, 3, 3)),
    ("Mixed_7c.branch3x3dbl_3b.conv.weight", (384, 384, 3, 1)), ("fc.weight", (1008, 2048)), ("fc.bias", (1008,)),
]
_TO_TORCH = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def _torch_state_dict(net):
    """Random state dict with pt_inception key names (BN weight/bias/running_*, num_batches_tracked)."""
    sd = {}
    for p in net.get_parameters():
        parts = p.name.split(".")
        if parts[-2] == "bn":
            parts[-1] = _TO_TORCH[parts[-1]]
        value = RNG.rand(*p.shape).astype(np.float32) * 0.1 + (0.5 if parts[-1] == "running_var" else 0.0)
        sd[".".join(parts)] = value
        if parts[-1] == "running_var":
            sd[".".join(parts[:-1] + ["num_batches_tracked"])] = np.array(3, np.int64)
    return sd


def test_pt_inception_names_and_loading(tmp_path):
    torch = pytest.importorskip("torch", reason="writes a real torch .pth; the reader itself needs no torch")
    net = InceptionV3(taps=("pool3",))
    sd = _torch_state_dict(net)
    for key, shape in PT_INCEPTION_KEYS:
        assert sd[key].shape == shape, key
    assert len([k for k in sd if not k.endswith("num_batches_tracked")]) == 472
    path = str(tmp_path / "pt_inception.pth")
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
    load_inception(net, path)
    np.testing.assert_array_equal(net.Mixed_6b.branch7x7_2.bn.moving_variance.asnumpy(),
                                  sd["Mixed_6b.branch7x7_2.bn.running_var"])
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), sd["fc.weight"])
    sd_tv = dict(sd, **{"fc.weight": np.zeros((1000, 2048), np.float32)})
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in sd_tv.items()], str(tmp_path / "tv.ckpt"))
    with pytest.raises(ValueError, match=r"tv\.ckpt: fc\.weight has shape \(1000, 2048\).*\(1008, 2048\)"):
        load_inception(net, str(tmp_path / "tv.ckpt"))


def test_fid_avg_pool_excludes_padding():
    x = RNG.rand(1, 1, 4, 4).astype(np.float32)
    y = _avg_pool(fid=True)(ms.Tensor(x)).asnumpy()
    assert y[0, 0, 0, 0] == pytest.approx(x[0, 0, :2, :2].mean(), rel=1e-6)     # 4 valid of 9
    assert _avg_pool(fid=False)(ms.Tensor(x)).asnumpy()[0, 0, 0, 0] == pytest.approx(x[0, 0, :2, :2].sum() / 9, rel=1e-6)


class _TinyFeatures(nn.Cell):
    """Stands in for InceptionV3 in plumbing tests: [B, 3, H, W] -> ([B, 8] features, [B, 10] logits)."""

    def __init__(self):
        super().__init__()
        self.feat, self.cls = nn.Dense(3 * 16, 8), nn.Dense(8, 10)

    def construct(self, x):
        f = self.feat(ops.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False).reshape(x.shape[0], -1))
        return f, self.cls(f)


@pytest.mark.usefixtures("pynative")
def test_full_inception_taps_shapes():
    net = InceptionV3(taps=("pool3", "logits_unbiased", "mixed6e"))
    net.set_train(False)
    pool3, logits, mixed6e = net(to_inception_input(RNG.randint(0, 256, (1, 32, 48, 3)).astype(np.uint8)))
    assert pool3.shape == (1, 2048) and logits.shape == (1, 1008) and mixed6e.shape == (1, 768, 17, 17)
    np.testing.assert_allclose(logits.asnumpy(), pool3.asnumpy() @ net.fc.weight.asnumpy().T, rtol=1e-4, atol=1e-5)


def test_inception_metrics_plumbing():
    net = _TinyFeatures()
    metric = InceptionMetrics(net=net, kid_subsets=3, is_splits=2)
    fake = RNG.randint(0, 256, (4, 40, 40, 3)).astype(np.uint8)
    real = RNG.randint(0, 256, (4, 48, 48, 3)).astype(np.uint8)  # the sets may differ in size
    metric.update(fake[:2], real[:2])
    metric.update(fake[2:], real[2:])
    r = metric.compute()
    (f_fake, logits), (f_real, _) = (tuple(t.asnumpy().astype(np.float64) for t in net(to_inception_input(x)))
                                     for x in (fake, real))
    mu = lambda a: a.mean(0)  # noqa: E731
    cov = lambda a: np.cov(a, rowvar=False)  # noqa: E731
    assert r["fid"] == pytest.approx(frechet_distance(mu(f_fake), cov(f_fake), mu(f_real), cov(f_real)), rel=1e-5)
    assert r["is"] == pytest.approx(inception_score(logits, 2)[0], rel=1e-5)
    assert r["kid"] == pytest.approx(kernel_inception_distance(f_fake, f_real, 3)[0], rel=1e-5)
    assert "RANDOM-INIT" in metric.protocol["fid"]
    with pytest.raises(ValueError, match="values in"):
        metric.update(fake.astype(np.float32) / 255.0, real)


def test_sifid_plumbing_and_direct_formula():
    metric = SIFID(layer="conv2b")
    real = RNG.randint(0, 256, (1, 40, 40, 3)).astype(np.uint8)
    metric.update(real, real)
    assert metric.compute()["sifid_64"] == pytest.approx(0.0, abs=1e-4)
    a, b = RNG.rand(3, 5, 6), RNG.rand(3, 5, 6) + 0.3
    fa, fb = a.reshape(3, -1).T, b.reshape(3, -1).T
    ref = frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert sifid_from_features(a, b) == pytest.approx(ref)
    with pytest.raises(ValueError, match="choose conv2b"):
        SIFID(layer="pool3")
