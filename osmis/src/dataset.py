"""OSMIS data: ``DATASET/image/`` (one image or video frames) and optional ``DATASET/mask/``.

Masks pair with images by file stem (``mask/<stem>.png``). A mask file is

* an index map (single channel or palette PNG, values 0..K: K+1 classes),
* a binary map (single channel with values above 30, e.g. 0/255 or anti-aliased): 2 classes,
  background/object split at 128 (the reference uses the soft value; ours is hard),
* a colour map (RGB): every distinct colour over all masks is a class, sorted (black first); more than 256 colours
  is an error (an antialiased or JPEG-saved mask, whose blended colours would each become a class).

With a class table (``common.classes``, config key ``class_table``) the masks are read through it instead:
single-channel masks hold its ids (no binary rule), colour masks its colours, and the table sets the classes;
any other value is an error naming the mask file.

Without ``mask/`` (or with ``no_masks``) the model trains in SIV-GAN mode. Images are resized (bilinear) and
masks (nearest) to the training resolution of :func:`osmis.src.config.auto_config`, each on its own as the
reference does (so a mask may have another size than its image if the aspect ratio agrees), with PIL's filters
as torchvision's ``Resize`` on the reference's PIL images (antialiased when shrinking; nearest at pixel
centres); images map to [-1, 1].
"""
import os

import numpy as np
from PIL import Image

from common.data import validate_files
from common.io import check_image_complete, image_header, list_images, read_image, resize_nearest, resize_photo
from osmis.src.augment import sample_affine, sample_content_fa, sample_layout_fa

__all__ = ["OSMISDataset", "TrainSamples", "read_mask", "mask_kind"]

BINARY_THRESHOLD = 30
MAX_COLOUR_CLASSES = 256  # without a class table


def read_mask(path):
    """A mask file as [H, W] uint8 (index or grey) or [H, W, 3] uint8 (colour); errors name the file."""
    check_image_complete(path)
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L", "I", "I;16", "1"):
                return np.array(im if im.mode != "1" else im.convert("L"))
            arr = np.array(im.convert("RGB"))
    except OSError as e:
        raise ValueError(f"mask file {path} cannot be read ({e})") from None
    if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        return arr[..., 0]
    return arr


def mask_kind(mask):
    """'colour', 'binary' or 'index' for an array from :func:`read_mask` (the reference's rule)."""
    if mask.ndim == 3:
        return "colour"
    return "binary" if mask.max() > BINARY_THRESHOLD else "index"


class OSMISDataset:
    """The training frames (and masks) at their training resolution.

    Args:
        root: the dataset folder holding ``image/`` (and ``mask/``).
        no_masks: ignore ``mask/`` (SIV-GAN mode).
        num_mask_channels: classes expected (0: from the masks); masks with more are an error.
        class_table: a :class:`common.classes.ClassTable` the masks follow (module doc), or None.
    Attributes: ``image_paths``, ``mask_paths`` (None in SIV-GAN mode), ``size`` (W, H) of the frames
    (the square of the mean size when they differ, as the reference), ``num_mask_channels``.
    """

    def __init__(self, root, *, no_masks=False, num_mask_channels=0, class_table=None):
        image_dir, mask_dir = os.path.join(root, "image"), os.path.join(root, "mask")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"dataset {root} has no image/ folder; put the training image (or video "
                                    f"frames) in {image_dir} and optional masks in {mask_dir}")
        self.image_paths = list_images(image_dir, what="OSMIS image folder")
        self.mask_paths = None
        if os.path.isdir(mask_dir) and not no_masks:
            masks = {os.path.splitext(f)[0]: os.path.join(mask_dir, f) for f in sorted(os.listdir(mask_dir))
                     if not f.startswith(".")}
            missing = [p for p in self.image_paths if os.path.splitext(os.path.basename(p))[0] not in masks]
            if missing:
                raise FileNotFoundError(f"{len(missing)} image(s) have no mask in {mask_dir} (e.g. {missing[0]}: "
                                        f"expected mask/<same stem>.png); add them, or pass --no_masks=true")
            self.mask_paths = [masks[os.path.splitext(os.path.basename(p))[0]] for p in self.image_paths]
        sizes = []

        def check(path):
            check_image_complete(path)
            w, h = image_header(path)[:2]
            sizes.append((path, w, h))

        validate_files(self.image_paths, check, "OSMIS training images", num_workers=1)
        dims = {(w, h) for _, w, h in sizes}
        if len(dims) == 1:
            self.size = dims.pop()
            self.equal_sizes = True
        else:
            mean = sum(w + h for _, w, h in sizes) / (2 * len(sizes))
            self.size = (mean, mean)
            self.equal_sizes = False
        self.frame_sizes = {p: (w, h) for p, w, h in sizes}
        self.colours = None
        self.class_table = class_table
        self.kind = None
        self.num_mask_channels = 0
        if self.mask_paths is not None:
            self._scan_masks(num_mask_channels)
        self.resolution = None

    def _scan_masks(self, expected):
        kinds, colours, top = set(), set(), 0
        for img, path in zip(self.image_paths, self.mask_paths):
            m = read_mask(path)
            (iw, ih), (mh, mw) = self.frame_sizes[img], m.shape[:2]
            if abs(mh - mw * ih / iw) > 1:
                raise ValueError(f"mask {path} is {mw}x{mh} but its image {img} is {iw}x{ih}; a mask must have its "
                                 f"image's size or aspect ratio (both are resized to the training resolution)")
            kind = mask_kind(m) if self.class_table is None else "colour" if m.ndim == 3 else "index"
            kinds.add(kind)
            if self.class_table is not None:
                self.class_table.to_ids(m, f"mask {path}")
                continue
            if kind == "colour":
                colours.update(map(tuple, np.unique(m.reshape(-1, 3), axis=0)))
            elif kind == "index":
                top = max(top, int(m.max()))
        if len(kinds) > 1:
            raise ValueError(f"the masks in {os.path.dirname(self.mask_paths[0])} mix {sorted(kinds)} maps; use one "
                             f"kind (index, binary 0/255 or colour) for all")
        self.kind = kinds.pop()
        if self.class_table is not None:
            n = self.class_table.num_classes
        elif self.kind == "colour":
            self.colours = np.array(sorted(colours), np.int64)
            n = len(self.colours)
            if n > MAX_COLOUR_CLASSES:
                raise ValueError(f"the colour masks in {os.path.dirname(self.mask_paths[0])} hold {n} distinct "
                                 f"colours, each a class; antialiased or JPEG-saved masks blend their colours: save "
                                 f"them as PNG without antialiasing, as index masks, or give a class table "
                                 f"(--class_table, which names the valid colours)")
        else:
            n = 2 if self.kind == "binary" else top + 1
        if expected and n > expected:
            raise ValueError(f"the masks in {os.path.dirname(self.mask_paths[0])} hold {n} classes ({self.kind} "
                             f"masks) but num_mask_channels={expected}; pass --num_mask_channels={n} or 0 (auto)")
        self.num_mask_channels = int(expected or n)

    def __len__(self):
        return len(self.image_paths)

    def load(self, index, resolution):
        """(image [3, H, W] float32 in [-1, 1], mask [C, H, W] one-hot float32 or None) at (H, W)."""
        h, w = resolution
        img = resize_photo(read_image(self.image_paths[index]), h, w, method="bilinear")
        image = (img.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)
        if self.mask_paths is None:
            return image, None
        m = resize_nearest(read_mask(self.mask_paths[index]), h, w)
        ids = self.class_ids(m, self.mask_paths[index])
        return image, np.eye(self.num_mask_channels, dtype=np.float32)[ids].transpose(2, 0, 1)

    def class_ids(self, m, path):
        """[H, W] class ids of a mask array."""
        if self.class_table is not None:
            return self.class_table.to_ids(m, f"mask {path}")
        if self.kind == "colour":
            key = (m[..., 0].astype(np.int64) << 16) | (m[..., 1].astype(np.int64) << 8) | m[..., 2]
            table = (self.colours[:, 0] << 16) | (self.colours[:, 1] << 8) | self.colours[:, 2]
            return np.searchsorted(table, key)
        if self.kind == "binary":
            return (m >= 128).astype(np.int64)
        if m.max() >= self.num_mask_channels:
            raise ValueError(f"mask {path} has class {int(m.max())} >= num_mask_channels={self.num_mask_channels}")
        return m.astype(np.int64)


class TrainSamples:
    """The training set the loader iterates: ``samples_per_epoch`` draws over the frames.

    ``get(index, rng)`` returns one sample's fields (``osmis.src.loss.BATCH_FIELDS``): the two noise
    vectors, the frame and its one-hot mask at the training resolution (a [1, 1, 1] placeholder in
    SIV-GAN mode), the three augmentation maps (G pass, real pass, D's fake pass), the Bernoulli draws
    of the two fake passes ([C, h, w] at the low-level size; placeholders in SIV-GAN mode) and the
    feature-augmentation draws. All randomness comes from ``rng``.
    """

    def __init__(self, frames, arch, samples_per_epoch, prob_augm, prob_fa_con, prob_fa_lay):
        self.frames, self.arch = frames, arch
        self.n = int(samples_per_epoch)
        self.prob_augm, self.prob_fa_con, self.prob_fa_lay = prob_augm, prob_fa_con, prob_fa_lay
        self.cache = {}

    def __len__(self):
        return self.n

    def _frame(self, i):
        if i not in self.cache:
            self.cache[i] = self.frames.load(i, tuple(self.arch["resolution"]))
        return self.cache[i]

    def get(self, index, rng):
        a = self.arch
        image, mask = self._frame(index % len(self.frames))
        h, w = a["resolution"]
        lh, lw = a["low_level_size"]
        z = rng.standard_normal((2, a["noise_dim"], 1, 1)).astype(np.float32)
        thetas = [sample_affine(rng, self.prob_augm, h, w) for _ in range(3)]
        c = a["num_mask_channels"]
        if c:
            bern = rng.uniform(size=(2, c, lh, lw)).astype(np.float32)
        else:
            mask, bern = np.zeros((1, 1, 1), np.float32), np.zeros((2, 1, 1, 1), np.float32)
        mix, drop = sample_content_fa(rng, self.prob_fa_con, a["content_channels"])
        layout = sample_layout_fa(rng, self.prob_fa_lay, lh, lw, c)
        return (z[0], z[1], image, mask, thetas[0], thetas[1], thetas[2], bern[0], bern[1], mix, drop, layout)
