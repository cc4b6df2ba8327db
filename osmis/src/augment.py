"""Differentiable image augmentation and discriminator feature augmentation (OSMIS / SIV-GAN).

Random parameters are drawn on the host with NumPy from each sample's ``RandomState`` (the loader
seeds it from the run seed, epoch and sample index), so a resumed run draws exactly what the
uninterrupted one drew; the graph applies them with MindSpore ops.

Image augmentation (reference ``AugmentPipe_kornia``; probability ``p`` = ``prob_augm``), per sample:
p/2 a 2x zoom at a random place; p a random crop of r*H x r*W (r ~ U[0.75, 1]) resized back, or (50/50) a
rotation by U[-8, 8] degrees followed by an 80% centre crop; p a horizontal flip; p a vertical and p a
horizontal shift by U[0.05, 0.30] of the side, the gap mirror-filled. The ops compose into one affine map
per sample (:func:`sample_affine`, output -> input coordinates in ``affine_grid`` units), applied by
:class:`DiffAugment` with bilinear ``grid_sample`` and reflection padding to every image scale and the
mask: normalised coordinates make the transform identical at every scale and for the mask.

Differences from the reference, on purpose: one bilinear resampling instead of one per op; the
mirror fill reflects the source image at its border; whether an op fires is drawn per sample (the
reference draws it once per batch with Python's unseeded ``random``).

Feature augmentation (reals only): :class:`ContentFA` copies a random 10-30% of the pooled content
channels from sample i+1 into sample i for pairs (0, 1), (2, 3) ... (probability ``prob_FA_con``, drawn by
the pair's first sample) and zeroes a random 10-30% channel subset of every sample (probability
``prob_FA_con``, drawn by sample 0); with masks only the background rows. :class:`LayoutFA` swaps a random
rectangle (sides 10-50% of the low-level map, same place in both) between the samples of each pair
(probability ``prob_FA_lay``); with masks only where both samples are background (the reference's
object-aware variant moves whole object-free rectangles and objects; ours never cuts an object either,
pixel-wise).
"""
import math

import numpy as np
from mindspore import Tensor, nn, ops

from common.layers import AffineResample

__all__ = ["sample_affine", "sample_content_fa", "sample_layout_fa", "DiffAugment", "ContentFA", "LayoutFA",
           "pair_partners"]

ZOOM = 2.0
CROP_RANGE = (0.75, 1.0)
ROTATE_DEG = 8.0
ROTATE_CROP = 0.8
SHIFT_RANGE = (0.05, 0.30)
FA_CONTENT_RANGE = (0.1, 0.3)
FA_LAYOUT_RANGE = (0.1, 0.5)


def _affine(a, b, c, d, tx, ty):
    return np.array([[a, b, tx], [c, d, ty], [0, 0, 1]], np.float64)


def sample_affine(rng, prob, height, width):
    """One sample's augmentation as a [2, 3] float32 ``theta`` (output -> input, normalised coordinates)."""
    m = np.eye(3)
    if rng.uniform() < prob / 2:
        s = 1.0 / ZOOM
        m = m @ _affine(s, 0, 0, s, rng.uniform(-1 + s, 1 - s), rng.uniform(-1 + s, 1 - s))
    if rng.uniform() < prob:
        if rng.uniform() < 0.5:
            r = rng.uniform(*CROP_RANGE)
            m = m @ _affine(r, 0, 0, r, rng.uniform(-(1 - r), 1 - r), rng.uniform(-(1 - r), 1 - r))
        else:
            t = math.radians(rng.uniform(-ROTATE_DEG, ROTATE_DEG))
            c, s = math.cos(t), math.sin(t)
            # rotation in pixel units: S^-1 R S with S = diag(W/2, H/2); then the centre crop
            m = m @ _affine(c, -s * height / width, s * width / height, c, 0, 0) @ _affine(ROTATE_CROP, 0, 0, ROTATE_CROP, 0, 0)
    if rng.uniform() < prob:
        m = m @ _affine(-1, 0, 0, 1, 0, 0)
    if rng.uniform() < prob:
        m = m @ _affine(1, 0, 0, 1, 0, 2 * rng.uniform(*SHIFT_RANGE) * rng.choice((-1, 1)))
    if rng.uniform() < prob:
        m = m @ _affine(1, 0, 0, 1, 2 * rng.uniform(*SHIFT_RANGE) * rng.choice((-1, 1)), 0)
    return m[:2].astype(np.float32)


def sample_content_fa(rng, prob, channels):
    """(mix [channels], drop [channels]) 0/1 float32 masks of one sample (zeros when not drawn)."""
    mix, drop = np.zeros(channels, np.float32), np.zeros(channels, np.float32)
    for out in (mix, drop):
        if rng.uniform() < prob:
            k = int(channels * rng.uniform(*FA_CONTENT_RANGE))
            out[rng.choice(channels, k, replace=False)] = 1.0
    return mix, drop


def sample_layout_fa(rng, prob, height, width):
    """[1, h, w] 0/1 float32 rectangle of one sample (zeros when not drawn)."""
    rect = np.zeros((1, height, width), np.float32)
    if rng.uniform() < prob:
        rh = max(1, int(height * rng.uniform(*FA_LAYOUT_RANGE)))
        rw = max(1, int(width * rng.uniform(*FA_LAYOUT_RANGE)))
        y, x = rng.randint(0, height - rh + 1), rng.randint(0, width - rw + 1)
        rect[:, y:y + rh, x:x + rw] = 1.0
    return rect


def pair_partners(batch_size):
    """(partner, leader) index lists: pairs (0, 1), (2, 3) ...; an odd last sample is its own partner."""
    partner = [i ^ 1 if (i ^ 1) < batch_size else i for i in range(batch_size)]
    leader = [i - i % 2 for i in range(batch_size)]
    return partner, leader


class DiffAugment(nn.Cell):
    """Apply per-sample affine maps ``theta`` [B, 2, 3] to a tuple of [B, C_k, H_k, W_k] tensors.

    Bilinear sampling with reflection padding (:class:`common.layers.AffineResample`: compiled kernels on CPU),
    differentiable w.r.t. the inputs (fakes pass their gradient through). Identity ``theta`` returns the inputs
    to float rounding.
    """

    def __init__(self):
        super().__init__()
        self.resample = AffineResample()

    def construct(self, tensors, theta):
        out = ()
        for x in tensors:
            out += (self.resample(x, theta),)
        return out


class ContentFA(nn.Cell):
    """Content feature augmentation of pooled vectors y [N, ch, 1, 1] (the first B rows).

    ``mix`` / ``drop`` [B, ch] from :func:`sample_content_fa`: row i (i even, with a partner) takes the
    mixed channels from row i+1; every row loses the channels of ``drop[0]``.
    """

    def __init__(self, batch_size):
        super().__init__()
        partner, _ = pair_partners(batch_size)
        self.batch_size = batch_size
        self.partner = Tensor(np.array(partner, np.int32))
        self.mixing_rows = Tensor(np.array([[float(i % 2 == 0 and partner[i] != i)] for i in range(batch_size)],
                                           np.float32))

    def construct(self, y, mix, drop):
        b = self.batch_size
        head = y[:b]
        m = (mix * self.mixing_rows).reshape(b, -1, 1, 1)
        head = head * (1 - m) + ops.gather(head, self.partner, 0) * m
        head = head * (1 - drop[0:1].reshape(1, -1, 1, 1))
        if y.shape[0] == b:
            return head
        return ops.concat((head, y[b:]), axis=0)


class LayoutFA(nn.Cell):
    """Layout feature augmentation of the low-level feature y [B, ch, h, w]: rectangle swaps within pairs.

    ``rect`` [B, 1, h, w] from :func:`sample_layout_fa` (the pair's first sample's is used); with masks
    (``mask`` [B, C, h, w], channel 0 = background) only pixels that are background in both samples.
    """

    def __init__(self, batch_size, *, masks):
        super().__init__()
        partner, leader = pair_partners(batch_size)
        self.partner = Tensor(np.array(partner, np.int32))
        self.leader = Tensor(np.array(leader, np.int32))
        self.masks = masks

    def construct(self, y, rect, mask):
        r = ops.gather(rect, self.leader, 0)
        if self.masks:
            bg = ops.cast(mask[:, 0:1] >= 0.5, y.dtype)
            r = r * bg * ops.gather(bg, self.partner, 0)
        return y * (1 - r) + ops.gather(y, self.partner, 0) * r
