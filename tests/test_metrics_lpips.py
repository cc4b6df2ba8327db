"""LPIPS against an independent PyTorch computation with the same weights."""
import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms

from common.metrics.lpips import LPIPS, LPIPSMetric, build_lpips, distance_to_nearest, to_lpips_input
from common.pretrained import pretrained_path
from common.weights import read_mindspore_ckpt

RNG = np.random.RandomState(0)


def _images(n=2, size=64):
    real = RNG.randint(0, 256, (n, size, size, 3)).astype(np.uint8)
    fake = np.clip(real.astype(int) + RNG.randint(-60, 61, real.shape), 0, 255).astype(np.uint8)
    return fake, real


def _torch_lpips(torch, net, trunk, heads, x0, x1):
    """LPIPS written directly in torch from the lpips paper / lpips 0.1.4 recipe."""
    F = torch.nn.functional
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    shift = t([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = t([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(x):
        x = (x - shift) / scale
        out = []
        if net == "alexnet":
            spec = [("conv1", 4, 2, False), ("conv2", 1, 2, True), ("conv3", 1, 1, True), ("conv4", 1, 1, False),
                    ("conv5", 1, 1, False)]
            for name, stride, pad, pool_before in spec:
                if pool_before:
                    x = F.max_pool2d(x, 3, 2)
                x = F.relu(F.conv2d(x, t(trunk[f"{name}.weight"]), t(trunk[f"{name}.bias"]), stride, pad))
                out.append(x)
        else:
            taps = {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"}
            for name in [k[:-7] for k in trunk if k.endswith(".weight")]:
                if name.endswith("_1") and name != "conv1_1":
                    x = F.max_pool2d(x, 2, 2)
                x = F.relu(F.conv2d(x, t(trunk[f"{name}.weight"]), t(trunk[f"{name}.bias"]), 1, 1))
                if name in taps:
                    out.append(x)
        return out
    total = 0
    for i, (a, b) in enumerate(zip(feats(x0), feats(x1))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + F.conv2d((a - b) ** 2, t(heads[f"lin{i}.weight"])).mean((2, 3))
    return total.reshape(-1).numpy()


def _write_random(tmp_path, net):
    model = LPIPS(net)
    if net == "vgg16":
        layers = model.trunk.conv_layers().items()
    else:
        layers = [(f"conv{i}", getattr(model.trunk, f"conv{i}")) for i in range(1, 6)]
    trunk = {f"{n}.{p}": RNG.randn(*getattr(c, p).shape).astype(np.float32) * 0.05
             for n, c in layers for p in ("weight", "bias")}
    heads = {f"lin{i}.weight": RNG.rand(*c.weight.shape).astype(np.float32) for i, c in enumerate(model.lins)}
    paths = []
    for part, name in ((trunk, "trunk.ckpt"), (heads, "heads.ckpt")):
        ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in part.items()], str(tmp_path / name))
        paths.append(str(tmp_path / name))
    return paths


@pytest.mark.parametrize("net", ["alexnet", "vgg16"])
@pytest.mark.parametrize("weights", ["random", "real"])
def test_lpips_matches_torch(tmp_path, net, weights):
    torch = pytest.importorskip("torch", reason="torch is optional: parity test only")
    if weights == "real":
        try:
            trunk_path, heads_path = pretrained_path(net), pretrained_path(f"lpips_{net}")
        except FileNotFoundError as e:
            pytest.skip(f"real LPIPS weights not cached: {e}")
    else:
        trunk_path, heads_path = _write_random(tmp_path, net)
    fake, real = _images()
    ours = build_lpips(net, trunk_path, heads_path)(to_lpips_input(fake), to_lpips_input(real)).asnumpy()
    x0 = torch.from_numpy(fake.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)
    x1 = torch.from_numpy(real.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)
    ref = _torch_lpips(torch, net, read_mindspore_ckpt(trunk_path), read_mindspore_ckpt(heads_path), x0, x1)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
    assert ref.min() > 1e-3


def test_lpips_metric_identity_and_errors():
    try:
        metric = LPIPSMetric("alexnet")
    except FileNotFoundError as e:
        pytest.skip(f"real LPIPS weights not cached: {e}")
    fake, real = _images(2, 48)
    metric.update(real, real)
    assert metric.compute()["lpips_alexnet"] == pytest.approx(0.0, abs=1e-6)
    metric.update(fake, real)
    assert metric.compute()["lpips_alexnet"] > 0.01
    with pytest.raises(ValueError, match="resize"):
        metric.update(fake[:, :32], real)
    with pytest.raises(ValueError, match="empty set"):
        LPIPSMetric(model=metric.model).compute()


def test_distance_to_nearest_takes_each_fakes_closest_real():
    from common.metrics.image import PairMean

    class MeanAbs(PairMean):  # a stand-in score, so the test is about the nearest-frame reduction alone
        name = "mean_abs"

        def scores(self, fake, real):
            return np.abs(fake.astype(np.float64) - real).mean(axis=(1, 2, 3))

    rng = np.random.default_rng(3)
    reals = rng.integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    fakes = rng.integers(0, 256, (5, 6, 5, 3), dtype=np.uint8)
    fakes[3] = reals[1]
    table = np.abs(fakes[:, None].astype(np.float64) - reals[None]).mean(axis=(2, 3, 4))  # [fake, real]
    for chunk in (2, 64):
        assert distance_to_nearest(MeanAbs(), fakes, reals, chunk=chunk) == pytest.approx(table.min(axis=1).mean())
    assert distance_to_nearest(MeanAbs(), fakes[3:4], reals) == 0.0


def test_unit_range_inputs_are_the_reference_evaluations_tensors(tmp_path):
    """``unit_range``: the metric feeds torchvision ``ToTensor`` images ([0, 1], as OSMIS' official evaluate.py
    hands LPIPS with normalize=False), not LPIPS's [-1, 1]; checked against the torch restatement on both."""
    torch = pytest.importorskip("torch", reason="torch is optional: parity test only")
    trunk_path, heads_path = _write_random(tmp_path, "alexnet")
    model = build_lpips("alexnet", trunk_path, heads_path)
    fake, real = _images()
    trunk, heads = read_mindspore_ckpt(trunk_path), read_mindspore_ckpt(heads_path)
    for unit_range, (scale, offset) in ((True, (255.0, 0.0)), (False, (127.5, 1.0))):
        x0, x1 = (torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / scale - offset) for x in (fake, real))
        metric = LPIPSMetric(model=model, unit_range=unit_range)
        np.testing.assert_allclose(metric.scores(fake, real), _torch_lpips(torch, "alexnet", trunk, heads, x0, x1),
                                   rtol=1e-4, atol=1e-6)
        assert ("[0, 1]" in metric.protocol) == unit_range
