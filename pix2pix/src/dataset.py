"""pix2pix data: aligned AB images (A | B side by side), as made by the reference ``combine_A_and_B.py``.

Source -> transforms -> batches:
* :class:`AlignedDataset` reads ``<dataroot>/<phase>/*.jpg|png``, checks the layout and splits A/B;
* train transform: bicubic resize to ``load_size``, one shared random ``crop_size`` crop and a shared
  horizontal flip for A and B; test transform: bicubic resize to ``crop_size``;
* values scaled to [-1, 1], HWC -> CHW; batches come from :class:`common.data.BatchLoader`.

For the paper's facades and Cityscapes sets (photo left, label right), label->photo is ``BtoA``.
"""
import os

import numpy as np
from PIL import Image

from common.io import list_images, read_image

__all__ = ["AlignedDataset", "split_ab", "to_tensor_layout", "check_image_size", "resize_bicubic"]


def check_image_size(size, multiple, netG):
    """Raise if a ``size``-pixel side cannot pass through ``netG`` (U-Nets need multiples of 2^downs)."""
    if size <= 0 or size % multiple:
        works = ", ".join(str(multiple * k) for k in range(1, 5))
        raise ValueError(f"image size {size} does not work with netG={netG}: it needs a multiple of {multiple} "
                         f"({works}, ...); set --crop_size (and --load_size) accordingly or pick another netG")


def split_ab(ab, path):
    """[H, 2H, 3] aligned image -> (A, B) halves; error naming ``path`` if width != 2 * height."""
    h, w = ab.shape[:2]
    if w != 2 * h:
        raise ValueError(f"aligned image {path} is {w}x{h} (width x height); pix2pix AB images must be "
                         f"exactly twice as wide as high (A | B side by side, e.g. 512x256). Rebuild it with "
                         f"A and B of equal size")
    return ab[:, :h], ab[:, h:]


def to_tensor_layout(img):
    """[H, W, 3] uint8 -> [3, H, W] float32 in [-1, 1]."""
    return (np.asarray(img, np.float32).transpose(2, 0, 1) / 127.5) - 1.0


def resize_bicubic(img, size):
    """[H, W, 3] uint8 -> [size, size, 3] uint8 with PIL bicubic (the reference resize)."""
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))


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

    ``get(i, rng)`` -> (input [3, S, S], target [3, S, S]) float32 in [-1, 1].
    """

    def __init__(self, dataroot, phase="train", direction="BtoA", load_size=286, crop_size=256, train=True,
                 flip=True):
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction={direction!r}; choose AtoB or BtoA")
        if load_size < crop_size:
            raise ValueError(f"load_size={load_size} is smaller than crop_size={crop_size}; it must be >= crop_size")
        self.paths = list_images(os.path.join(dataroot, phase), what=f"pix2pix {phase} folder")
        self.direction = direction
        self.load_size, self.crop_size = load_size, crop_size
        self.train, self.flip = train, flip

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
