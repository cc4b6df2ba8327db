"""VGG perceptual losses: the CRN feature-matching loss (also used by CoCosNet) and CRN's hindsight loss.

``PerceptualLoss`` compares a batch of k candidate images per sample with one real image:

    cost[b, u]    = sum_l  lambda_l * mean |Phi_l(fake[b, u]) - Phi_l(real[b])|                 (no masks)
    cost[b, u, p] = sum_l  lambda_l * mean_{h,w} ( mean_c |Phi_l(fake) - Phi_l(real)| * M_l[b, p] )  (masks)

``Phi_pixel`` is the image itself, the other layers are post-ReLU VGG activations (``relu1_2`` ...). The
per-class masks ``M_l`` are the label map area-downsampled to layer l's resolution (2x2 average pooling per
VGG pooling), and the masked error is averaged over *all* pixels, as in the CRN code.

``HindsightLoss`` (CRN, section 3.4): ``0.999 * sum_p min_u cost[u, p] + 0.001 * sum_p mean_u cost[u, p]``,
averaged over the batch: per class, only the best of the k outputs is pulled toward the real image.

Images enter in RGB 0..255. ``normalize='caffe'`` subtracts the ImageNet mean (MatConvNet/Caffe VGG19,
the CRN loss network); ``'torch'`` also divides by the ImageNet std (torchvision-trained weights).
"""
import numpy as np
from mindspore import Tensor, nn, ops

from common.layers import expand, reduce_mean
from common.vgg import VGG

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "CRN_LAYER_WEIGHTS", "PerceptualLoss", "HindsightLoss",
           "hindsight_reduce"]

IMAGENET_MEAN = (123.68, 116.779, 103.939)  # RGB, 0..255 (MatConvNet meta.normalization.averageImage)
IMAGENET_STD = (58.395, 57.12, 57.375)  # torchvision std * 255

# lambda per layer, "collected at the 100th epoch" of the reference scripts (crn.md section 3)
CRN_LAYER_WEIGHTS = {
    256: {"pixel": 1.0, "relu1_2": 1 / 1.6, "relu2_2": 1 / 2.3, "relu3_2": 1 / 1.8, "relu4_2": 1 / 2.8,
          "relu5_2": 10 / 0.8},
    512: {"pixel": 1.0, "relu1_2": 1 / 2.6, "relu2_2": 1 / 4.8, "relu3_2": 1 / 3.7, "relu4_2": 1 / 5.6,
          "relu5_2": 10 / 1.5},
}
CRN_LAYER_WEIGHTS[1024] = CRN_LAYER_WEIGHTS[512]


def _downsampling(tap):
    """How many 2x poolings precede a tap: relu1_x -> 0, relu2_x -> 1, ..., relu5_x -> 4."""
    return 0 if tap == "pixel" else int(tap[4]) - 1


class PerceptualLoss(nn.Cell):
    """Weighted L1 distance between VGG features of fakes and a real image, optionally per class.

    Args:
        layer_weights: ordered {layer: lambda}; layers are ``pixel`` and VGG tap names (``relu1_2`` ...).
        arch: ``vgg19`` (CRN) or ``vgg16``.
        pool: ``avg`` (CRN) or ``max``.
        normalize: ``caffe`` (x - mean, 0..255) or ``torch`` ((x - mean) / std).
        conv_impl: ``native`` or ``matmul``: the VGG's CPU convolution path (:func:`common.conv.use_conv_impl`),
            normally the process's ``Runtime.conv_impl``.

    Load the VGG weights with ``common.weights.load_vgg(loss.vgg, path)``; they stay frozen.

    Shapes: fake [B, k, 3, H, W] (or [B, 3, H, W], read as k = 1), real [B, 3, H, W], both 0..255;
    masks [B, P, H, W] or None. Returns cost [B, k] without masks, [B, k, P] with masks.
    H and W must be divisible by 2 ** (deepest block - 1) (16 for relu5_2).
    """

    def __init__(self, layer_weights, arch="vgg19", pool="avg", normalize="caffe", conv_impl="native"):
        super().__init__()
        if normalize not in ("caffe", "torch"):
            raise ValueError(f"normalize={normalize!r}; choose caffe (MatConvNet VGG) or torch (torchvision VGG)")
        self.layers = tuple(layer_weights)
        self.weights = tuple(float(layer_weights[name]) for name in self.layers)
        taps = tuple(name for name in self.layers if name != "pixel")
        self.vgg = VGG(arch, taps, pool=pool, requires_grad=False, conv_impl=conv_impl) if taps else None
        self.levels = tuple(_downsampling(name) for name in self.layers)
        self.mean = Tensor(np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1))
        scale = np.array(IMAGENET_STD if normalize == "torch" else (1.0, 1.0, 1.0), np.float32)
        self.inv_std = Tensor((1.0 / scale).reshape(1, 3, 1, 1))
        self.area_down = nn.AvgPool2d(2, 2)

    def features(self, x):
        """[N, 3, H, W] 0..255 -> tuple of the layers' activations, in ``layers`` order."""
        feats = self.vgg((x - expand(self.mean, x)) * expand(self.inv_std, x)) if self.vgg is not None else ()
        out, j = (), 0
        for name in self.layers:
            if name == "pixel":
                out += (x,)
            else:
                out += (feats[j],)
                j += 1
        return out

    def construct(self, fake, real, masks=None):
        if fake.ndim == 4:
            fake = fake.expand_dims(1)
        b, k, c, h, w = fake.shape
        both = self.features(ops.cat((fake.reshape(b * k, c, h, w), real), 0))
        pyramid = ()
        if masks is not None:
            pyramid = (masks,)
            for _ in range(max(self.levels)):
                pyramid += (self.area_down(pyramid[-1]),)
        cost = 0.0
        for i, feat in enumerate(both):
            fc, fh, fw = feat.shape[1:]
            phi_fake, phi_real = ops.split(feat, [b * k, b], axis=0)  # not slices: CPU StridedSlice copies slowly
            phi_fake = phi_fake.reshape(b, k, fc, fh, fw)
            phi_real = ops.stop_gradient(phi_real).reshape(b, 1, fc, fh, fw)
            err = reduce_mean(ops.abs(phi_fake - expand(phi_real, phi_fake)), (2,), keep_dims=False)  # [B, k, h, w]
            if masks is None:
                term = reduce_mean(err, (2, 3), keep_dims=False)  # [B, k]
            else:
                m = pyramid[self.levels[i]]  # [B, P, h, w]
                term = ops.bmm(err.reshape(b, k, fh * fw), m.reshape(b, -1, fh * fw).transpose(0, 2, 1))
                term = term / (fh * fw)  # [B, k, P]
            cost = cost + self.weights[i] * term
        return cost


def hindsight_reduce(cost, min_weight=0.999):
    """[B, k, P] per-output, per-class costs -> scalar: per class min over k (and a small mean), summed
    over classes, averaged over the batch."""
    per_class = min_weight * cost.min(axis=1) + (1.0 - min_weight) * cost.mean(axis=1)  # [B, P]
    return per_class.sum(axis=1).mean()


class HindsightLoss(nn.Cell):
    """CRN diversity loss over k outputs with per-class masks.

    Shapes: fake [B, k, 3, H, W], real [B, 3, H, W] (0..255), label [B, P, H, W] soft class masks
    (one-hot + void) -> scalar.
    """

    def __init__(self, perceptual, min_weight=0.999):
        super().__init__()
        if not 0.0 <= min_weight <= 1.0:
            raise ValueError(f"min_weight={min_weight} must be in [0, 1] (reference 0.999)")
        self.perceptual = perceptual
        self.min_weight = min_weight

    def construct(self, fake, real, label):
        return hindsight_reduce(self.perceptual(fake, real, label), self.min_weight)
