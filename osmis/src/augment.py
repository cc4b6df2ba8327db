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
channels from sample i+1 into sample i for pairs (0, 1), (2, 3) ... (probability ``prob_FA_con``, drawn once
for the batch by sample 0; each pair's channels by its first sample) and zeroes a random 10-30% channel subset
of every sample (probability ``prob_FA_con``, drawn by sample 0); with masks only the background rows.
:class:`LayoutFA` is the reference's ``Layout_FA`` step for step (probability ``prob_FA_lay``): without masks,
rectangle swaps within pairs; with masks, background copies within a sample, object-free rectangle swaps and
whole-object pastes within pairs, and object duplication and removal (sample 0, as in the reference), never
cutting an object. Its random numbers (:func:`sample_layout_fa`: which ops fire, the ``TRIES`` candidate
rectangles and places) are drawn on the host; which candidate is taken depends on the augmented masks and is
decided in the graph.
"""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from common.layers import AffineResample, Float32Only

__all__ = ["sample_affine", "sample_content_fa", "sample_layout_fa", "reference_rectangle", "LayoutSlots",
           "DiffAugment", "ContentFA", "LayoutFA", "pair_partners"]

ZOOM = 2.0
CROP_RANGE = (0.75, 1.0)
ROTATE_DEG = 8.0
ROTATE_CROP = 0.8
SHIFT_RANGE = (0.05, 0.30)
FA_CONTENT_RANGE = (0.1, 0.3)
TRIES = 5  # the reference's attempts at an object-free rectangle or place
DRAW_EPS = 0.01  # the reference's threshold on summed mask values ("any object touched", "place free")


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
    """(mix [channels + 1], drop [channels]) float32 draws of one sample. ``mix``: a random 10-30 % of the channels
    (0/1), then whether mixing fires (1/0; :class:`ContentFA` reads sample 0's, for the whole batch, and each pair's
    first sample's channels). ``drop``: the channels zeroed, all 0 when dropping does not fire."""
    mix, drop = np.zeros(channels + 1, np.float32), np.zeros(channels, np.float32)
    mix[channels] = rng.uniform() < prob
    mix[rng.choice(channels, int(channels * rng.uniform(*FA_CONTENT_RANGE)), replace=False)] = 1.0
    if rng.uniform() < prob:
        drop[rng.choice(channels, int(channels * rng.uniform(*FA_CONTENT_RANGE)), replace=False)] = 1.0
    return mix, drop


class LayoutSlots:
    """Where each draw sits in a sample's layout feature-augmentation vector (:func:`sample_layout_fa`).

    Rectangles are (top, bottom, left, right), rows [top, bottom) and columns [left, right) of the low-level map.
    ``swap``: fires, then ``TRIES`` candidate rectangles (SIV-GAN: the first is swapped, as the reference has no
    masks to test); with masks also ``paste`` (fires, object class), ``background`` (fires, the target rectangle,
    ``TRIES`` source rectangles of its size, whether each misses the target) and, per object class (``move`` rows:
    class id, taken, duplicate fires, remove fires, ``TRIES`` x (row, column) uniforms for the new place).
    """

    def __init__(self, num_mask_channels):
        self.masks = num_mask_channels > 0
        self.objects = max(num_mask_channels - 1, 0)
        at = 0

        def take(n):
            nonlocal at
            at += n
            return slice(at - n, at)
        self.swap_fires, self.swap_rects = take(1), take(4 * TRIES)
        if self.masks:
            self.paste = take(2)
            self.background_fires, self.background_target = take(1), take(4)
            self.background_sources, self.background_apart = take(4 * TRIES), take(TRIES)
            self.move = take(self.objects * (4 + 2 * TRIES))
        self.size = at


def reference_rectangle(rng, height, width, size=None):
    """``gen_rectangle``: centre uniform, sides U[0.1, 0.5] of the map (or ``size`` = (rows, columns) from the
    top-left corner), pushed back inside so that it stops short of the last row and column. Returns
    (top, bottom, left, right)."""
    cy, cx = rng.uniform(), rng.uniform()
    sy, sx = rng.uniform() * 0.4 + 0.1, rng.uniform() * 0.4 + 0.1
    top, bottom = int((cy - sy / 2) * height), int((cy + sy / 2) * height)
    left, right = int((cx - sx / 2) * width), int((cx + sx / 2) * width)
    if size is not None:
        bottom, right = top + size[0], left + size[1]
    shift_y = -top if top < 0 else (-(bottom - height + 1) if bottom >= height else 0)
    shift_x = -left if left < 0 else (-(right - width + 1) if right >= width else 0)
    return top + shift_y, bottom + shift_y, left + shift_x, right + shift_x


def sample_layout_fa(rng, prob, height, width, num_mask_channels=0):
    """One sample's layout feature-augmentation draws: a float32 vector laid out by :class:`LayoutSlots`."""
    slots = LayoutSlots(num_mask_channels)
    out = np.zeros(slots.size, np.float32)
    out[slots.swap_fires] = rng.uniform() < prob
    out[slots.swap_rects] = [v for _ in range(TRIES) for v in reference_rectangle(rng, height, width)]
    if not slots.masks:
        return out
    if slots.objects:  # a class to paste (a mask of background only has none)
        out[slots.paste] = rng.uniform() < prob, rng.randint(1, num_mask_channels)
    out[slots.background_fires] = rng.uniform() < prob
    target = reference_rectangle(rng, height, width)
    out[slots.background_target] = target
    sources = [reference_rectangle(rng, height, width, (target[1] - target[0], target[3] - target[2]))
               for _ in range(TRIES)]
    out[slots.background_sources] = np.ravel(sources)
    out[slots.background_apart] = [not (target[0] < s[1] and target[1] > s[0] and target[2] < s[3] and target[3] > s[2])
                                   for s in sources]
    if slots.objects:
        taken = rng.randint(slots.objects) + 1
        rows = [[c + 1, i < taken, rng.uniform() < prob, rng.uniform() < prob] + list(rng.uniform(size=2 * TRIES))
                for i, c in enumerate(rng.permutation(slots.objects))]
        out[slots.move] = np.ravel(rows)
    return out


def put(region, new, old):
    """``new`` where the 0/1 ``region`` is 1, ``old`` elsewhere (broadcasting)."""
    return old * (1 - region) + new * region


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

    ``mix`` [B, ch + 1] / ``drop`` [B, ch] from :func:`sample_content_fa`: if sample 0's mixing fires (once per
    batch, as the reference draws it), row i (i even, with a partner) takes the channels ``mix[i]`` picks from row
    i+1; every row loses the channels of ``drop[0]``.
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
        m = (mix[:, :-1] * mix[0:1, -1:] * self.mixing_rows).reshape(b, -1, 1, 1)
        head = put(m, ops.gather(head, self.partner, 0), head)
        head = head * (1 - drop[0:1].reshape(1, -1, 1, 1))
        if y.shape[0] == b:
            return head
        return ops.concat((head, y[b:]), axis=0)


class LayoutFA(Float32Only, nn.Cell):
    """Layout feature augmentation of the reals' low-level feature y [B, ch, h, w] (reference ``Layout_FA``).

    ``draws`` [B, n]: each sample's :func:`sample_layout_fa` vector (:class:`LayoutSlots`). Without masks: for each
    pair (0, 1), (2, 3) ... whose first sample's draw fires, its first rectangle is swapped between the two. With
    masks (``mask`` [B, C, h, w] at y's size, channel 0 = background), in the reference's order and never cutting
    an object (a rectangle or place is free when the object channels sum to at most 0.01 there):

    1. ``mix_background``, sample by sample: the first of the ``TRIES`` source rectangles that misses the target and
       leaves both free is copied onto the target, features and mask. As in the reference, try t tests the current
       mask of sample t (its loop variable; tries beyond the batch find a free mask).
    2. ``swap``, pair by pair: the first candidate rectangle free in both samples is swapped between them (features
       and masks); then the drawn object class of the first sample (its argmax area) is pasted into the second
       where it covers none of the second's objects.
    3. ``move_objects``, sample 0 only (the reference returns after it): for each object class taken, in the drawn
       order, its bounding box is placed at up to ``TRIES`` uniform positions that fit; at the first whose shifted
       area holds no object, the object is duplicated there (if that draw fires), then its box is overwritten from
       that place (if that one fires).

    The masks' changes serve the later steps only; the losses use the masks from before this augmentation, as in the
    reference.
    Float32 under mixed precision (:class:`common.layers.Float32Only`): the ops track where each feature comes from
    by its flat index, which float16 cannot hold past 2048.
    """

    def __init__(self, batch_size, *, num_mask_channels=0):
        super().__init__()
        partner, leader = pair_partners(batch_size)
        self.partner = Tensor(np.array(partner, np.int32))
        self.leader = Tensor(np.array(leader, np.int32))
        self.batch_size = batch_size
        slots = LayoutSlots(num_mask_channels)
        self.masks, self.objects = slots.masks, slots.objects
        # (start, stop) of each draw in a sample's vector: plain ints, for slicing in graph mode
        self.at = {name: (part.start, part.stop) for name, part in vars(slots).items() if isinstance(part, slice)}

    def part(self, d, name):
        """The draws ``name`` (a :class:`LayoutSlots` field) of d [..., n]."""
        start, stop = self.at[name]
        return d[..., start:stop]

    @staticmethod
    def grid(h, w):
        """(row indices [h, 1], column indices [1, w]) as float32."""
        return ops.arange(h, dtype=ms.float32).reshape(h, 1), ops.arange(w, dtype=ms.float32).reshape(1, w)

    @staticmethod
    def rectangles(grid, r):
        """[..., 4] (top, bottom, left, right) -> [..., h, w] 0/1 maps."""
        rows, cols = grid
        r = r.expand_dims(-1).expand_dims(-1)
        inside_rows = ops.logical_and(rows >= r[..., 0, :, :], rows < r[..., 1, :, :])
        inside_cols = ops.logical_and(cols >= r[..., 2, :, :], cols < r[..., 3, :, :])
        return ops.cast(ops.logical_and(inside_rows, inside_cols), ms.float32)

    @staticmethod
    def first(ok):
        """[T] 0/1 -> one-hot of the first 1 (all zeros when none)."""
        return ok * ops.cast(ops.cumsum(ok, 0) - ok == 0, ok.dtype)

    @staticmethod
    def read_shifted(grid, x, rows, cols):
        """x [..., h*w] read at (r - rows, c - cols) for every (r, c), clamped into the map: x moved by (rows, cols)
        wherever that reads inside the map, which is everywhere the ops below write (``rows``, ``cols``: scalars)."""
        h, w = grid[0].shape[0], grid[1].shape[1]
        index = ops.clip_by_value(grid[0] - rows, 0, h - 1) * w + ops.clip_by_value(grid[1] - cols, 0, w - 1)
        return ops.gather(x, ops.cast(index, ms.int32).reshape(-1), x.ndim - 1)

    @staticmethod
    def placements(grid, area, rows, cols):
        """area [h*w] moved by each shift (rows, cols [T]) -> [T, h*w], 0 where a place reads outside the map."""
        h, w = grid[0].shape[0], grid[1].shape[1]
        r, c = grid[0] - rows.reshape(-1, 1, 1), grid[1] - cols.reshape(-1, 1, 1)  # [T, h, 1], [T, 1, w]
        inside = ops.logical_and(ops.logical_and(r >= 0, r < h), ops.logical_and(c >= 0, c < w))
        index = ops.clip_by_value(r, 0, h - 1) * w + ops.clip_by_value(c, 0, w - 1)
        moved = ops.gather(area, ops.cast(index, ms.int32).reshape(-1), 0).reshape(rows.shape[0], h * w)
        return moved * ops.cast(inside, area.dtype).reshape(rows.shape[0], h * w)

    @staticmethod
    def objects_map(t, size):
        """t [C + 1, h*w] (mask, source) -> [h, w] (``size``): the object channels (1..C-1) summed, the reference's
        test of "any object"."""
        return ops.abs(t[1:-1]).sum(0).reshape(size)

    @staticmethod
    def free(objects, region):
        """1 where ``objects`` sum to at most 0.01 over ``region`` [..., h, w], else 0."""
        return ops.cast((objects * region).sum((-2, -1)) <= DRAW_EPS, ms.float32)

    @staticmethod
    def labels(t):
        """t [C + 1, h*w] (mask, source) -> [h*w] float argmax class ids."""
        return ops.cast(ops.argmax(t[:-1], 0), ms.float32)

    def construct(self, y, draws, mask):
        b, ch, h, w = y.shape
        grid = self.grid(h, w)
        if not self.masks:
            fires = self.part(draws, "swap_fires").reshape(b, 1, 1)
            rect = self.rectangles(grid, self.part(draws, "swap_rects")[:, :4]) * fires
            r = ops.gather(rect, self.leader, 0).expand_dims(1)
            return put(r, ops.gather(y, self.partner, 0), y)
        # every op copies whole feature vectors from one place to another, so the ops run on the masks and on a map
        # of where each feature comes from (flat sample * h*w + position, no gradient), and y is gathered once
        # (built on the mask's zeros, not a bare arange: under O2 MindSpore 2.10 fails to compile the step with "The
        # pointer[manager] is null" (parameter_eliminate) when a constant source map meets the mask in Concat)
        source = ops.zeros_like(mask[:, :1]).reshape(b, 1, h * w) + ops.arange(b * h * w, dtype=ms.float32).reshape(
            b, 1, h * w)
        t = ops.stop_gradient(ops.concat((mask.reshape(b, -1, h * w), source), 1))
        ts = tuple(t[i] for i in range(b))
        ts = self.mix_background(grid, ts, draws)
        ts = self.swap(grid, ts, draws)
        if self.objects:
            ts = (self.move_objects(grid, ts[0], draws[0]),) + ts[1:]
        index = ops.cast(ops.stack(ts)[:, -1], ms.int32).reshape(-1)
        flat = y.transpose(0, 2, 3, 1).reshape(b * h * w, ch)
        return ops.gather(flat, index, 0).reshape(b, h, w, ch).transpose(0, 3, 1, 2)

    def mix_background(self, grid, ts, draws):
        size = (grid[0].shape[0], grid[1].shape[1])
        targets, sources = self.part(draws, "background_target"), self.part(draws, "background_sources")
        sources = sources.reshape(-1, TRIES, 4)
        target_maps, source_maps = self.rectangles(grid, targets), self.rectangles(grid, sources)  # [B, (T,) h, w]
        shifts = sources[:, :, 0:3:2] - targets[:, 0:3:2].expand_dims(1)  # [B, T, (rows, columns)]
        fires, apart = self.part(draws, "background_fires"), self.part(draws, "background_apart")
        tried = min(TRIES, self.batch_size)
        objects = tuple(self.objects_map(ts[k], size) for k in range(tried))
        objects += (ops.zeros_like(objects[0]),) * (TRIES - tried)
        for i in range(self.batch_size):
            tested = ops.stack(objects)
            ok = apart[i] * self.free(tested, target_maps[i]) * self.free(tested, source_maps[i])
            choice = self.first(ok) * fires[i]
            shift = (choice.reshape(TRIES, 1) * shifts[i]).sum(0)
            region = (target_maps[i] * choice.sum()).reshape(-1)
            t = put(region, self.read_shifted(grid, ts[i], -shift[0], -shift[1]), ts[i])
            ts = ts[:i] + (t,) + ts[i + 1:]
            if i < tried:
                objects = objects[:i] + (self.objects_map(t, size),) + objects[i + 1:]
        return ts

    def swap(self, grid, ts, draws):
        size = (grid[0].shape[0], grid[1].shape[1])
        maps = self.rectangles(grid, self.part(draws, "swap_rects").reshape(-1, TRIES, 4))  # [B, T, h, w]
        fires, paste = self.part(draws, "swap_fires"), self.part(draws, "paste")
        for i in range(0, self.batch_size - 1, 2):
            ok = self.free(self.objects_map(ts[i], size), maps[i]) * \
                self.free(self.objects_map(ts[i + 1], size), maps[i])
            region = (self.first(ok).reshape(TRIES, 1, 1) * maps[i]).sum(0).reshape(-1) * fires[i]
            t0, t1 = put(region, ts[i + 1], ts[i]), put(region, ts[i], ts[i + 1])
            area = ops.cast(self.labels(t0) == paste[i, 1], ms.float32)
            cuts = (area * self.objects_map(t1, size).reshape(-1)).sum() > DRAW_EPS
            area = area * paste[i, 0] * (1 - ops.cast(cuts, ms.float32))
            ts = ts[:i] + (t0, put(area, t0, t1)) + ts[i + 2:]
        return ts

    def move_objects(self, grid, t, d):
        (rows_, cols_), h, w = grid, grid[0].shape[0], grid[1].shape[1]
        rows = self.part(d, "move").reshape(self.objects, 4 + 2 * TRIES)
        for j in range(self.objects):
            cls, taken, duplicate, remove = rows[j, 0], rows[j, 1], rows[j, 2], rows[j, 3]
            uniforms = rows[j, 4:].reshape(TRIES, 2)
            labels = self.labels(t)
            area = ops.cast(labels == cls, ms.float32)
            area_map = area.reshape(h, w)
            in_rows, in_cols = ops.amax(area_map, 1, keepdims=True), ops.amax(area_map, 0, keepdims=True)
            top, bottom = ops.amin(rows_ + h * (1 - in_rows)), ops.amax(rows_ * in_rows)
            left, right = ops.amin(cols_ + w * (1 - in_cols)), ops.amax(cols_ * in_cols)
            d_rows = ops.floor(uniforms[:, 0] * (h - (bottom - top))) - top  # [T]: the tries' shifts
            d_cols = ops.floor(uniforms[:, 1] * (w - (right - left))) - left
            places = self.placements(grid, area, d_rows, d_cols)
            free = ops.cast((places * labels).sum(1) < DRAW_EPS, ms.float32)
            choice = self.first(free) * taken * ops.amax(in_rows)
            d_rows, d_cols = (choice * d_rows).sum(), (choice * d_cols).sum()
            placed = (choice.reshape(TRIES, 1) * places).sum(0) * duplicate
            t = put(placed, self.read_shifted(grid, t, d_rows, d_cols), t)
            box = self.rectangles(grid, ops.stack((top, bottom + 1, left, right + 1))).reshape(-1)
            t = put(box * choice.sum() * remove, self.read_shifted(grid, t, -d_rows, -d_cols), t)
        return t
