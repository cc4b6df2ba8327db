"""InceptionV3 (Szegedy et al. 2016) in MindSpore with the layout of the FID reference network.

``InceptionV3(layout="fid")`` is pytorch-fid's ``FIDInceptionA/C/E`` graph (the TF 2015-12-05 FID
network): 1008 classes, average pools with ``count_include_pad=False`` in Mixed_5*/6*/7b, a max pool
in Mixed_7c's pool branch. ``layout="torchvision"`` is the ImageNet classifier used by SinGAN's SIFID
(1000 classes, ordinary average pools). Cell names equal the PyTorch module names, so
``pt_inception-2015-12-05-6726825d.pth`` (or a torchvision ``inception_v3`` state dict) loads by name
with :func:`load_inception`; no weights are downloaded.

Input: [B, 3, H, W] float in [0, 1]; ``resize=True`` resizes bilinearly to 299x299
(``align_corners=False``, as pytorch-fid) and the network scales to [-1, 1] itself.
Taps: ``conv2b`` [B, 64, .] (before the first max pool), ``conv4a`` [B, 192, .] (before the second),
``mixed6e`` [B, 768, .], ``pool3`` [B, 2048], ``logits_unbiased`` [B, K] (= pool3 @ fc.weight^T).
"""
import numpy as np

import common  # noqa: F401
import mindspore as ms
from mindspore import nn, ops

from common.conv import Conv2d
from common.layers import reduce_mean
from common.weights import assign_params, read_flat

__all__ = ["InceptionV3", "load_inception", "to_inception_input", "INCEPTION_TAPS", "torch_to_mindspore_name"]

INCEPTION_TAPS = {"conv2b": 64, "conv4a": 192, "mixed6e": 768, "pool3": 2048}


class BasicConv2d(nn.Cell):
    """conv (no bias) + BatchNorm(eps 1e-3) + ReLU."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        self.conv = Conv2d(cin, cout, (kh, kw), stride, pad_mode="pad", padding=(ph, ph, pw, pw), has_bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.relu(self.bn(self.conv(x)))


def _avg_pool(fid):
    # FID graph: padded average pool that does not count the padding
    return nn.AvgPool2d(3, 1, pad_mode="pad", padding=1, count_include_pad=not fid)


class InceptionA(nn.Cell):
    def __init__(self, cin, pool_features, fid):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.pool = _avg_pool(fid)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def construct(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return ops.cat((self.branch1x1(x), b5, b3, self.branch_pool(self.pool(x))), 1)


class InceptionB(nn.Cell):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)
        self.pool = nn.MaxPool2d(3, 2)

    def construct(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return ops.cat((self.branch3x3(x), b3, self.pool(x)), 1)


class InceptionC(nn.Cell):
    def __init__(self, cin, c7, fid):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.pool = _avg_pool(fid)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def construct(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(d))
        return ops.cat((self.branch1x1(x), b7, d, self.branch_pool(self.pool(x))), 1)


class InceptionD(nn.Cell):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)
        self.pool = nn.MaxPool2d(3, 2)

    def construct(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return ops.cat((b3, b7, self.pool(x)), 1)


class InceptionE(nn.Cell):
    def __init__(self, cin, pool):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.pool = pool
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def construct(self, x):
        b3 = self.branch3x3_1(x)
        b3 = ops.cat((self.branch3x3_2a(b3), self.branch3x3_2b(b3)), 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = ops.cat((self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)), 1)
        return ops.cat((self.branch1x1(x), b3, d, self.branch_pool(self.pool(x))), 1)


class InceptionV3(nn.Cell):
    """InceptionV3 trunk returning ``taps`` (see module docstring): [B, 3, H, W] in [0, 1] -> tuple."""

    def __init__(self, taps=("pool3", "logits_unbiased"), layout="fid", resize=True):
        super().__init__()
        if layout not in ("fid", "torchvision"):
            raise ValueError(f"layout={layout!r}; choose fid or torchvision")
        valid = tuple(INCEPTION_TAPS) + ("logits_unbiased",)
        if not taps or any(t not in valid for t in taps):
            raise ValueError(f"taps={taps}; choose from {valid}")
        fid = layout == "fid"
        self.taps, self.layout, self.resize = tuple(taps), layout, resize
        order = ("conv2b", "conv4a", "mixed6e", "pool3")
        self.depth = max(order.index("pool3" if t == "logits_unbiased" else t) for t in taps)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool = nn.MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = (InceptionA(192, 32, fid), InceptionA(256, 64, fid),
                                                       InceptionA(288, 64, fid))
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128, fid), InceptionC(768, 160, fid)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160, fid), InceptionC(768, 192, fid)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, _avg_pool(fid))
        self.Mixed_7c = InceptionE(2048, nn.MaxPool2d(3, 1, pad_mode="pad", padding=1) if fid else _avg_pool(False))
        self.fc = nn.Dense(2048, 1008 if fid else 1000)
        for p in self.get_parameters():
            p.requires_grad = False

    def construct(self, x):
        if self.resize:
            x = ops.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        conv2b = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        feats = {"conv2b": conv2b}
        if self.depth >= 1:
            feats["conv4a"] = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool(conv2b)))
        if self.depth >= 2:
            x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(self.maxpool(feats["conv4a"]))))
            x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
            feats["mixed6e"] = x
        if self.depth >= 3:
            pool3 = reduce_mean(self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(feats["mixed6e"]))), (2, 3), keep_dims=False)
            feats["pool3"] = pool3
            feats["logits_unbiased"] = ops.matmul(pool3, self.fc.weight.T)
        out = ()
        for t in self.taps:
            out += (feats[t],)
        return out


_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def torch_to_mindspore_name(key):
    """pt_inception / torchvision key -> our parameter name (None for entries we do not hold)."""
    if key.endswith("num_batches_tracked") or key.startswith("AuxLogits."):
        return None
    parts = key.split(".")
    if len(parts) >= 2 and parts[-2] == "bn":
        parts[-1] = _BN.get(parts[-1], parts[-1])
    return ".".join(parts)


def load_inception(net, source):
    """Fill ``net`` from a ``.pth`` (pt_inception-2015-12-05 or torchvision) or a MindSpore ``.ckpt``.

    Errors name the file and the missing parameter with its expected shape; a 1000-class torchvision
    file in an ``layout="fid"`` network fails on ``fc.weight`` (1008 expected).
    """
    assign_params(net, read_flat(source), source, rename=torch_to_mindspore_name)
    net.set_train(False)
    return net


def to_inception_input(images):
    """[B, H, W, 3] uint8 -> [B, 3, H, W] float32 in [0, 1]."""
    return ms.Tensor(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2)), ms.float32) / 255.0
