"""The FID InceptionV3 against an independent PyTorch restatement of pytorch-fid's network.

The reference below is written from pytorch-fid's ``inception.py`` (``fid_inception_v3``): torchvision's
Inception3 trunk with ``FIDInceptionA/C`` (3x3 average pool that ignores the zero padding),
``FIDInceptionE_1`` (same pool) and ``FIDInceptionE_2`` (3x3 max pool in the pool branch), 1008 classes,
input resized to 299x299 bilinearly (align_corners=False) and scaled from [0, 1] to [-1, 1], pool3 =
global average of Mixed_7c; IS logits as torch-fidelity: pool3 @ fc.weight^T (no bias). The same random
weights go into both networks through a ``.pth`` file in pt_inception-2015-12-05 key layout, read by
``common.metrics.inception.load_inception``.
"""
import numpy as np
import pytest

import common  # noqa: F401

from common.metrics.inception import InceptionV3, load_inception, to_inception_input

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional


class TBasicConv(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_no_pad(x):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class TMixedA(nn.Module):  # Mixed_5b/5c/5d
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = TBasicConv(cin, 64, kernel_size=1)
        self.branch5x5_1 = TBasicConv(cin, 48, kernel_size=1)
        self.branch5x5_2 = TBasicConv(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = TBasicConv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = TBasicConv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = TBasicConv(96, 96, kernel_size=3, padding=1)
        self.branch_pool = TBasicConv(cin, pool_features, kernel_size=1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_no_pad(x))], 1)


class TMixed6a(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = TBasicConv(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = TBasicConv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = TBasicConv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = TBasicConv(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, 2)], 1)


class TMixedC(nn.Module):  # Mixed_6b..6e
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = TBasicConv(cin, 192, kernel_size=1)
        self.branch7x7_1 = TBasicConv(cin, c7, kernel_size=1)
        self.branch7x7_2 = TBasicConv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = TBasicConv(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = TBasicConv(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = TBasicConv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = TBasicConv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = TBasicConv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = TBasicConv(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = TBasicConv(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_no_pad(x))], 1)


class TMixed7a(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = TBasicConv(cin, 192, kernel_size=1)
        self.branch3x3_2 = TBasicConv(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = TBasicConv(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = TBasicConv(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = TBasicConv(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = TBasicConv(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        d = x
        for i in range(1, 5):
            d = getattr(self, f"branch7x7x3_{i}")(d)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), d, F.max_pool2d(x, 3, 2)], 1)


class TMixedE(nn.Module):  # Mixed_7b (average pool without padding), Mixed_7c (max pool: the FID graph's quirk)
    def __init__(self, cin, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = TBasicConv(cin, 320, kernel_size=1)
        self.branch3x3_1 = TBasicConv(cin, 384, kernel_size=1)
        self.branch3x3_2a = TBasicConv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = TBasicConv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = TBasicConv(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = TBasicConv(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = TBasicConv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = TBasicConv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = TBasicConv(cin, 192, kernel_size=1)

    def forward(self, x):
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg_no_pad(x)
        return torch.cat([self.branch1x1(x), b, d, self.branch_pool(pool)], 1)


class TFIDInception(nn.Module):
    """[B, 3, H, W] in [0, 1] -> (pool3 [B, 2048], unbiased logits [B, 1008])."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = TBasicConv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = TBasicConv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = TBasicConv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = TBasicConv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = TBasicConv(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = TMixedA(192, 32), TMixedA(256, 64), TMixedA(288, 64)
        self.Mixed_6a = TMixed6a(288)
        self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e = (TMixedC(768, 128), TMixedC(768, 160),
                                                                      TMixedC(768, 160), TMixedC(768, 192))
        self.Mixed_7a = TMixed7a(768)
        self.Mixed_7b, self.Mixed_7c = TMixedE(1280, max_pool=False), TMixedE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x):
        x = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, 2)))
        x = F.max_pool2d(x, 3, 2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool3 = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return pool3, pool3 @ self.fc.weight.T


def _randomise(net, seed=0):
    """He-scaled conv weights and BN statistics that keep activations O(1) through the 94 layers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("conv.weight"):
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("bn.weight"):
                t.copy_(0.8 + 0.4 * torch.rand(t.shape, generator=g))
            else:  # bn.bias, running_mean, fc
                t.copy_(0.1 * torch.randn(t.shape, generator=g))


@pytest.mark.usefixtures("pynative")
def test_fid_inception_matches_pytorch_fid_restatement(tmp_path):
    ref = TFIDInception()
    _randomise(ref)
    ref.eval()
    sd = ref.state_dict()
    assert len([k for k in sd if not k.endswith("num_batches_tracked")]) == 472   # pt_inception-2015-12-05
    path = str(tmp_path / "pt_inception.pth")
    torch.save(sd, path)

    images = np.random.RandomState(1).randint(0, 256, (2, 37, 53, 3)).astype(np.uint8)
    net = load_inception(InceptionV3(taps=("pool3", "logits_unbiased"), layout="fid"), path)
    pool3, logits = (t.asnumpy() for t in net(to_inception_input(images)))
    with torch.no_grad():
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        ref_pool3, ref_logits = (t.numpy() for t in ref(x))
    assert pool3.shape == (2, 2048) and logits.shape == (2, 1008)
    assert ref_pool3.std() > 0.05 and np.abs(ref_pool3[0] - ref_pool3[1]).max() > 0.01   # not a degenerate net
    np.testing.assert_allclose(pool3, ref_pool3, rtol=1e-4, atol=1e-4 * np.abs(ref_pool3).max())
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())
