"""CRN data: label maps encoded as one-hot + void, paired with RGB targets.

Source -> transforms -> batches:

* sources: ``cityscapes`` (``<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``<root>/gtFine/<split>/<city>/*_gtFine_{labelIds,color}.png``) or ``folders`` (``<root>/<split>/images``
  and ``<root>/<split>/labels``, paired by file stem; labels hold class ids 0..num_classes-1 and
  ``ignore_index`` for void, e.g. ADE20K with 0 = "other" as its own class);
* transforms: the photo is resized with area interpolation to (size, aspect*size) and kept in 0..255; the
  label is resized with nearest neighbour, mapped to class ids and one-hot encoded with a void channel
  (:func:`encode_label`). The soft lower-resolution masks are made inside the network and the loss;
* batches: :class:`common.data.BatchLoader` over :class:`CRNDataset`.
"""
import glob
import os

import cv2
import numpy as np

from common import cityscapes as cs
from common.classes import unknown_ids_error
from common.data import validate_files
from common.io import check_image_pair, check_lossless_label, image_header, read_image, read_label

__all__ = ["LABEL_FORMATS", "label_file_to_ids", "encode_label", "CRNDataset"]

LABEL_FORMATS = ("labelIds", "trainIds", "color")


def label_file_to_ids(path, label_format):
    """Read a label file as [H, W] class ids (void = ``cityscapes.IGNORE`` for the Cityscapes formats).

    ``labelIds``: Cityscapes labelIds mapped to the 19 trainIds; ``color``: Cityscapes colour annotation
    matched against the trainId palette; ``trainIds``: class ids as stored (single channel, or a palette PNG's
    indices). A JPEG file (lossy ids and colours) or a single-channel file under ``color`` is an error naming it.
    """
    if label_format == "color":
        check_lossless_label(path)
        if image_header(path)[2] < 3:
            raise ValueError(f"label file {path} has 1 channel; label_format=color expects a colour-coded label "
                             f"image (*_gtFine_color.png); for class-id maps pass --label_format=trainIds (or labelIds)")
        return cs.color_to_train_ids(read_image(path))
    ids = read_label(path)
    return cs.label_ids_to_train_ids(ids) if label_format == "labelIds" else ids


def encode_label(ids, num_classes, ignore_index=cs.IGNORE, source="label map", *, class_table=""):
    """[H, W] class ids -> [num_classes + 1, H, W] float32 one-hot, void (``ignore_index``) last.

    Raises:
        ValueError: an id is neither a class (< num_classes) nor ``ignore_index``; names ``source`` (and the
            class table file ``class_table`` the classes came from, if any).
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"{source}: label map of shape {ids.shape}; expected a single-channel [H, W] id map")
    ids = ids.astype(np.int64)
    bad = (ids != ignore_index) & ((ids < 0) | (ids >= num_classes))
    if bad.any():
        values = np.unique(ids[bad])
        if class_table:
            raise unknown_ids_error(source, values, num_classes, class_table=class_table)
        raise ValueError(f"{source}: label ids {values[:10].tolist()} are outside 0..{num_classes - 1} and are not "
                         f"the void id {ignore_index}; set num_classes to at least {int(values.max()) + 1}, or "
                         f"ignore_index to the void id, or check label_format (labelIds/trainIds/color)")
    onehot = np.zeros((num_classes + 1,) + ids.shape, np.float32)
    index = np.where(ids == ignore_index, num_classes, ids)
    np.put_along_axis(onehot, index[None], 1.0, axis=0)
    return onehot


def _cityscapes_pairs(root, split, label_format):
    image_dir = os.path.join(root, "leftImg8bit", split)
    images = sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png")))
    if not images:
        raise FileNotFoundError(f"no *_leftImg8bit.png images under {image_dir}; dataroot must be the Cityscapes "
                                f"folder holding leftImg8bit/ and gtFine/ (or leave it empty for the demo data)")
    suffix = {"labelIds": "_gtFine_labelIds.png", "color": "_gtFine_color.png",
              "trainIds": "_gtFine_labelTrainIds.png"}[label_format]
    pairs = []
    for img in images:
        city = os.path.basename(os.path.dirname(img))
        stem = os.path.basename(img)[:-len("_leftImg8bit.png")]
        lab = os.path.join(root, "gtFine", split, city, stem + suffix)
        if not os.path.isfile(lab):
            raise FileNotFoundError(f"label file {lab} for image {img} does not exist; check label_format "
                                    f"({label_format}) and that gtFine/{split} is complete")
        pairs.append((img, lab))
    return pairs


def _folder_pairs(root, split):
    image_dir, label_dir = os.path.join(root, split, "images"), os.path.join(root, split, "labels")
    images = {os.path.splitext(n)[0]: os.path.join(image_dir, n) for n in os.listdir(image_dir)} \
        if os.path.isdir(image_dir) else {}
    if not images:
        raise FileNotFoundError(f"no images in {image_dir}; data_format=folders expects <dataroot>/<split>/images "
                                f"and <dataroot>/<split>/labels with matching file names")
    labels = {os.path.splitext(n)[0]: os.path.join(label_dir, n) for n in os.listdir(label_dir)} \
        if os.path.isdir(label_dir) else {}
    missing = sorted(set(images) - set(labels))
    if missing:
        raise FileNotFoundError(f"{len(missing)} images in {image_dir} have no label in {label_dir}, "
                                f"e.g. {missing[:3]}")
    return [(images[s], labels[s]) for s in sorted(images)]


class CRNDataset:
    """(one-hot label [P, H, W] float32, photo [3, H, W] float32 0..255) pairs, P = num_classes + 1.

    Args:
        root: dataset folder (see module doc).
        split: ``train`` or ``val``.
        size, aspect: output height and width/height ratio.
        num_classes: classes without void (19 for Cityscapes trainIds).
        data_format: ``cityscapes`` or ``folders``.
        label_format: ``labelIds``, ``trainIds`` or ``color`` (see :func:`label_file_to_ids`).
        ignore_index: the void id of ``trainIds`` labels.
        max_samples: use only the first N pairs (0: all).
        validate: run :meth:`validate` now (headers only), so a bad pair stops the run before it starts.
        class_table: the class table file num_classes came from (named in the error for an id outside it).
    """

    def __init__(self, root, split, size, aspect=2, num_classes=19, data_format="cityscapes",
                 label_format="labelIds", ignore_index=cs.IGNORE, max_samples=0, *, validate=True, class_table=""):
        if data_format == "cityscapes":
            pairs = _cityscapes_pairs(root, split, label_format)
        elif data_format == "folders":
            pairs = _folder_pairs(root, split)
        else:
            raise ValueError(f"data_format={data_format!r}; choose cityscapes or folders")
        if label_format not in LABEL_FORMATS:
            raise ValueError(f"label_format={label_format!r}; choose one of {LABEL_FORMATS}")
        self.pairs = pairs[:max_samples] if max_samples else pairs
        self.height, self.width = size, aspect * size
        self.num_classes, self.label_format, self.ignore_index = num_classes, label_format, ignore_index
        self.label_nc = num_classes + 1
        self.split, self.class_table = split, class_table
        if validate:
            self.validate()

    def validate(self):
        """Check every (photo, label) pair from headers and last bytes, without decoding pixels.

        Each file must be a complete image stream, the label must have its photo's size, and its
        channels must fit ``label_format`` (one channel for ids, colour for ``color``). Raises one
        ``ValueError`` listing the first bad pairs and their count.
        """
        colour = self.label_format == "color"
        fix = ("label_format=color expects colour-coded labels; for class-id maps pass --label_format=trainIds "
               "(or labelIds)" if colour else f"label_format={self.label_format} expects a single-channel id map; "
               f"for colour-coded labels pass --label_format=color")
        validate_files(self.pairs, lambda pair: check_image_pair(*pair, colour_labels=colour, fix=fix),
                       f"CRN {self.split} (photo, label) pairs")

    def __len__(self):
        return len(self.pairs)

    def label(self, index):
        """One-hot label [P, H, W] of pair ``index``."""
        return self.load_label(self.pairs[index][1])

    def load_label(self, path, expect_shape=None):
        """Read, resize (nearest) and encode a label file; ``expect_shape`` is its photo's (H, W)."""
        ids = label_file_to_ids(path, self.label_format)
        if expect_shape is not None and ids.shape != expect_shape:
            raise ValueError(f"label map {path} is {ids.shape[1]}x{ids.shape[0]} but its photo is "
                             f"{expect_shape[1]}x{expect_shape[0]}; label maps must have the photo's size")
        if ids.shape != (self.height, self.width):
            ids = cv2.resize(ids.astype(np.uint16), (self.width, self.height), interpolation=cv2.INTER_NEAREST)
        return encode_label(ids, self.num_classes, self.ignore_index, path, class_table=self.class_table)

    def get(self, index, rng=None):
        """(label [P, H, W], photo [3, H, W]); the reference uses no augmentation, so ``rng`` is unused."""
        img_path, lab_path = self.pairs[index]
        img = read_image(img_path)
        label = self.load_label(lab_path, img.shape[:2])
        if img.shape[:2] != (self.height, self.width):
            img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return label, img.transpose(2, 0, 1).astype(np.float32)

    def name(self, index):
        """File stem of pair ``index`` (for output file names)."""
        stem = os.path.splitext(os.path.basename(self.pairs[index][0]))[0]
        return stem[:-len("_leftImg8bit")] if stem.endswith("_leftImg8bit") else stem
