"""Cascaded Refinement Network (Chen & Koltun, ICCV 2017).

A cascade of :class:`RefinementModule` cells, the first at 4 x (4*aspect) and each later one at twice the
resolution of the one before. Module ``i`` upsamples the previous features bilinearly (align_corners),
concatenates ``[features, label at this scale]`` and applies two 3x3 convs (no bias), each followed by
layer norm over (C, H, W) with per-channel scale/offset and LReLU(0.2). A 1x1 conv (with bias) maps the
last features to 3*k channels, which hold k images in the reference layout: image i, colour c is channel
``c*k + i``. The outputs are ``(x + 1) / 2 * 255`` (roughly 0..255, not clipped).

The label input is the one-hot map with a void channel, [B, num_classes + 1, H, W]; each module sees it
area-downsampled (2x2 average pooling per halving), i.e. soft masks.

Channels per module height (reference): 1024 below 128, 512 at 128 and 256, 128 at 512, 32 at 1024.
"""
import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import XavierUniform, initializer

from common.conv import Conv2d
from common.layers import ChannelAffine, Float32Only, reduce_mean, reduce_sum

__all__ = ["SIZES", "module_heights", "module_channels", "expected_param_count", "RefinementModule",
           "CascadedRefinementNetwork", "build_generator", "split_outputs", "default_num_outputs"]

SIZES = (256, 512, 1024)
FIRST_HEIGHT = 4


def module_heights(size):
    """Heights of the modules of a ``size`` model: 4, 8, ..., size."""
    if size < FIRST_HEIGHT or size & (size - 1):
        raise ValueError(f"size={size} must be a power of two >= {FIRST_HEIGHT} (256, 512 or 1024 for the "
                         f"reference models, 32 or 64 for quick runs)")
    return tuple(2 ** i for i in range(int(math.log2(FIRST_HEIGHT)), int(math.log2(size)) + 1))


def module_channels(height, width_mult=1.0):
    """Feature channels of the module at ``height`` (the reference table, scaled by ``width_mult``)."""
    dim = {512: 128, 1024: 32}.get(height, 1024 if height < 128 else 512)
    return max(1, int(round(dim * width_mult)))


def default_num_outputs(size):
    """k of the reference models: 9 diverse images at 256p (and below), a single image above."""
    return 9 if size <= 256 else 1


def expected_param_count(size, label_nc=20, num_outputs=None, width_mult=1.0):
    """Parameter count derived from the channel table (3x3 convs without bias, LN gamma/beta, 1x1 with bias)."""
    k = default_num_outputs(size) if num_outputs is None else num_outputs
    total, prev = 0, 0
    for h in module_heights(size):
        c = module_channels(h, width_mult)
        total += 9 * (prev + label_nc) * c + 2 * c  # conv1 + LN1
        total += 9 * c * c + 2 * c  # conv2 + LN2
        prev = c
    return total + prev * 3 * k + 3 * k


def _conv3x3(cin, cout):
    return Conv2d(cin, cout, 3, 1, pad_mode="same", has_bias=False,
                     weight_init=initializer(XavierUniform(), (cout, cin, 3, 3)))


def _bilinear_taps(n_in, n_out):
    """Source indices and weights of an align_corners linear resize from n_in to n_out samples."""
    pos = np.arange(n_out) * (n_in - 1) / max(n_out - 1, 1)
    lo = np.clip(np.floor(pos).astype(np.int32), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def _bilinear_matrix(n_in, n_out):
    """[n_in, n_out] matrix M with ``x @ M`` = the align_corners linear resize of x's last axis."""
    lo, hi, frac = _bilinear_taps(n_in, n_out)
    m = np.zeros((n_in, n_out), np.float32)
    np.add.at(m, (lo, np.arange(n_out)), 1.0 - frac)
    np.add.at(m, (hi, np.arange(n_out)), frac)
    return m


class BilinearUpsample(nn.Cell):
    """Bilinear resize with align_corners (TF ``resize_bilinear(align_corners=True)``).

    ``export_form=False`` uses ``ops.interpolate`` (fast, for training); ``export_form=True`` computes the
    same values with ops that ONNX export supports (MindSpore 2.10 cannot export ResizeBilinearV2): the
    columns as one MatMul with the [w, width] interpolation matrix (a per-element Gather along the last axis
    was the slow part in onnxruntime), the rows as Gathers of whole rows and a linear blend.
    :meth:`CascadedRefinementNetwork.prepare_export` switches to it.

    Shapes: [B, C, h, w] -> [B, C, height, width].
    """

    def __init__(self, in_size, out_size):
        super().__init__()
        self.out_size = tuple(out_size)
        self.export_form = False
        rows_lo, rows_hi, frac_h = _bilinear_taps(in_size[0], out_size[0])
        self.rows_lo, self.rows_hi = Tensor(rows_lo), Tensor(rows_hi)
        self.frac_h = Tensor(frac_h.reshape(-1, 1))
        self.cols = Tensor(_bilinear_matrix(in_size[1], out_size[1]))

    def construct(self, x):
        if not self.export_form:
            return ops.interpolate(x, size=self.out_size, mode="bilinear", align_corners=True)
        b, c, h, w = x.shape
        x = ops.matmul(x.reshape(b * c * h, w), self.cols).reshape(b, c, h, self.out_size[1])
        return ops.gather(x, self.rows_lo, 2) * (1.0 - self.frac_h) + ops.gather(x, self.rows_hi, 2) * self.frac_h


class _LayerNormLReLUFunction(Float32Only, nn.Cell):
    """``lrelu(layer_norm(x) * gamma + beta)`` with a hand-written backward that keeps only ``x``.

    Autodiff of the composed ops would hold five full-size intermediates per call for the backward
    pass (x - mean, the normalised x, its affine transform, the LReLU input and mask); this backward
    recomputes them from ``x`` and the per-sample statistics instead (same math, one saved tensor).
    The per-channel steps run through :class:`common.layers.ChannelAffine` (a broadcast [1, C, 1, 1]
    Mul/Add keeps full-size buffers alive in MindSpore's CPU graphs); ``export_form`` (set by
    :meth:`CascadedRefinementNetwork.prepare_export`) computes the forward with plain ops for ONNX.

    Shapes: x [B, C, H, W], gamma [C], beta [C] -> [B, C, H, W].

    Float32 under mixed precision: O2 marks this cell and :class:`LayerNormLReLU`, which holds gamma and beta,
    float32 (:class:`common.layers.Float32Only`); under O1 neither is marked, and the float16 output of the
    convolution before is cast up here (its gradient goes back as float16).
    """

    def __init__(self, eps, slope):
        super().__init__()
        self.eps, self.slope = eps, slope
        self.export_form = False
        self.norm, self.affine = ChannelAffine(eps), ChannelAffine()

    def _centre(self, x):
        """x -> (x - mean [B, C, H, W], mean, biased variance [B, 1, 1, 1]) over (C, H, W)."""
        mean = reduce_mean(x, (1, 2, 3))
        centred = x - mean
        return centred, mean, reduce_mean(ops.square(centred), (1, 2, 3))

    def construct(self, x, gamma, beta):
        b, c = x.shape[0], x.shape[1]
        x = ops.cast(x, ms.float32)
        centred, mean, var = self._centre(x)
        if self.export_form:  # divisions, as ONNX has no Rsqrt/Reciprocal export
            z = centred * (gamma.reshape(1, -1, 1, 1) / ops.sqrt(var + self.eps)) + beta.reshape(1, -1, 1, 1)
        else:
            per_sample = ops.ones((b, c), x.dtype)
            z = self.norm(x, per_sample * gamma, per_sample * beta, per_sample * mean.reshape(b, 1),
                          per_sample * var.reshape(b, 1))
        return ops.maximum(z, self.slope * z)

    def bprop(self, x, gamma, beta, out, dout):
        b, c, dtype = x.shape[0], x.shape[1], x.dtype
        # Depend: not merged with the forward's (kept alive)
        centred, _, var = self._centre(ops.cast(ops.depend(x, dout), ms.float32))
        # out = max(z, slope*z) has the sign of z, so the LReLU slope is read from out
        dz = ops.select(out > 0, dout, self.slope * dout)
        # per (sample, channel) sums: d_beta and, over centred / std = x_hat, d_gamma
        s = reduce_sum(dz, (2, 3), keep_dims=False)  # [B, C]
        std = ops.sqrt(var.reshape(b, 1) + self.eps)
        t = reduce_sum(dz * centred, (2, 3), keep_dims=False) / std
        d_beta, d_gamma = s.sum(axis=0), t.sum(axis=0)
        # dx = (d_xhat - mean(d_xhat) - x_hat * mean(d_xhat * x_hat)) / std with d_xhat = dz * gamma; both means
        # are per-sample sums of the per-channel sums above, so dx = dz * gamma/std + centred * u + v
        g = gamma.reshape(1, -1)
        count = x.shape[1] * x.shape[2] * x.shape[3]
        mean_d = (s * g).sum(axis=1, keepdims=True) / count  # [B, 1]
        mean_dx = (t * g).sum(axis=1, keepdims=True) / count
        per_sample = ops.ones((b, c), ms.float32)
        dx = self.affine(dz, g / std, ops.zeros_like(per_sample)) + \
            self.affine(centred, per_sample * (-mean_dx / (std * std)), per_sample * (-mean_d / std))
        return ops.cast(dx, dtype), d_gamma, d_beta


class LayerNormLReLU(Float32Only, nn.Cell):
    """Layer norm over (C, H, W) with per-channel gamma/beta (``common.layers.LayerNorm2d``, TF
    ``slim.layer_norm``) followed by LReLU(0.2), the pair that follows every CRN conv, with a
    memory-lean backward (see :class:`_LayerNormLReLUFunction`).

    Shapes: [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, num_features, eps=1e-12, slope=0.2):
        super().__init__()
        self.gamma = Parameter(initializer("ones", (num_features,)), name="gamma")
        self.beta = Parameter(initializer("zeros", (num_features,)), name="beta")
        self.function = _LayerNormLReLUFunction(eps, slope)

    def construct(self, x):
        return self.function(x, self.gamma, self.beta)


class RefinementModule(nn.Cell):
    """One cascade stage: [upsampled features, label] -> conv3x3-LN-LReLU -> conv3x3-LN-LReLU.

    Args:
        in_feat: channels of the previous module's features (0 for the first module).
        label_nc: label channels (classes + void).
        out_feat: channels of this module.
        height, width: resolution of this module.

    Shapes: features [B, in_feat, H/2, W/2] (or None), label [B, label_nc, H, W] -> [B, out_feat, H, W].
    """

    def __init__(self, in_feat, label_nc, out_feat, height, width):
        super().__init__()
        self.has_input = in_feat > 0
        self.upsample = BilinearUpsample((height // 2, width // 2), (height, width))
        self.conv1 = _conv3x3(in_feat + label_nc, out_feat)
        self.norm1 = LayerNormLReLU(out_feat)
        self.conv2 = _conv3x3(out_feat, out_feat)
        self.norm2 = LayerNormLReLU(out_feat)

    def construct(self, features, label):
        if self.has_input:
            x = ops.cat((self.upsample(features), label), 1)
        else:
            x = label
        x = self.norm1(self.conv1(x))
        return self.norm2(self.conv2(x))


class CascadedRefinementNetwork(nn.Cell):
    """Label map -> k images.

    Args:
        size: output height (a power of two; width = ``aspect * size``).
        label_nc: label channels, classes + 1 void channel (20 for Cityscapes).
        num_outputs: k diverse images.
        width_mult: scales every module's channels (1.0 = the paper; smaller for quick runs).
        aspect: output width / height (2 for Cityscapes).

    Shapes: label [B, label_nc, size, aspect*size] -> [B, k, 3, size, aspect*size], values ~0..255.
    """

    def __init__(self, size=256, label_nc=20, num_outputs=9, width_mult=1.0, aspect=2):
        super().__init__()
        if label_nc < 2:
            raise ValueError(f"label_nc={label_nc}: need at least one class plus the void channel")
        if num_outputs < 1:
            raise ValueError(f"num_outputs={num_outputs} must be >= 1")
        self.size, self.label_nc, self.num_outputs = size, label_nc, num_outputs
        self.width_mult, self.aspect = width_mult, aspect
        self.heights = module_heights(size)
        modules, prev = [], 0
        for h in self.heights:
            c = module_channels(h, width_mult)
            modules.append(RefinementModule(prev, label_nc, c, h, aspect * h))
            prev = c
        self.refine = nn.CellList(modules)
        self.to_rgb = Conv2d(prev, 3 * num_outputs, 1, 1, pad_mode="valid", has_bias=True,
                                weight_init=initializer(XavierUniform(), (3 * num_outputs, prev, 1, 1)),
                                bias_init="zeros")
        self.area_down = nn.AvgPool2d(2, 2)

    @property
    def input_shape(self):
        """(label_nc, H, W) the network expects after the batch axis."""
        return self.label_nc, self.size, self.aspect * self.size

    def check_input(self, shape, source="label map"):
        """Raise a ValueError naming ``source`` if a label tensor of ``shape`` does not fit this network."""
        want = self.input_shape
        if len(shape) != 4 or tuple(shape[1:]) != want:
            raise ValueError(
                f"{source}: label tensor of shape {tuple(shape)} does not fit the {self.size}p CRN, which takes "
                f"[B, {want[0]}, {want[1]}, {want[2]}] ({want[0] - 1} classes + void, one-hot); resize the "
                f"label map to {want[1]}x{want[2]} (nearest) or set num_classes/size to match")

    def prepare_export(self):
        """Switch every upsampling and layer norm to its ONNX-exportable form (same values) and to inference mode."""
        for module in self.refine:
            module.upsample.export_form = True
            module.norm1.function.export_form = module.norm2.function.export_form = True
        self.set_train(False)
        return self

    def construct(self, label):
        pyramid = [label]
        for _ in range(len(self.heights) - 1):
            pyramid.append(self.area_down(pyramid[-1]))
        features = None
        for i, module in enumerate(self.refine):
            features = module(features, pyramid[len(self.heights) - 1 - i])
        out = (self.to_rgb(features) + 1.0) * 127.5
        return split_outputs(out, self.num_outputs)


def split_outputs(out, k):
    """[B, 3k, H, W] in the reference channel layout (colour-major) -> [B, k, 3, H, W]."""
    b, _, h, w = out.shape
    return out.reshape(b, 3, k, h, w).transpose(0, 2, 1, 3, 4)


def build_generator(cfg, label_nc):
    """The CRN of a config (keys size, num_outputs, width_mult, aspect)."""
    k = cfg.num_outputs or default_num_outputs(cfg.size)
    return CascadedRefinementNetwork(cfg.size, label_nc, k, cfg.width_mult, cfg.aspect)

