"""PyTorch restatement of the official OSMIS / SIV-GAN networks, losses, augmentations and training step: the
reference of the parity tests (``tests/test_osmis_torch_parity.py``) and of the same-run speed benchmark
(``bench/torch_osmis_step.py``).

Restated from ``boschresearch/one-shot-synthesis`` (AGPL; read, not copied): ``core/models.py`` (Generator,
G_block, Discriminator with ``content_masked_attention``, D_block), ``core/utils.py`` (``to_rgb``, ``from_rgb``,
``to_decision``, ``preprocess_real``), ``core/losses.py`` (``losses_computer`` with BCE, ``content_segm_loss`` and
``diversity_regularization``), ``core/feature_augmentation.py`` (``Content_FA``, ``Layout_FA``),
``core/differentiable_augmentation/AugmentPipe_kornia.py`` and ``train.py`` (what the G step and the D step feed D
and the losses). Every convolution the reference wraps in ``torch.nn.utils.spectral_norm`` is wrapped here too
(one power iteration per forward in training mode).

* Feature augmentation (:class:`ContentFA`, :class:`LayoutFA`, on reals only): each op fires on Python
  ``random.random() < prob`` as in the reference, with its in-place aliasing (content "mix" copies channels from
  row i + 1 into row i) and its early ``return`` (with masks, objects are moved in sample 0 only). At probability 0
  both are the identity.
* Image augmentation (:class:`AugmentPipe`, the kornia pipeline): per sample, every image scale is resized to full
  size (bilinear) and the scales and the mask form one pseudo-batch that shares the random parameters; zoom, crop
  or rotation, flip and mirror shifts; then each scale is resized back to its own size. At probability 0 no op
  fires but the resizing still happens, which blurs the lower scales (``osmis/README.md``, differences). Two
  departures, both named where they occur: the reference's kornia crops run as perspective warps, here as slices
  (the same pixels at integer offsets, at less cost); and the reference carries the mask through the pipeline as
  one 3-channel chunk of which it keeps 2 channels, so it runs only with 2-channel (binary) masks and fails on 3 or
  more (``The expanded size of the tensor (3) must match ... (2)``); here the mask travels in as many 3-channel
  chunks as it needs.
* Left out: norms other than ``none`` (the reference's default), the ``hinge`` / ``wgan`` losses.

The fake masks' Bernoulli hardening can take its uniform draws as an argument (``hard = u < clamp(p)``, the
definition of ``torch.bernoulli``) so that both sides of a parity test are fed the same draw.

Module and parameter names follow the MindSpore cells (``osmis.src.model``), so :func:`copy_from_mindspore` maps
them one to one (``X.conv.weight`` -> ``X.weight_orig``, ``X.conv.bias`` -> ``X.bias``).
"""
import math
import random

import torch
import torch.nn.functional as F
from torch import nn

SN = nn.utils.spectral_norm
G_CHANNELS = (8, 8, 8, 8, 8, 8, 8, 4, 2, 1)
D_CHANNELS = (1, 2, 4, 8, 8, 8, 8, 8, 8)
D_BLOCKS = {5: (6, 2), 6: (7, 3), 7: (7, 3), 8: (7, 4), 9: (8, 4)}  # G blocks -> (D blocks, of them low-level)


def reference_config(height, width):
    """``core/recommended_config.py`` for an image of ``height`` x ``width`` (already resized to ``max_size``): the
    first G depth g at which each side has had 3 <= side / 2^(g-1) <= 7. Returns (G blocks, noise (h, w), D blocks,
    low-level D blocks); ``SystemExit`` where the reference finds no depth (it crashes there)."""
    ok_h = ok_w = False
    for g in sorted(D_BLOCKS):
        ok_h |= 3 <= height / 2 ** (g - 1) <= 7
        ok_w |= 3 <= width / 2 ** (g - 1) <= 7
        if ok_h and ok_w:
            return (g, (round(height / 2 ** (g - 1)), round(width / 2 ** (g - 1)))) + D_BLOCKS[g]
    raise SystemExit(f"{height}x{width}: the reference finds no generator depth")


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def sn_conv(cin, cout, k, bias=True):
    return SN(nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias))


class GBlock(nn.Module):
    """``G_block``: norm, LReLU, up, conv1, norm, LReLU, conv2; shortcut up, then conv_sc (1x1, no bias)."""

    def __init__(self, cin, cout, first):
        super().__init__()
        mid = min(cin, cout)
        self.first = first
        self.conv1, self.conv2 = sn_conv(cin, mid, 3), sn_conv(mid, cout, 3)
        self.conv_sc = sn_conv(cin, cout, 1, bias=False)

    def ups(self, x):
        return x if self.first else F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, x):
        h = x
        x = self.conv2(lrelu(self.conv1(self.ups(lrelu(x)))))
        return self.conv_sc(self.ups(h)) + x


class Generator(nn.Module):
    """``Generator.generate(z, get_feat=True)`` -> {"images": [G], "features": [G], "masks": softmax (OSMIS)}."""

    def __init__(self, noise_shape, num_blocks, num_mask_channels, ch_G, noise_dim=64):
        super().__init__()
        chs = [int(m * ch_G) for m in G_CHANNELS][-num_blocks - 1:]
        self.first_linear = nn.ConvTranspose2d(noise_dim, chs[0], tuple(noise_shape))
        self.body = nn.ModuleList([GBlock(chs[i], chs[i + 1], i == 0) for i in range(num_blocks)])
        self.rgb_converters = nn.ModuleList([sn_conv(chs[i + 1], 3, 3) for i in range(num_blocks)])
        self.masks = num_mask_channels > 0
        if self.masks:
            self.mask_converter = nn.Conv2d(chs[-1], num_mask_channels, 3, padding=1, bias=True)

    def forward(self, z):
        x = self.first_linear(z)
        images, features = [], []
        for block, to_rgb in zip(self.body, self.rgb_converters):
            x = block(x)
            images.append(torch.tanh(to_rgb(x)))
            features.append(torch.tanh(x))
        out = {"images": images, "features": features}
        if self.masks:
            out["masks"] = F.softmax(self.mask_converter(x), dim=1)
        return out


class DBlock(nn.Module):
    """``D_block``: [norm, LReLU] conv1, norm, LReLU, conv2, pool; shortcut conv_sc (or identity), pool."""

    def __init__(self, cin, cout, first=False, only_content=False):
        super().__init__()
        mid = min(cin, cout)
        k = 1 if only_content else 3
        self.first, self.pool = first, not only_content
        self.conv1, self.conv2 = sn_conv(cin, mid, k), sn_conv(mid, cout, k)
        self.learned_sc = cin != cout or not only_content
        if self.learned_sc:
            self.conv_sc = sn_conv(cin, cout, 1, bias=False)

    def forward(self, x):
        h = x
        if not self.first:
            x = lrelu(x)
        x = self.conv2(lrelu(self.conv1(x)))
        if self.pool:
            x = F.avg_pool2d(x, 2)
        if self.learned_sc:
            h = self.conv_sc(h)
        if self.pool:
            h = F.avg_pool2d(h, 2)
        return x + h


class Discriminator(nn.Module):
    """``Discriminator.discriminate`` with masked content attention and, on reals, the content and layout feature
    augmentations at probabilities ``prob_FA_con`` / ``prob_FA_lay``."""

    def __init__(self, num_blocks, num_blocks_ll, num_mask_channels, ch_D, bernoulli_warmup, prob_FA_con=0.0,
                 prob_FA_lay=0.0):
        super().__init__()
        self.content_FA = ContentFA(prob_FA_con, num_mask_channels)
        self.layout_FA = LayoutFA(prob_FA_lay)
        chs = [int(m * ch_D) for m in D_CHANNELS][:num_blocks + 1]
        self.masks = num_mask_channels > 0
        if self.masks:
            for i in range(num_blocks_ll + 1, num_blocks):
                chs[i] *= 2
        self.num_blocks, self.num_blocks_ll = num_blocks, num_blocks_ll
        self.bernoulli_warmup = bernoulli_warmup
        self.body_ll, self.rgb_to_features, self.final_ll = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(num_blocks_ll):
            msg = chs[i] // 8 if i > 0 else chs[0]
            cin = chs[i] + msg if i > 0 else chs[0]
            self.body_ll.append(DBlock(cin, chs[i + 1], first=i == 0))
            self.rgb_to_features.append(sn_conv(3, msg, 3))
            self.final_ll.append(sn_conv(chs[i + 1], 1, 1))
        n_out = num_mask_channels + 1 if self.masks else 1
        ks = range(num_blocks_ll, num_blocks)
        self.body_content = nn.ModuleList([DBlock(chs[i], chs[i + 1], only_content=True) for i in ks])
        self.final_content = nn.ModuleList([sn_conv(chs[i + 1], n_out, 1) for i in ks])
        self.body_layout = nn.ModuleList([DBlock(chs[i] if i == num_blocks_ll else 1, 1) for i in ks])
        self.final_layout = nn.ModuleList([sn_conv(1, 1, 1) for _ in ks])

    def content_masked_attention(self, y, mask, for_real, epoch, uniform):
        """Per-class masked features stacked class-major on the batch axis; fakes hardened (straight through)."""
        mask = F.interpolate(mask, size=y.shape[2:], mode="nearest")
        if not for_real:
            soft = mask
            if epoch < self.bernoulli_warmup:
                uniform = torch.rand_like(soft) if uniform is None else uniform
                hard = (uniform < torch.clamp(soft, 0.001, 0.999)).to(soft.dtype)
            else:
                hard = F.one_hot(torch.argmax(soft, dim=1), num_classes=soft.shape[1]).permute(0, 3, 1, 2)
            mask = hard - soft.detach() + soft
        return torch.cat([mask[:, c:c + 1] * y for c in range(mask.shape[1])], dim=0)

    def forward(self, images, masks=None, for_real=True, epoch=0, uniform=None):
        """``images``: the scales low to high (D uses the last ``num_blocks_ll``); ``masks`` full resolution;
        ``uniform``: the fake masks' Bernoulli draws (None: drawn here)."""
        out = {"low-level": [], "content": [], "layout": []}
        y = self.rgb_to_features[0](images[-1])
        for i in range(self.num_blocks_ll):
            if i > 0:
                y = torch.cat((y, self.rgb_to_features[i](images[-i - 1])), dim=1)
            y = self.body_ll[i](y)
            out["low-level"].append(self.final_ll[i](y))
        y_con = self.content_masked_attention(y, masks, for_real, epoch, uniform) if self.masks else y
        y_con = torch.mean(y_con, dim=(2, 3), keepdim=True)
        if for_real:
            y_con = self.content_FA(y_con)
        for block, final in zip(self.body_content, self.final_content):
            y_con = block(y_con)
            out["content"].append(final(y_con))
        y_lay = self.layout_FA(y, masks) if for_real else y
        for block, final in zip(self.body_layout, self.final_layout):
            y_lay = block(y_lay)
            out["layout"].append(final(y_lay))
        return out


class ContentFA:
    """``Content_FA`` on the pooled vectors [R, C, 1, 1] of reals (with masks: the first R / classes rows, the
    background's): with ``prob`` "mix" (for the pairs (0, 1), (2, 3), ...: a random 10-30 % of the channels of row
    i + 1 copied into row i: the reference's swap, aliased in place), with ``prob`` "drop" (a random 10-30 % of the
    channels zeroed in every row)."""

    def __init__(self, prob, num_mask_channels):
        self.prob, self.classes = prob, max(num_mask_channels, 1)

    @staticmethod
    def fraction(ch):
        return int(ch * (torch.rand(1) * 0.2 + 0.1))

    def __call__(self, y):
        y = y.clone()
        rows, ch = y.shape[0] // self.classes, y.shape[1]
        if random.random() < self.prob:
            for i in range(0, rows - 1, 2):
                picked = torch.randperm(ch)[:self.fraction(ch)]
                y[i, picked] = y[i + 1, picked]
        if random.random() < self.prob:
            first, second = self.fraction(ch), self.fraction(ch)
            y[:rows, torch.randperm(ch)[first:first + second]] = 0
        return y


def rectangle(shape, size=None):
    """``gen_rectangle``: a random centre, sides 10-50 % of the map (or ``size``), moved back inside the map."""
    cx, cy, sx, sy = random.random(), random.random(), random.random() * 0.4 + 0.1, random.random() * 0.4 + 0.1
    x1, x2 = int((cx - sx / 2) * shape[2]), int((cx + sx / 2) * shape[2])
    y1, y2 = int((cy - sy / 2) * shape[3]), int((cy + sy / 2) * shape[3])
    if size is not None:
        x2, y2 = x1 + size[0], y1 + size[1]
    shift_x = -x1 if x1 < 0 else (-(x2 - shape[2] + 1) if x2 >= shape[2] else 0)
    shift_y = -y1 if y1 < 0 else (-(y2 - shape[3] + 1) if y2 >= shape[3] else 0)
    return x1 + shift_x, x2 + shift_x, y1 + shift_y, y2 + shift_y


class ReferenceDraws:
    """The random numbers of :class:`LayoutFA`, drawn as the reference draws them (Python ``random`` for whether an
    op fires and for rectangles, torch for classes and places). Each call names its role, so that a test can
    replay other draws in their place."""

    def __init__(self, prob):
        self.prob = prob

    def fires(self, role, *where):
        return random.random() < self.prob

    def rectangle(self, role, shape, *where, size=None):
        return rectangle(shape, size)

    def paste_class(self, i, objects):
        return int(torch.randint(objects, size=())) + 1

    def move_classes(self, objects):
        """The object classes (0-based) ``move_objects`` visits, in order."""
        return torch.randperm(objects)[:int(torch.randint(objects, size=())) + 1].tolist()

    def place(self, j, t, rows, cols):
        """A uniform new top-left corner (row < ``rows``, column < ``cols``) of the object box."""
        return int(torch.randint(0, rows, size=())), int(torch.randint(0, cols, size=()))


def touches_object(rect, mask):
    """``any_object_touched``: the object channels (1..) of ``mask`` [1, K, h, w] sum above 0.01 in ``rect``
    (an empty ``mask``, a sample beyond the batch, touches nothing)."""
    x1, x2, y1, y2 = rect
    return bool(mask[:, 1:, x1:x2, y1:y2].abs().sum() > 0.01)


class LayoutFA:
    """``Layout_FA`` on the low-level features [B, C, h, w] of reals. Without masks: with ``prob`` per pair (0, 1),
    (2, 3), ... a random rectangle swapped. With masks (nearest-resized to h x w), never cutting an object:
    ``mix_background`` (per sample with ``prob``: a background-only rectangle copied onto another; the masks its
    tries test are those of samples 0..4, the reference's loop variable), ``swap`` (per pair: an object-free
    rectangle swapped; a whole object class of i pasted into i + 1 where it cuts no object), and ``move_objects``
    (objects duplicated to, or "removed" by copying from, a free place; sample 0 only, as the reference's early
    return leaves it). The changed masks are dropped, as in the reference. ``draws``: a :class:`ReferenceDraws`.

    One liberty: "remove" copies the free place over the object's box with an in-place slice assignment and no
    ``clone``; where the two overlap, PyTorch reads elements it has already overwritten (in an order it leaves
    undefined). Here the place is read whole before the box is written, the copy the code means."""

    def __init__(self, prob, draws=None):
        self.draws = draws or ReferenceDraws(prob)

    def __call__(self, y, masks):
        if masks is None:
            out = y.clone()
            for i in range(0, y.shape[0] - 1, 2):
                if self.draws.fires("swap", i):
                    x1, x2, y1, y2 = self.draws.rectangle("swap", out.shape, i, 0)
                    out[i, :, x1:x2, y1:y2] = y[i + 1, :, x1:x2, y1:y2]
                    out[i + 1, :, x1:x2, y1:y2] = y[i, :, x1:x2, y1:y2]
            return out
        mask = F.interpolate(masks, size=y.shape[2:], mode="nearest")
        y, mask = self.mix_background(y.clone(), mask.clone())
        y, mask = self.swap(y, mask)
        return self.move_objects(y, mask)

    def mix_background(self, y, mask):
        for i in range(y.shape[0]):
            if self.draws.fires("background", i):
                first = self.draws.rectangle("background", y.shape, i, None)
                for t in range(5):
                    second = self.draws.rectangle("background", y.shape, i, t,
                                                  size=(first[1] - first[0], first[3] - first[2]))
                    overlap = first[0] < second[1] and first[1] > second[0] and first[2] < second[3] and \
                        first[3] > second[2]
                    if not overlap and not touches_object(first, mask[t:t + 1]) and \
                            not touches_object(second, mask[t:t + 1]):
                        (a1, a2, b1, b2), (c1, c2, d1, d2) = first, second
                        y[i, :, a1:a2, b1:b2] = y[i, :, c1:c2, d1:d2].clone()
                        mask[i, :, a1:a2, b1:b2] = mask[i, :, c1:c2, d1:d2].clone()
                        break
        return y, mask

    def swap(self, y, mask_in):
        out, mask = y.clone(), mask_in.clone()
        for i in range(0, y.shape[0] - 1, 2):
            if self.draws.fires("swap", i):
                for t in range(5):
                    rect = x1, x2, y1, y2 = self.draws.rectangle("swap", y.shape, i, t)
                    if not touches_object(rect, mask[i:i + 1]) and not touches_object(rect, mask[i + 1:i + 2]):
                        out[i, :, x1:x2, y1:y2] = y[i + 1, :, x1:x2, y1:y2]
                        out[i + 1, :, x1:x2, y1:y2] = y[i, :, x1:x2, y1:y2]
                        mask[i, :, x1:x2, y1:y2] = mask_in[i + 1, :, x1:x2, y1:y2]
                        mask[i + 1, :, x1:x2, y1:y2] = mask_in[i, :, x1:x2, y1:y2]
                        break
            if self.draws.fires("paste", i):
                which = self.draws.paste_class(i, mask.shape[1] - 1)
                area = (torch.argmax(mask[i], dim=0) == which).float()
                if not bool((area * mask[i + 1, 1:].abs().sum(0)).sum() > 0.01):
                    out[i + 1] = out[i].clone() * area + out[i + 1].clone() * (1 - area)
                    mask[i + 1] = mask[i] * area + mask[i + 1] * (1 - area)
        return out, mask

    def move_objects(self, y, mask):
        for j, cls in enumerate(self.draws.move_classes(mask.shape[1] - 1)):
            area = torch.argmax(mask[0], dim=0) == cls + 1
            place = self.free_place(area, mask[0], j)
            if place is None:
                continue
            dx, dy, (x1, x2, y1, y2) = place
            box, moved = (slice(None), slice(x1, x2 + 1), slice(y1, y2 + 1)), \
                (slice(None), slice(x1 + dx, x2 + dx + 1), slice(y1 + dy, y2 + dy + 1))
            inside = area[x1:x2 + 1, y1:y2 + 1].float()
            if self.draws.fires("duplicate", 0, j):  # the object copied to the free place
                for t in (y, mask):
                    t[0][moved] = t[0][moved] * (1 - inside) + t[0][box] * inside
            if self.draws.fires("remove", 0, j):  # "removed": the free place copied over its box
                for t in (y, mask):  # read before written: the reference's copy has no clone (see the class)
                    t[0][box] = t[0][moved].clone()
        return y

    def free_place(self, area, mask, j):
        """``generate_new_area``: up to 5 random shifts of the object's box whose pixels hold no object; (dx, dy,
        box) or None."""
        if not bool(area.any()):
            return None
        ids, where = torch.argmax(mask, dim=0), torch.nonzero(area)
        x1, x2, y1, y2 = int(where[:, 0].min()), int(where[:, 0].max()), int(where[:, 1].min()), int(where[:, 1].max())
        for t in range(5):
            new_x, new_y = self.draws.place(j, t, mask.shape[1] - (x2 - x1), mask.shape[2] - (y2 - y1))
            dx, dy = new_x - x1, new_y - y1
            moved = torch.zeros_like(area)
            moved[x1 + dx:x2 + dx + 1, y1 + dy:y2 + dy + 1] = area[x1:x2 + 1, y1:y2 + 1]
            if float((moved.float() * ids).sum()) < 0.01:
                return dx, dy, (x1, x2, y1, y2)
        return None


def real_pyramid(image, num_blocks_ll):
    """``preprocess_real``: bilinear x0.5 (align_corners=False) ``num_blocks_ll - 1`` times, low to high."""
    scales = [image]
    for _ in range(num_blocks_ll - 1):
        scales.append(F.interpolate(scales[-1], scale_factor=0.5, mode="bilinear", align_corners=False,
                                    recompute_scale_factor=False))
    return scales[::-1]


class AugmentPipe:
    """``AugmentPipe_kornia``: ``(images, mask) -> (images, mask)``, the scales low to high and the mask [B, K, H, W]
    (or None). Per sample, every scale is resized to full size and stacked with the mask's 3-channel chunks into one
    pseudo-batch; then, each op firing on Python ``random.random()`` for the whole batch, with parameters drawn per
    sample: with ``prob / 2`` a 2x zoom (upsampled, then a random full-size crop); with ``prob`` a random crop of
    r = U[0.75, 1] of each side resized back, or (half of the time) a rotation by U[-8, 8] degrees (bilinear, zero
    fill) followed by a centre crop of 80 % resized back; with ``prob`` a horizontal flip; with ``prob`` each, a
    vertical and a horizontal mirror shift by 5-30 %. Last, each scale is resized back to its own size."""

    def __init__(self, prob):
        self.prob = prob

    def __call__(self, images, mask=None):
        b, _, h, w = images[-1].shape
        chunks = []
        if mask is not None:  # [B, 3, H, W] each: the channels in threes, the last three filled up from the first
            k = mask.shape[1]
            chunks = [mask[:, [(c + j) % k for j in range(3)]] for c in range(0, k, 3)]
        samples = []
        for i in range(b):
            full = [F.interpolate(x[i:i + 1], size=(h, w), mode="bilinear") for x in images]
            samples.append(torch.cat(full + [c[i:i + 1] for c in chunks]))
        if random.random() < self.prob / 2:
            samples = [self.crop(F.interpolate(x, size=(2 * h, 2 * w), mode="bilinear"), h, w) for x in samples]
        if random.random() < self.prob:
            if random.random() < 0.5:
                r = random.random() * 0.25 + 0.75
                samples = [F.interpolate(self.crop(x, int(h * r), int(w * r)), size=(h, w), mode="bilinear")
                           for x in samples]
            else:
                samples = [F.interpolate(self.centre_crop(self.rotate(x), int(h * 0.8), int(w * 0.8)), size=(h, w),
                                         mode="bilinear") for x in samples]
        if random.random() < self.prob:
            samples = [x.flip(3) for x in samples]
        for axis in (2, 3):
            if random.random() < self.prob:
                samples = [self.mirror_shift(x, axis) for x in samples]
        out = [torch.cat([F.interpolate(x[j:j + 1], size=ref.shape[2:], mode="bilinear") for x in samples])
               for j, ref in enumerate(images)]
        if mask is not None:
            rest = torch.stack([x[len(images):].flatten(0, 1) for x in samples])
            mask = rest[:, :mask.shape[1]]
        return out, mask

    @staticmethod
    def crop(x, h, w):
        """kornia's ``RandomCrop`` (one offset for the pseudo-batch), as a slice: kornia 0.4 warps."""
        top, left = random.randint(0, x.shape[2] - h), random.randint(0, x.shape[3] - w)
        return x[:, :, top:top + h, left:left + w]

    @staticmethod
    def centre_crop(x, h, w):
        top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
        return x[:, :, top:top + h, left:left + w]

    @staticmethod
    def rotate(x):
        """kornia's ``RandomRotation(degrees=8)``: one angle for the pseudo-batch, about the centre, bilinear, zeros."""
        angle = math.radians(float(torch.rand(1)) * 16 - 8)
        theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]])
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def mirror_shift(x, axis):
        """``translate_{v,h}_fake``: shifted by a fraction U[0.05, 0.3] of the side towards one end (50/50), the gap
        filled with the mirrored strip at that end."""
        n = x.shape[axis]
        k = int(n * float(torch.rand(1) * 0.25 + 0.05))
        if bool(torch.rand(1) < 0.5):  # content moves away from index 0
            return torch.cat((x.narrow(axis, 0, k).flip(axis), x.narrow(axis, 0, n - k)), axis)
        return torch.cat((x.narrow(axis, k, n - k), x.narrow(axis, n - k, k).flip(axis)), axis)


class Losses:
    """``losses_computer`` with ``loss_mode bce``: per-output sums per branch, weighted 1/D, 0.5/D, 0.5/D."""

    def __init__(self, num_blocks_d, masks, lambda_DR):
        self.masks = masks
        self.lambdas = {"content": 0.5 / num_blocks_d, "layout": 0.5 / num_blocks_d,
                        "low-level": 1.0 / num_blocks_d, "DR": lambda_DR}

    @staticmethod
    def bce(x, real):
        return F.binary_cross_entropy_with_logits(x, torch.full_like(x, 1.0 if real else 0.0))

    @staticmethod
    def content_segm(x, mask, real):
        c = mask.shape[1]
        if real:
            target = torch.arange(c).repeat_interleave(mask.shape[0])
        else:
            target = torch.full((x.shape[0],), c, dtype=torch.long)
        target = target[:, None, None].expand(-1, x.shape[2], x.shape[3])
        weights = torch.cat((1 / torch.sum(mask.detach(), dim=(0, 2, 3)), torch.ones(1)))
        weights[weights == float("inf")] = 0
        return F.cross_entropy(x, target, weight=weights)

    @staticmethod
    def diversity(features):
        ans = 0
        for f in features:
            for k in range(f.shape[0]):
                for m in range(k + 1, f.shape[0]):
                    ans = ans - F.l1_loss(f[k], f[m])
        return ans * 2 / (len(features) * (len(features) - 1))

    def __call__(self, out_d, mask, real, features=None):
        losses = {}
        for item, outputs in out_d.items():
            for x in outputs:
                if item == "content" and self.masks:
                    term = self.content_segm(x, mask, real)
                else:
                    term = self.bce(x, real)
                losses[item] = losses.get(item, 0) + term
        if features is not None:
            losses["DR"] = self.diversity(features)
        return {k: v * self.lambdas[k] for k, v in losses.items()}


def g_step_losses(netG, netD, losses, z, epoch, uniform=None, augment=None):
    """``train.py``'s G step up to the backward: G(z) with features, the augmentation (an :class:`AugmentPipe`, or
    None: none) on all its scales and its mask, D on them (``for_real=False``), the losses against 'real' (their
    class weights from the augmented mask). Returns (G outputs, D outputs, loss dict)."""
    out = netG(z)
    images, mask = out["images"], out.get("masks")
    if augment is not None:
        images, mask = augment(images, mask)
    logits = netD(images, mask, for_real=False, epoch=epoch, uniform=uniform)
    return out, logits, losses(logits, mask, real=True, features=out["features"])


def d_step_losses(netG, netD, losses, image, mask, z, epoch, uniform=None, augment=None):
    """``train.py``'s D step up to the optimiser step: D on the (augmented) real pyramid and mask
    (``for_real=True``: feature augmentation), then on the (augmented) G(z) of a new noise batch drawn under
    no_grad. Returns (real outputs, fake outputs, real losses, fake losses)."""
    reals = real_pyramid(image, netD.num_blocks_ll)
    if augment is not None:
        reals, mask = augment(reals, mask)
    real_out = netD(reals, mask, for_real=True, epoch=epoch)
    with torch.no_grad():
        fake = netG(z)
    images, fake_mask = fake["images"], fake.get("masks")
    if augment is not None:
        images, fake_mask = augment(images, fake_mask)
    fake_out = netD(images, fake_mask, for_real=False, epoch=epoch, uniform=uniform)
    return real_out, fake_out, losses(real_out, mask, real=True), losses(fake_out, fake_mask, real=False)


def torch_name(ms_name):
    """The parameter or buffer of these modules that holds the MindSpore parameter ``ms_name``."""
    if ms_name.endswith(".conv.weight"):
        return ms_name[:-len(".conv.weight")] + ".weight_orig"
    if ms_name.endswith(".conv.bias"):
        return ms_name[:-len(".conv.bias")] + ".bias"
    return ms_name


def copy_from_mindspore(module, cell):
    """Copy every parameter (and spectral-norm u, v) of the MindSpore ``cell`` into ``module``; returns the name map
    {MindSpore name: torch name}. D's ``iteration`` counter has no counterpart (the step passes ``epoch``)."""
    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    names = {}
    with torch.no_grad():
        for p in cell.get_parameters():
            if p.name == "iteration":
                continue
            name = torch_name(p.name)
            target = state.pop(name)
            value = torch.from_numpy(p.asnumpy().copy())
            assert tuple(target.shape) == tuple(value.shape), (p.name, target.shape, value.shape)
            target.copy_(value)
            names[p.name] = name
    assert not state, f"torch tensors without a MindSpore parameter: {sorted(state)}"
    return names
