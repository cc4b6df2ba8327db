"""CoCosNet cross-domain correspondence network (the reference ``NoVGGCorrespondence``, ADE20K options).

Pipeline at 256x256 (full width ``ngf=64``, 151 classes; ``N = 64*64 = 4096`` positions)::

    seg [B,151,256,256] -AdaptiveFeatureGenerator-> [B,256,64,64] -L2 over C-> f_seg
    ref [B,3,256,256]   -AdaptiveFeatureGenerator-> [B,256,64,64] -L2 over C-> f_ref
    [f_seg, seg@64] / [f_ref, ref_seg@64]  [B,407,64,64] -4 shared ResidualBlocks-> -theta / phi 1x1-> [B,256,64,64]
    3x3 unfold, centre and L2-normalise per position      -> [B,2304,N] each
    corr = softmax_j(theta_i . phi_j / 0.01)              -> [B,N,N]
    warp_out  = nearest x4(corr @ avgpool4(ref))          -> [B,3,256,256]
    warp_mask = corr @ nearest(ref_seg@64)                -> [B,151,64,64]

``@64`` is a nearest resize to the correlation grid (every 4th pixel). The matching (unfold, centring,
correlation, softmax and both warps) runs in float32 under any ``--amp_level`` (:class:`CorrelationWarp`).
"""
from mindspore import dtype as mstype
from mindspore import nn, ops

from common.conv import Unfold
from common.layers import Float32Only, Float32Softmax, InstanceNorm2d, LeakyReLU, expand, reduce_mean
from cocosnet.src.blocks import (ResidualBlock, SPADEResnetBlock, conv2d, feature_normalize,
                                 nearest_resize, sn_conv2d)

__all__ = ["center_normalize", "correlation", "warp", "avg_pool", "CorrelationWarp",
           "AdaptiveFeatureGenerator", "CorrespondenceNet"]


def center_normalize(x):
    """Per position (column of [B, D, N]): subtract the mean over D, divide by (L2 norm + FLOAT_EPS)."""
    return feature_normalize(x - expand(reduce_mean(x, (1,)), x))


def correlation(theta, phi, temperature, softmax):
    """Softmax over exemplar positions of the cosine similarities divided by ``temperature``.

    Args:
        theta: [B, D, N] normalised query features (input label map side).
        phi: [B, D, M] normalised key features (exemplar side).
        softmax: a :class:`common.layers.Softmax` (over the last axis).

    Returns:
        [B, N, M], each row sums to 1.
    """
    f = ops.BatchMatMul(transpose_a=True)(theta, phi)
    return softmax(f * (1.0 / temperature))  # not f / t: Div keeps broadcast tables of f's size


def warp(corr, source):
    """``out[:, :, i] = sum_j corr[:, i, j] * source[:, :, j]``: [B, N, M] x [B, C, h, w] (h*w = M) -> [B, C, N]."""
    b, c, h, w = source.shape
    return ops.BatchMatMul(transpose_b=True)(source.reshape(b, c, h * w), corr)


def avg_pool(x, factor):
    """Mean over non-overlapping ``factor x factor`` blocks: [B, C, H, W] -> [B, C, H/f, W/f]."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))


class CorrelationWarp(Float32Only, nn.Cell):
    """The matching, always in float32: 3x3 unfold, centring and L2 norm per position, correlation softmax at
    ``temperature``, warps of the pooled exemplar and of its label map.

    Mixed precision (``--amp_level``) leaves this cell float32: it is marked ``to_float(float32)`` and refuses lower
    precisions (``common.layers.Float32Only``), and so does its softmax (``Float32Softmax``), which O2 marks on its
    own; the unfold may turn float16 (it only copies values), so the cell casts after it. With temperature 0.01 the
    softmax scales cosine similarities by 100, so a float16 rounding of 1e-3 would move the logits by 0.1.

    ``construct(theta_feat, phi_feat, ref_small, ref_seg_small)``: theta_feat, phi_feat [B, C, h, w],
    ref_small [B, 3, h, w], ref_seg_small [B, L, h, w], any float dtype (MindSpore casts them to float32 on the way
    in) -> (warp_small [B, 3, h, w], warp_mask [B, L, h, w] (it feeds the NLL with its 1e-10 floor, below float16's
    range), theta, phi [B, k*k*C, h*w], corr [B, h*w, h*w]), all float32.
    """

    def __init__(self, temperature=0.01, match_kernel=3):
        super().__init__()
        self.temperature = temperature
        self.unfold = Unfold(match_kernel)
        self.softmax = Float32Softmax()  # a child, so that use_conv_impl hands it the compiled backward
        self.to_float(mstype.float32)

    def construct(self, theta_feat, phi_feat, ref_small, ref_seg_small):
        b, _, h, w = ref_small.shape
        # the unfold only copies values: cast after it, as O2's blanket float16 may have made it a float16 cell
        theta = center_normalize(ops.cast(self.unfold(theta_feat), mstype.float32))
        phi = center_normalize(ops.cast(self.unfold(phi_feat), mstype.float32))
        corr = correlation(theta, phi, self.temperature, self.softmax)
        warp_small = warp(corr, ref_small).reshape(b, 3, h, w)
        warp_mask = warp(corr, ref_seg_small).reshape(b, ref_seg_small.shape[1], h, w)
        return warp_small, warp_mask, theta, phi, corr


class AdaptiveFeatureGenerator(nn.Cell):
    """Domain encoder: 5 spectral-normalised 3x3 convs (no bias) with instance norm, LReLU(0.2) between,
    then 3 SPADE residual blocks modulated by the encoder's own input.

    Channels ``input_nc -> ngf -> 2ngf (/2) -> 4ngf -> 8ngf (/2) -> 8ngf``, then ``8ngf -> 8ngf -> 8ngf -> 4ngf``.

    Shapes: [B, input_nc, H, W] -> [B, 4*ngf, H/4, W/4].
    """

    def __init__(self, input_nc, ngf=64, spade_hidden=128):
        super().__init__()
        chans = (input_nc, ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf)
        strides = (1, 2, 1, 2, 1)
        for i in range(5):
            layer = nn.SequentialCell([sn_conv2d(chans[i], chans[i + 1], 3, strides[i], 1, bias=False),
                                       InstanceNorm2d(chans[i + 1])])
            setattr(self, f"layer{i + 1}", layer)
        self.actvn = LeakyReLU(0.2)
        self.head_0 = SPADEResnetBlock(8 * ngf, 8 * ngf, input_nc, spade_hidden)
        self.G_middle_0 = SPADEResnetBlock(8 * ngf, 8 * ngf, input_nc, spade_hidden)
        self.G_middle_1 = SPADEResnetBlock(8 * ngf, 4 * ngf, input_nc, spade_hidden)

    def construct(self, x):
        y = self.layer1(x)
        y = self.layer2(self.actvn(y))
        y = self.layer3(self.actvn(y))
        y = self.layer4(self.actvn(y))
        y = self.layer5(self.actvn(y))
        y = self.head_0(y, x)
        y = self.G_middle_0(y, x)
        return self.G_middle_1(y, x)


class CorrespondenceNet(nn.Cell):
    """Cross-domain correspondence: warps the exemplar (and its label map) onto the input label map.

    Args:
        label_nc: one-hot classes of the label maps (151 for ADE20K: 150 + "other").
        ngf: encoder width (64 in the paper; smaller for tests).
        corr_channels: theta/phi channels before the 3x3 unfold (256).
        spade_hidden: hidden channels of every SPADE (128).
        temperature: softmax temperature of the correlation (0.01).
        match_kernel: neighbourhood unfolded into each matching vector (3).

    ``construct(seg, ref, ref_seg)``: seg [B, label_nc, H, W] one-hot, ref [B, 3, H, W] in [-1, 1],
    ref_seg [B, label_nc, H, W] -> (warp_out [B, 3, H, W], warp_mask [B, label_nc, H/4, W/4]).
    H and W must be multiples of 4. :meth:`correspond` also returns the intermediates.
    """

    DOWN = 4

    def __init__(self, label_nc=151, ngf=64, corr_channels=256, spade_hidden=128, temperature=0.01, match_kernel=3):
        super().__init__()
        if match_kernel % 2 != 1:
            raise ValueError(f"match_kernel={match_kernel} must be odd (3 in the reference)")
        self.adaptive_model_seg = AdaptiveFeatureGenerator(label_nc, ngf, spade_hidden)
        self.adaptive_model_img = AdaptiveFeatureGenerator(3, ngf, spade_hidden)
        mixed = 4 * ngf + label_nc
        self.layer = nn.SequentialCell([ResidualBlock(mixed) for _ in range(4)])
        self.theta = conv2d(mixed, corr_channels, 1)
        self.phi = conv2d(mixed, corr_channels, 1)
        self.matching = CorrelationWarp(temperature, match_kernel)

    def encode_label(self, seg):
        """Label-domain features, L2-normalised over channels: [B, label_nc, H, W] -> [B, 4ngf, H/4, W/4]."""
        return feature_normalize(self.adaptive_model_seg(seg))

    def encode_image(self, image):
        """Image-domain features, L2-normalised over channels: [B, 3, H, W] -> [B, 4ngf, H/4, W/4]
        (also applied to the real image for the domain-alignment loss)."""
        return feature_normalize(self.adaptive_model_img(image))

    def correspond(self, seg, ref, ref_seg):
        """The forward pass with its intermediates.

        Returns:
            (warp_out [B,3,H,W], warp_mask [B,L,h,w], f_seg [B,4ngf,h,w], f_ref [B,4ngf,h,w],
            theta [B,k*k*corr_channels,h*w], phi [B,k*k*corr_channels,h*w], corr [B,h*w,h*w],
            warp_small [B,3,h,w]) with h, w = H/4, W/4.
        """
        f_seg = self.encode_label(seg)
        f_ref = self.encode_image(ref)
        warp_out, warp_mask, theta, phi, corr, warp_small = self.match(f_seg, f_ref, seg, ref, ref_seg)
        return warp_out, warp_mask, f_seg, f_ref, theta, phi, corr, warp_small

    def match(self, f_seg, f_ref, seg, ref, ref_seg):
        """Everything after the two encoders: the shared residual blocks, theta / phi and the matching.

        Args: f_seg, f_ref [B,4ngf,h,w] (:meth:`encode_label`, :meth:`encode_image`); seg, ref, ref_seg as in
        :meth:`correspond`.

        Returns:
            (warp_out, warp_mask, theta, phi, corr, warp_small), shaped as in :meth:`correspond`.
        """
        height, width = ref.shape[2], ref.shape[3]
        h, w = height // self.DOWN, width // self.DOWN
        seg_small = nearest_resize(seg, (h, w))
        ref_seg_small = nearest_resize(ref_seg, (h, w))
        cont = self.layer(ops.cat((f_seg, seg_small), 1))
        ref_feat = self.layer(ops.cat((f_ref, ref_seg_small), 1))
        warp_small, warp_mask, theta, phi, corr = self.matching(self.theta(cont), self.phi(ref_feat),
                                                                avg_pool(ref, self.DOWN), ref_seg_small)
        warp_out = nearest_resize(warp_small, (height, width))
        return warp_out, warp_mask, theta, phi, corr, warp_small

    def construct(self, seg, ref, ref_seg):
        out = self.correspond(seg, ref, ref_seg)
        return out[0], out[1]
