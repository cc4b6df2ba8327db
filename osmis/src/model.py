"""OSMIS / SIV-GAN generator and discriminator (Sushko et al., WACV 2023; one-shot-synthesis reference).

Channel tables (``ch`` = ``ch_G`` / ``ch_D``, default 32): G ``[8,8,8,8,8,8,8,4,2,1] * ch`` (the last
``num_blocks_g + 1`` entries), D ``[1,2,4,8,8,8,8,8,8] * ch`` (the first ``num_blocks_d + 1``; with masks
the entries ``num_blocks_d0 + 1 ... num_blocks_d - 1`` are doubled). Every convolution is spectrally
normalised (``common.spectral_norm``) except the generator's first (transposed) layer and its mask head.

Shapes at 320x320 (G=7, D=7, D0=3, batch B, C mask classes):

* G: z [B, 64, 1, 1] -> 5x5 (first_linear) -> blocks at 5, 10, 20, 40, 80, 160, 320 with 256, 256, 256,
  256, 128, 64, 32 channels; an RGB image per block [B, 3, s, s]; features ``tanh(block output)``; mask
  ``softmax(conv3x3(last block))`` [B, C, 320, 320].
* D low-level: images at 80, 160, 320 -> outputs [B, 1, 160, 160], [B, 1, 80, 80], [B, 1, 40, 40];
  feature [B, 256, 40, 40].
* D content: spatial mean [B, 256, 1, 1] (with masks: one masked mean per class, [C*B, 256, 1, 1],
  class-major) -> 4 outputs [B, 1, 1, 1] (with masks [C*B, C+1, 1, 1]).
* D layout: 40 -> 20 -> 10 -> 5 -> 2: outputs [B, 1, 20, 20], [B, 1, 10, 10], [B, 1, 5, 5], [B, 1, 2, 2].
"""

import math

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal

from common.conv import Conv2d, ConvTranspose2d
from common.layers import AvgPool2d, InstanceNorm2d, LeakyReLU, NearestUpsample, reduce_mean
from common.spectral_norm import SpectralNorm
from osmis.src.augment import ContentFA, LayoutFA

__all__ = ["G_CHANNELS", "D_CHANNELS", "NORMS", "generator_channels", "discriminator_channels", "Generator",
           "Discriminator", "G_block", "D_block", "TrainingOutputs", "FlatRows", "resize_nearest", "build_networks"]

G_CHANNELS = (8, 8, 8, 8, 8, 8, 8, 4, 2, 1)
D_CHANNELS = (1, 2, 4, 8, 8, 8, 8, 8, 8)
NORMS = ("none", "instance", "batch")
MSG_RATIO = 8  # from_rgb channels of the lower image scales: ch_i / 8

def generator_channels(num_blocks_g, ch_G):
    return [int(m * ch_G) for m in G_CHANNELS][-num_blocks_g - 1:]

def discriminator_channels(num_blocks_d, num_blocks_d0, ch_D, *, masks):
    chs = [int(m * ch_D) for m in D_CHANNELS][:num_blocks_d + 1]
    if masks:
        for i in range(num_blocks_d0 + 1, num_blocks_d):
            chs[i] *= 2
    return chs

def sn_conv(cin, cout, kernel, *, bias=True):
    """Spectrally normalised ``kernel`` x ``kernel`` convolution, 'same' padding."""
    pad = kernel // 2
    conv = Conv2d(cin, cout, kernel, pad_mode="pad" if pad else "valid", padding=pad, has_bias=bias)
    return SpectralNorm(conv)

def norm_layer(name, channels):
    if name == "none":
        return nn.Identity()
    if name == "instance":
        return InstanceNorm2d(channels)
    if name == "batch":
        return nn.BatchNorm2d(channels, momentum=0.9)
    raise ValueError(f"norm={name!r}; choose one of {NORMS}")

def resize_nearest(x, size):
    """Nearest-neighbour resize of [B, C, H, W] to ``size`` (PyTorch 'nearest': source = floor(dst * in/out))."""
    return ops.interpolate(x, size=size, mode="nearest")

def channel_softmax(x):
    """Softmax over axis 1 of [B, C, H, W] from exp/max/sum (MindSpore's ONNX export of an axis-1 softmax at
    opset 11 writes inconsistent Transpose shapes)."""
    e = ops.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class G_block(nn.Cell):
    """Residual up-block: [norm] LReLU up2 SNconv3 [norm] LReLU SNconv3 + up2 SNconv1 (no bias).

    [B, cin, h, w] -> [B, cout, 2h, 2w] (no upsampling in the first block). The shortcut runs its 1x1
    convolution before the nearest upsampling, on a quarter of the pixels: a bias-free 1x1 convolution
    commutes with nearest upsampling, so the values are the same.
    """

    def __init__(self, cin, cout, norm, *, first):
        super().__init__()
        mid = min(cin, cout)
        self.first = first
        self.norm1, self.norm2 = norm_layer(norm, cin), norm_layer(norm, mid)
        self.activ = LeakyReLU(0.2)
        self.conv1, self.conv2 = sn_conv(cin, mid, 3), sn_conv(mid, cout, 3)
        self.conv_sc = sn_conv(cin, cout, 1, bias=False)
        self.up = NearestUpsample(2)

    def construct(self, x):
        h = self.conv_sc(x)
        x = self.activ(self.norm1(x))
        if not self.first:
            x, h = self.up(x), self.up(h)
        x = self.conv2(self.activ(self.norm2(self.conv1(x))))
        return h + x

class Generator(nn.Cell):
    """Noise -> one image per scale (+ mask).

    Args:
        noise_shape: (h, w) of the first feature map.
        num_blocks_g: blocks (scales).
        num_mask_channels: C classes of the mask head (0: SIV-GAN, no masks).
        ch_G, noise_dim, norm: reference options.

    ``construct(z [B, noise_dim, 1, 1])`` -> flat tuple ``(image_1 .. image_G, feature_1 .. feature_G[,
    mask])``: images [B, 3, s_k] in [-1, 1] (tanh), features ``tanh`` of the block outputs (the diversity
    regulariser's input), mask [B, C, H, W] (softmax over classes).
    """

    def __init__(self, noise_shape, num_blocks_g, num_mask_channels=0, ch_G=32, noise_dim=64, norm="none"):
        super().__init__()
        chs = generator_channels(num_blocks_g, ch_G)
        self.num_blocks = num_blocks_g
        self.noise_dim, self.ch_G = noise_dim, ch_G
        self.num_mask_channels = num_mask_channels
        self.first_linear = ConvTranspose2d(noise_dim, chs[0], tuple(noise_shape), pad_mode="valid", has_bias=True)
        self.body = nn.CellList([G_block(chs[i], chs[i + 1], norm, first=i == 0) for i in range(num_blocks_g)])
        self.rgb_converters = nn.CellList([sn_conv(chs[i + 1], 3, 3) for i in range(num_blocks_g)])
        self.masks = num_mask_channels > 0
        if self.masks:
            self.mask_converter = Conv2d(chs[-1], num_mask_channels, 3, pad_mode="pad", padding=1, has_bias=True,
                                         weight_init=Normal(0.02))

    def construct(self, z):
        x = self.first_linear(z)
        images, features = (), ()
        for block, to_rgb in zip(self.body, self.rgb_converters):
            x = block(x)
            images += (ops.tanh(to_rgb(x)),)
            features += (ops.tanh(x),)
        if self.masks:
            return images + features + (channel_softmax(self.mask_converter(x)),)
        return images + features

class D_block(nn.Cell):
    """Residual down-block: [norm LReLU] SNconv [norm] LReLU SNconv AvgPool2 + SNconv1 AvgPool2.

    ``content=True``: 1x1 convolutions, no pooling, identity shortcut when cin == cout (the content
    branch on [N, C, 1, 1] vectors). ``first=True`` skips the leading norm/activation. Average pooling
    is linear: the block pools the sum of the two paths once (``pool(x) + pool(h) = pool(x + h)``).
    """

    def __init__(self, cin, cout, norm, *, first=False, content=False):
        super().__init__()
        mid = min(cin, cout)
        k = 1 if content else 3
        self.first, self.pool = first, not content
        self.norm1, self.norm2 = norm_layer(norm, cin), norm_layer(norm, mid)
        self.activ = LeakyReLU(0.2)
        self.conv1, self.conv2 = sn_conv(cin, mid, k), sn_conv(mid, cout, k)
        self.learned_sc = cin != cout or not content
        if self.learned_sc:
            self.conv_sc = sn_conv(cin, cout, 1, bias=False)
        self.down = AvgPool2d(2)

    def construct(self, x):
        h = x
        if not self.first:
            x = self.activ(self.norm1(x))
        x = self.conv2(self.activ(self.norm2(self.conv1(x))))
        if self.learned_sc:
            h = self.conv_sc(h)
        if self.pool:
            return self.down(x + h)
        return x + h


class Discriminator(nn.Cell):
    """Low-level branch over the image pyramid, then content and layout branches.

    Args:
        num_blocks_d, num_blocks_d0: all blocks / low-level blocks (= image scales D sees).
        num_mask_channels: C (0: SIV-GAN). With masks the content branch runs on per-class masked means
            and predicts C+1 classes (C real classes + "fake").
        ch_D, norm: reference options.

    ``construct(images, mask=None, fa=None)``: ``images`` a tuple of D0 tensors, low to high resolution
    ([B, 3, H/2^(D0-1), W/2^(D0-1)] ... [B, 3, H, W]); ``mask`` [B, C, h, w] at the low-level feature's
    size (hard or soft one-hot, OSMIS only); ``fa`` = ``(mix, drop, layout)``, the feature-augmentation
    draws applied to reals (:class:`osmis.src.augment.ContentFA` / :class:`~osmis.src.augment.LayoutFA`).
    Returns ``(low_level, content, layout)``, tuples of decision maps.
    """

    def __init__(self, num_blocks_d, num_blocks_d0, num_mask_channels=0, ch_D=32, norm="none", batch_size=5):
        super().__init__()
        self.content_fa = ContentFA(batch_size)
        self.layout_fa = LayoutFA(batch_size, num_mask_channels=num_mask_channels)
        # training iterations done (non-trainable, saved with D): the Bernoulli mask warm-up reads it
        self.iteration = Parameter(Tensor(0.0, ms.float32), name="iteration", requires_grad=False)
        masks = num_mask_channels > 0
        chs = discriminator_channels(num_blocks_d, num_blocks_d0, ch_D, masks=masks)
        if num_blocks_d0 > 1 and chs[1] // MSG_RATIO < 1:
            raise ValueError(f"ch_D={ch_D}: the lower image scales of the {num_blocks_d0} low-level blocks enter D "
                             f"through ch_D/4 channels, here none; use --ch_D=4 or more (or --num_blocks_d0=1)")
        self.masks, self.num_mask_channels = masks, num_mask_channels
        self.num_blocks_d0 = num_blocks_d0
        body_ll, from_rgb, final_ll = [], [], []
        for i in range(num_blocks_d0):
            msg = chs[i] // MSG_RATIO if i > 0 else chs[0]
            cin = chs[i] + msg if i > 0 else chs[0]
            body_ll.append(D_block(cin, chs[i + 1], norm, first=i == 0))
            from_rgb.append(sn_conv(3, msg, 3))
            final_ll.append(sn_conv(chs[i + 1], 1, 1))
        self.body_ll, self.rgb_to_features, self.final_ll = nn.CellList(body_ll), nn.CellList(from_rgb), nn.CellList(final_ll)
        n_out = num_mask_channels + 1 if masks else 1
        ks = range(num_blocks_d0, num_blocks_d)
        self.body_content = nn.CellList([D_block(chs[i], chs[i + 1], norm, content=True) for i in ks])
        self.final_content = nn.CellList([sn_conv(chs[i + 1], n_out, 1) for i in ks])
        self.body_layout = nn.CellList([D_block(chs[i] if i == num_blocks_d0 else 1, 1, norm) for i in ks])
        self.final_layout = nn.CellList([sn_conv(1, 1, 1) for _ in ks])
        self.feature_channels = chs[num_blocks_d0]

    def low_level(self, images):
        """-> (decision maps, feature [B, ch_D0, H/2^D0, W/2^D0])."""
        y = self.rgb_to_features[0](images[-1])
        outs = ()
        for i in range(self.num_blocks_d0):
            if i > 0:
                y = ops.concat((y, self.rgb_to_features[i](images[-i - 1])), axis=1)
            y = self.body_ll[i](y)
            outs += (self.final_ll[i](y),)
        return outs, y

    def masked_means(self, y, mask):
        """Per-class masked spatial means [C*B, ch, 1, 1] (class-major) of y [B, ch, h, w]; mask [B, C, h, w]."""
        parts = ()
        for c in range(self.num_mask_channels):
            parts += (reduce_mean(mask[:, c:c + 1] * y, (2, 3)),)
        return ops.concat(parts, axis=0)

    def construct(self, images, mask=None, fa=None):
        low, y = self.low_level(images)
        return (low,) + self.branches(y, mask, fa)

    def low_level_cells(self):
        """The low-level branch's cells, in one list."""
        return nn.CellList([self.body_ll, self.rgb_to_features, self.final_ll], auto_prefix=False)

    def branches(self, y, mask=None, fa=None):
        """(content, layout) decision maps of the low-level feature y [B, ch, h, w] (``mask``, ``fa``: as in
        ``construct``)."""
        if self.masks:
            y_con = self.masked_means(y, mask)
        else:
            y_con = reduce_mean(y, (2, 3))
        y_lay = y
        if fa is not None:
            y_con = self.content_fa(y_con, fa[0], fa[1])
            y_lay = self.layout_fa(y, fa[2], mask)
        content = ()
        for block, final in zip(self.body_content, self.final_content):
            y_con = block(y_con)
            content += (final(y_con),)
        layout = ()
        for block, final in zip(self.body_layout, self.final_layout):
            y_lay = block(y_lay)
            layout += (final(y_lay),)
        return content, layout

class TrainingOutputs(nn.Cell):
    """The generator outputs the G step uses, flattened into one tensor [B, N], and the D step's fakes.

    ``construct(z)``: ``G(z)``'s images of the last D0 scales, features and mask, each reshaped to [B, -1] and
    concatenated (:meth:`unpack` restores them). One output tensor keeps the train step's pullback
    (``common.train.GANTrainStep``) a single vjp, which PyNative needs (MindSpore 2.10 differentiates no tuple
    argument there). :meth:`fakes` gives the D step its fakes from a new noise batch, unflattened and under
    ``stop_gradient``, as the reference draws them (no features: D does not use them).
    """

    def __init__(self, generator, num_blocks_d0, resolution):
        super().__init__(auto_prefix=False)
        self.generator = generator
        g = generator.num_blocks
        self.first, self.g = g - num_blocks_d0, g
        chs = generator_channels(g, generator.ch_G)
        h, w = resolution
        sizes = [(h // 2 ** (g - 1 - k), w // 2 ** (g - 1 - k)) for k in range(g)]
        shapes = [(3,) + sizes[k] for k in range(self.first, g)] + [(chs[k + 1],) + sizes[k] for k in range(g)]
        if generator.masks:
            shapes.append((generator.num_mask_channels, h, w))
        self.unpack = FlatRows(shapes)

    def construct(self, z):
        out = self.generator(z)
        b = z.shape[0]
        return ops.concat([x.reshape(b, -1) for x in out[self.first:self.g] + out[self.g:]], axis=1)

    def fakes(self, z):
        """``G(z)`` for the D step: (D0 images [B, 3, s_k] ..., mask [B, C, H, W] or None), no gradient."""
        out = self.generator(z)
        images = tuple(ops.stop_gradient(x) for x in out[self.first:self.g])
        return images, ops.stop_gradient(out[-1]) if self.generator.masks else None


class FlatRows(nn.Cell):
    """A flat [B, N] tensor -> tuple of [B, *shape] for ``shapes`` (consecutive column blocks).

    The backward is one concatenation of the pieces' gradients (zeros for pieces without one).
    """

    def __init__(self, shapes):
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]

    def construct(self, flat):
        pieces = ops.split(flat, self.sizes, axis=1)
        return tuple(x.reshape((-1,) + shape) for x, shape in zip(pieces, self.shapes))

    def bprop(self, flat, out, dout):
        b = flat.shape[0]
        return (ops.concat([d.reshape(b, -1) for d in dout], axis=1),)


def build_networks(arch, batch_size=5):
    """(G, D) from an architecture dict (``osmis.src.spec.OSMISSpec.arch``)."""
    g = Generator(tuple(arch["noise_shape"]), arch["num_blocks_g"], arch["num_mask_channels"], arch["ch_G"],
                  arch["noise_dim"], arch["norm_G"])
    d = Discriminator(arch["num_blocks_d"], arch["num_blocks_d0"], arch["num_mask_channels"], arch["ch_D"],
                      arch["norm_D"], batch_size)
    return g, d

