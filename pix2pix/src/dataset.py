"""pix2pix data: aligned AB images (A | B side by side), as made by the reference ``combine_A_and_B.py``.

Source -> transforms -> batches:
* :class:`AlignedDataset` reads ``<dataroot>/<phase>/*.jpg|png``, checks the layout and splits A/B;
* train transform: bicubic resize to ``load_size``, one shared random ``crop_size`` crop and a shared
  horizontal flip for A and B; test transform: bicubic resize to ``crop_size``;
* values scaled to [-1, 1], HWC -> CHW; batches come from :class:`common.data.BatchLoader`.

For the paper's facades and Cityscapes sets (photo left, label right), label->photo is ``BtoA``.
Prediction inputs of any aspect ratio go through :func:`plan_tiles` (resize, pad or tile).
"""
import os

import numpy as np

from common.data import validate_files
from common.io import check_image_complete, image_header, list_images, read_image, resize_photo

__all__ = ["AlignedDataset", "split_ab", "to_tensor_layout", "check_image_size", "resize_bicubic", "FIT_MODES",
           "TilePlan", "plan_tiles"]

FIT_MODES = ("resize", "pad", "tile")


def check_image_size(size, multiple, netG, *, size_key="crop_size"):
    """Raise if a ``size``-pixel side cannot pass through ``netG`` (U-Nets need multiples of 2^downs); the error
    names the option ``size_key`` that set it (``crop_size`` in training, ``image_size`` in predict/export)."""
    if size <= 0 or size % multiple:
        works = ", ".join(str(multiple * k) for k in range(1, 5))
        fix = ("set --crop_size (and --load_size) accordingly or pick another netG" if size_key == "crop_size" else
               f"set --{size_key} to one of those (0: the training crop_size)")
        raise ValueError(f"{size_key}={size} does not work with netG={netG}: it needs a multiple of {multiple} "
                         f"({works}, ...); {fix}")


def _check_ab_size(w, h, path):
    if w != 2 * h:
        raise ValueError(f"aligned image {path} is {w}x{h} (width x height); pix2pix AB images must be "
                         f"exactly twice as wide as high (A | B side by side, e.g. 512x256). Rebuild it with "
                         f"A and B of equal size")


def split_ab(ab, path):
    """[H, 2H, 3] aligned image -> (A, B) halves; error naming ``path`` if width != 2 * height."""
    h, w = ab.shape[:2]
    _check_ab_size(w, h, path)
    return ab[:, :h], ab[:, h:]


def to_tensor_layout(img):
    """[H, W, 3] uint8 -> [3, H, W] float32 in [-1, 1]."""
    return (np.asarray(img, np.float32).transpose(2, 0, 1) / 127.5) - 1.0


def resize_bicubic(img, size):
    """[H, W, 3] uint8 -> [size, size, 3] uint8 (``size`` an int) or [h, w, 3] (``size=(h, w)``),
    with PIL bicubic (the reference resize)."""
    h, w = (size, size) if np.isscalar(size) else size
    return resize_photo(img, int(h), int(w))


class AlignedDataset:
    """Aligned A|B pairs of one split.

    Args:
        dataroot: folder with ``train/``, ``val/`` (and/or ``test/``) subfolders of AB images.
        phase: subfolder to read.
        direction: ``AtoB`` (input = left half) or ``BtoA`` (input = right half).
        load_size, crop_size: train-time resize and random crop; test-time images are resized to
            ``crop_size``.
        train: apply the random crop and flip.
        flip: allow the random horizontal flip.
        validate: run :meth:`validate` now (headers only), so a bad file stops the run before it starts.

    ``get(i, rng)`` -> (input [3, S, S], target [3, S, S]) float32 in [-1, 1].
    """

    def __init__(self, dataroot, phase="train", direction="BtoA", load_size=286, crop_size=256, *, train=True,
                 flip=True, validate=True):
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction={direction!r}; choose AtoB or BtoA")
        if load_size < crop_size:
            raise ValueError(f"load_size={load_size} is smaller than crop_size={crop_size}; it must be >= crop_size")
        self.paths = list_images(os.path.join(dataroot, phase), what=f"pix2pix {phase} folder")
        self.direction = direction
        self.load_size, self.crop_size = load_size, crop_size
        self.train, self.flip = train, flip
        self.phase = phase
        if validate:
            self.validate()

    def validate(self):
        """Check every file from its header and last bytes (no decoding): a complete JPEG/PNG stream and
        an A|B layout twice as wide as high. Raises one ``ValueError`` listing the first bad files."""
        def check(path):
            check_image_complete(path)
            w, h, _ = image_header(path)
            _check_ab_size(w, h, path)
        validate_files(self.paths, check, f"pix2pix {self.phase} images",
                       "Fix or remove these files before training (see datasets/combine_A_and_B.py in the "
                       "pix2pix reference code for the A|B layout).")

    def __len__(self):
        return len(self.paths)

    def name(self, index):
        return os.path.splitext(os.path.basename(self.paths[index]))[0]

    def get(self, index, rng):
        path = self.paths[index]
        a, b = split_ab(read_image(path), path)
        if self.direction == "BtoA":
            a, b = b, a
        if self.train:
            a, b = resize_bicubic(a, self.load_size), resize_bicubic(b, self.load_size)
            x = rng.randint(0, self.load_size - self.crop_size + 1)
            y = rng.randint(0, self.load_size - self.crop_size + 1)
            a = a[y:y + self.crop_size, x:x + self.crop_size]
            b = b[y:y + self.crop_size, x:x + self.crop_size]
            if self.flip and rng.rand() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
        else:
            a, b = resize_bicubic(a, self.crop_size), resize_bicubic(b, self.crop_size)
        return to_tensor_layout(a), to_tensor_layout(b)


class TilePlan:
    """How one [H, W, 3] input image becomes ``size`` x ``size`` generator inputs and back.

    Built by :func:`plan_tiles`. ``split(image)`` -> [N, 3, size, size] float32 in [-1, 1];
    ``merge(outputs [N, C, size, size])`` -> [C, out_h, out_w]. ``note`` says what was done to the
    input's size (for the log), ``resized`` is the (h, w) the input is bicubic-resized to, and
    ``origins`` the (y, x) of each tile in the padded/resized canvas.
    """

    def __init__(self, mode, size, resized, canvas, origins, note):
        self.mode, self.size = mode, size
        self.resized, self.canvas, self.origins = resized, canvas, origins
        self.note = note

    @property
    def out_shape(self):
        """(h, w) of the merged output: the resized input's shape."""
        return self.resized

    def split(self, image):
        """[H, W, 3] uint8 image -> [N, 3, size, size] float32 tiles in [-1, 1]."""
        x = to_tensor_layout(resize_bicubic(np.asarray(image), self.resized))
        ch, cw = self.canvas
        if (ch, cw) != self.resized:
            x = np.pad(x, ((0, 0), (0, ch - self.resized[0]), (0, cw - self.resized[1])), mode="reflect")
        s = self.size
        return np.stack([x[:, y:y + s, x0:x0 + s] for y, x0 in self.origins])

    def merge(self, outputs):
        """[N, C, size, size] generator outputs -> [C, out_h, out_w]: overlaps averaged, padding cropped."""
        outputs = np.asarray(outputs)
        if outputs.shape[0] != len(self.origins) or outputs.shape[2:] != (self.size, self.size):
            raise ValueError(f"merge expects {len(self.origins)} outputs of {self.size}x{self.size}; "
                             f"got an array of shape {outputs.shape}")
        total = np.zeros((outputs.shape[1],) + tuple(self.canvas), np.float64)
        count = np.zeros(self.canvas, np.float64)
        s = self.size
        for (y, x0), out in zip(self.origins, outputs):
            total[:, y:y + s, x0:x0 + s] += out
            count[y:y + s, x0:x0 + s] += 1.0
        h, w = self.resized
        return (total / count)[:, :h, :w].astype(outputs.dtype)


def _tile_starts(length, size):
    """Left edges of the fewest ``size`` tiles covering [0, length): evenly spread, first at 0, last at the end."""
    n = -(-length // size)
    if n == 1:
        return [0]
    return [int(round(i * (length - size) / (n - 1))) for i in range(n)]


def plan_tiles(height, width, size, mode="resize"):
    """Plan how a ``height`` x ``width`` input reaches a generator that takes ``size`` x ``size`` images.

    Modes (the generator sees bicubic-resized inputs, as in training):

    * ``resize``: squash to ``size`` x ``size`` (the aspect ratio is lost; the output is square);
    * ``pad``: resize so the longer side is ``size`` (aspect kept), reflect-pad the shorter side to
      ``size``, run once and crop the output back;
    * ``tile``: resize so the shorter side is ``size`` (aspect kept), run the fewest ``size`` x ``size``
      tiles covering the image (the last tile overlaps its neighbour) and average the overlaps.

    Returns a :class:`TilePlan`; its ``note`` is empty only when nothing but a plain resize of a
    square input happened.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"fit mode {mode!r} is not supported; choose one of {FIT_MODES}")
    if height <= 0 or width <= 0:
        raise ValueError(f"input of {width}x{height} pixels has no area")
    square = height == width
    if mode == "resize" or square:
        note = "" if square else (f"resized {width}x{height} to {size}x{size}: the aspect ratio is not kept "
                                  f"(use fit mode pad or tile to keep it)")
        if square and height != size:
            note = f"resized {width}x{height} to {size}x{size}"
        return TilePlan(mode, size, (size, size), (size, size), [(0, 0)], note)
    if mode == "pad":
        scale = size / max(height, width)
        h, w = max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)
        return TilePlan(mode, size, (h, w), (size, size), [(0, 0)],
                        _resized(height, width, h, w, and_then="reflect-padded") + f" to {size}x{size}; the output "
                        f"is cropped back to {w}x{h}")
    scale = size / min(height, width)
    h, w = max(int(round(height * scale)), size), max(int(round(width * scale)), size)
    origins = [(y, x) for y in _tile_starts(h, size) for x in _tile_starts(w, size)]
    return TilePlan(mode, size, (h, w), (h, w), origins,
                    _resized(height, width, h, w, and_then="translated") + f" as {len(origins)} overlapping "
                    f"{size}x{size} tiles")


def _resized(height, width, h, w, *, and_then):
    """The start of a plan's note: "resized WxH to wxh and <and_then>", or only <and_then> when no resize happens."""
    return and_then if (h, w) == (height, width) else f"resized {width}x{height} to {w}x{h} and {and_then}"
