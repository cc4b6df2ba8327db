"""Building blocks of the CoCosNet networks (Zhang et al., CVPR 2020), shared by the correspondence
network, the translation network and the discriminator.

* :class:`PositionalNorm2d` - PONO (Li et al., NeurIPS 2019): each pixel normalised across channels, with
  the unbiased (N-1) variance of the reference code (``common.layers.Standardize`` over C).
* :func:`feature_normalize` - L2 normalisation along channels with the reference's tiny epsilon.
* :func:`nearest_resize` - nearest resize by integer factors (PyTorch's legacy ``nearest``: source index
  ``floor(i * in / out)``), as strided slices and tiles that export to ONNX.
* :class:`SPADE`, :class:`SPADEResnetBlock` - spatially-adaptive modulation of the positional-normalised
  activations by a conditioning map, and the residual block built on it.
* :class:`Attention` - SAGAN self-attention with 2x2 max-pooled keys/values and a zero-initialised gain.
* :class:`ResidualBlock`, :class:`PReLU` - the correspondence network's shared residual blocks.

Convolutions are :class:`common.conv.Conv2d`; spectral-normalised ones wrap it in
:class:`common.spectral_norm.SpectralNorm`. Reflection padding is ``nn.Pad(mode="REFLECT")``, which
``common.export.prepare_for_export`` rewrites for ONNX.
"""
import sys

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from common.conv import Conv2d
from common.layers import InstanceNorm2d, LeakyReLU, Softmax, Standardize, expand, nearest_upsample, reduce_sum
from common.spectral_norm import spectral_norm

__all__ = ["FLOAT_EPS", "conv2d", "sn_conv2d", "reflect_pad", "PositionalNorm2d",
           "feature_normalize", "nearest_resize", "PReLU", "SPADE", "SPADEResnetBlock", "Attention",
           "ResidualBlock"]

FLOAT_EPS = sys.float_info.epsilon  # the reference's eps of feature_normalize and of the correlation


def conv2d(cin, cout, kernel, stride=1, padding=0, bias=True, grad_channels=None):
    """A :class:`common.conv.Conv2d` with zero padding ``padding`` on every side (``grad_channels``: the input
    channels that can carry a gradient, the rest being data; ``None``: all)."""
    if padding:
        return Conv2d(cin, cout, kernel, stride, pad_mode="pad", padding=padding, has_bias=bias,
                      grad_channels=grad_channels)
    return Conv2d(cin, cout, kernel, stride, pad_mode="valid", has_bias=bias, grad_channels=grad_channels)


def sn_conv2d(cin, cout, kernel, stride=1, padding=0, bias=True):
    """:func:`conv2d` wrapped in spectral normalisation."""
    return spectral_norm(conv2d(cin, cout, kernel, stride, padding, bias))


def reflect_pad(p):
    """Reflection padding of H and W by ``p`` on each side: [B, C, H, W] -> [B, C, H+2p, W+2p]."""
    return nn.Pad(((0, 0), (0, 0), (p, p), (p, p)), mode="REFLECT")


class PositionalNorm2d(Standardize):
    """PONO: ``(x - mean_C) / sqrt(var_C + eps)`` per sample and pixel; var with the N-1 divisor (the
    reference), backward by :class:`common.layers.Standardize`. [B, C, H, W] -> [B, C, H, W]; C >= 2."""

    def __init__(self, eps=1e-5):
        super().__init__((1,), eps, ddof=1)


def feature_normalize(x, axis=1):
    """``x / (|x|_2 + FLOAT_EPS)`` along ``axis`` (the reference ``util.feature_normalize``), as a full-size
    multiply by the expanded inverse norms (see ``common.layers.expand``)."""
    norm = ops.sqrt(reduce_sum(ops.square(x), (axis,)))
    return x * expand(ops.pow(norm + FLOAT_EPS, -1.0), x)


def nearest_resize(x, size):
    """Nearest resize of [B, C, H, W] to [B, C, size[0], size[1]] when each ratio is an integer factor.

    Downsampling by f keeps every f-th row/column starting at 0; upsampling by f repeats each f times
    (both are PyTorch ``interpolate(mode="nearest")`` for integer factors). Written as a 1x1 max pooling with
    stride f and as a broadcast (:func:`common.layers.nearest_upsample`): MindSpore's CPU StridedSlice and Tile
    kernels took 3.5x and 2x their time (exported: ONNX MaxPool and Expand).
    """
    b, c, h, w = x.shape
    out_h, out_w = int(size[0]), int(size[1])
    if out_h == h and out_w == w:
        return x
    if out_h <= h and out_w <= w and h % out_h == 0 and w % out_w == 0:
        return ops.MaxPool(kernel_size=1, strides=(h // out_h, w // out_w))(x)
    if out_h >= h and out_w >= w and out_h % h == 0 and out_w % w == 0:
        return nearest_upsample(x, out_h // h, out_w // w)
    raise ValueError(f"nearest_resize from {h}x{w} to {out_h}x{out_w}: both ratios must be integer factors "
                     f"(CoCosNet sizes are multiples of 32, e.g. 256x256)")


class PReLU(nn.Cell):
    """PReLU with one slope shared by all channels (PyTorch ``nn.PReLU()``, slope 0.25 at init).

    ``weight`` has shape [1]. [B, C, H, W] -> same.
    """

    def __init__(self, init=0.25):
        super().__init__()
        self.weight = Parameter(Tensor([init], ms.float32), name="weight")

    def construct(self, x):
        return ops.relu(x) - self.weight * ops.relu(-x)


class SPADE(nn.Cell):
    """SPADE with positional normalisation: ``PONO(x) * (1 + gamma(m)) + beta(m)``.

    ``m`` is the conditioning map nearest-resized to x's size; ``mlp_shared`` = reflect pad, 3x3 conv
    ``label_nc -> hidden`` (bias), ReLU; ``mlp_gamma`` / ``mlp_beta`` = reflect pad, 3x3 conv
    ``hidden -> norm_nc`` (bias). No spectral norm (as the reference). ``cond_grad_channels=(first, stop)``:
    only those channels of ``m`` can carry a gradient (the rest are data, e.g. the one-hot label map), so the
    backward of ``mlp_shared`` computes only theirs (``common.conv.Conv2d``'s ``grad_channels``).

    Shapes: x [B, norm_nc, H, W], segmap [B, label_nc, H*k, W*k] -> [B, norm_nc, H, W].
    """

    def __init__(self, norm_nc, label_nc, hidden=128, *, cond_grad_channels=None):
        super().__init__()
        self.param_free_norm = PositionalNorm2d()
        shared_conv = conv2d(label_nc, hidden, 3, grad_channels=cond_grad_channels)
        self.mlp_shared = nn.SequentialCell([reflect_pad(1), shared_conv, nn.ReLU()])
        self.pad = reflect_pad(1)
        self.mlp_gamma = conv2d(hidden, norm_nc, 3)
        self.mlp_beta = conv2d(hidden, norm_nc, 3)

    def construct(self, x, segmap):
        normalized = self.param_free_norm(x)
        actv = self.pad(self.mlp_shared(nearest_resize(segmap, x.shape[2:])))
        return normalized * (1.0 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Cell):
    """SPADE residual block: ``shortcut(x) + conv_1(pad(lrelu(norm_1(conv_0(pad(lrelu(norm_0(x, m))))), m)))``.

    ``conv_0`` (fin -> min(fin, fout)) and ``conv_1`` (-> fout) are 3x3, spectral-normalised, with bias.
    When fin != fout the shortcut is ``conv_s(norm_s(x, m))``, a 1x1 spectral-normalised conv without bias.
    ``cond_grad_channels`` goes to every :class:`SPADE`.

    Shapes: x [B, fin, H, W], segmap [B, label_nc, H*k, W*k] -> [B, fout, H, W].
    """

    def __init__(self, fin, fout, label_nc, hidden=128, *, cond_grad_channels=None):
        super().__init__()
        fmiddle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.pad = reflect_pad(1)
        self.actvn = LeakyReLU(0.2)
        self.conv_0 = sn_conv2d(fin, fmiddle, 3)
        self.conv_1 = sn_conv2d(fmiddle, fout, 3)
        self.norm_0 = SPADE(fin, label_nc, hidden, cond_grad_channels=cond_grad_channels)
        self.norm_1 = SPADE(fmiddle, label_nc, hidden, cond_grad_channels=cond_grad_channels)
        if self.learned_shortcut:
            self.conv_s = sn_conv2d(fin, fout, 1, bias=False)
            self.norm_s = SPADE(fin, label_nc, hidden, cond_grad_channels=cond_grad_channels)

    def construct(self, x, segmap):
        if self.learned_shortcut:
            x_s = self.conv_s(self.norm_s(x, segmap))
        else:
            x_s = x
        dx = self.conv_0(self.pad(self.actvn(self.norm_0(x, segmap))))
        dx = self.conv_1(self.pad(self.actvn(self.norm_1(dx, segmap))))
        return x_s + dx


class Attention(nn.Cell):
    """SAGAN self-attention: ``x + gamma * o(g_pooled @ softmax(theta^T phi_pooled)^T)``.

    theta, phi: 1x1 ``ch -> ch/8``; g: 1x1 ``ch -> ch/2``; o: 1x1 ``ch/2 -> ch``; all without bias and,
    with ``spectral=True``, spectral-normalised. phi and g are 2x2 max-pooled; ``gamma`` starts at 0.

    Shapes: [B, ch, H, W] -> [B, ch, H, W] (H, W even); the attention map is [B, H*W, H*W/4].
    """

    def __init__(self, ch, spectral=True):
        super().__init__()
        if ch % 8:
            raise ValueError(f"Attention channels ch={ch} must be a multiple of 8 (ch/8 query channels)")
        make = sn_conv2d if spectral else conv2d
        self.ch = ch
        self.theta = make(ch, ch // 8, 1, bias=False)
        self.phi = make(ch, ch // 8, 1, bias=False)
        self.g = make(ch, ch // 2, 1, bias=False)
        self.o = make(ch // 2, ch, 1, bias=False)
        self.pool = nn.MaxPool2d(2, 2)
        self.gamma = Parameter(Tensor(0.0, ms.float32), name="gamma")
        self.scores = ops.BatchMatMul(transpose_a=True)
        self.gather = ops.BatchMatMul(transpose_b=True)
        self.softmax = Softmax()

    def construct(self, x):
        b, _, h, w = x.shape
        theta = self.theta(x).reshape(b, self.ch // 8, h * w)
        phi = self.pool(self.phi(x)).reshape(b, self.ch // 8, h * w // 4)
        g = self.pool(self.g(x)).reshape(b, self.ch // 2, h * w // 4)
        beta = self.softmax(self.scores(theta, phi))  # [B, HW, HW/4]
        o = self.o(self.gather(g, beta).reshape(b, self.ch // 2, h, w))
        return self.gamma * o + x


class ResidualBlock(nn.Cell):
    """``prelu(x + IN(conv2(pad(prelu(IN(conv1(pad(x))))))))``: 3x3 convs with bias, instance norm
    without affine, one PReLU slope shared by both activations. [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, channels):
        super().__init__()
        self.padding1 = reflect_pad(1)
        self.conv1 = conv2d(channels, channels, 3)
        self.bn1 = InstanceNorm2d(channels)
        self.prelu = PReLU()
        self.padding2 = reflect_pad(1)
        self.conv2 = conv2d(channels, channels, 3)
        self.bn2 = InstanceNorm2d(channels)

    def construct(self, x):
        out = self.prelu(self.bn1(self.conv1(self.padding1(x))))
        out = self.bn2(self.conv2(self.padding2(out)))
        return self.prelu(out + x)
