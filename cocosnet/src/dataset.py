"""CoCosNet data: (label map, exemplar, exemplar label map, target, self-reference flag) samples.

Sources (``data_format``), photos and label maps paired by file stem:

* ``ade20k``: ADE20K as distributed, ``<root>/images/{training,validation}/*.jpg`` with
  ``<root>/annotations/{training,validation}/*.png`` (``root`` = ``ADEChallengeData2016`` or its parent);
  class ids 0..150 (0 = "other"): ``label_nc`` = 151;
* ``folders``: ``<root>/{train,val}/images/*`` with ``<root>/{train,val}/labels/*.png`` (what
  ``python -m common.prepare`` writes, and the styled demo data); class ids 0..label_nc-1.

Exemplars come from a reference list (``ref_list``, one line per key: ``key,ref1,...,refK``, names of
files or stems; ``build_ref_list`` makes one for any dataset). Exemplars are always training images. In
training a sample's exemplar is, with the reference probabilities, the first entry (50 %), the last entry
("hard", 20 %) or the target itself under a fresh random crop and flip (30 %, ``self_ref = 1``).

Transforms: training resizes to ``load_size`` (PIL's photo bicubic and labels nearest, as the reference's
torchvision ``Resize``), crops ``size`` at random
and flips at random (target and label with one draw, the exemplar with its own); evaluation resizes to
``size``. Photos go to [-1, 1] ([3, H, W]); label maps to one-hot [label_nc, H, W].
"""
import glob
import os

import numpy as np

from common.classes import unknown_ids_error
from common.data import validate_files
from common.io import check_image_pair, read_image, read_label, resize_nearest, resize_photo

__all__ = ["DATA_FORMATS", "SPLITS", "find_pairs", "read_ref_list", "read_ids", "one_hot", "ExemplarDataset"]

DATA_FORMATS = ("ade20k", "folders")
SPLITS = {"ade20k": {"train": "training", "val": "validation"}, "folders": {"train": "train", "val": "val"}}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _dirs(root, data_format, split):
    """(image folder, label folder) of ``split`` (train/val)."""
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format={data_format!r}; choose one of {DATA_FORMATS}")
    name = SPLITS[data_format][split]
    if data_format == "ade20k":
        if os.path.isdir(os.path.join(root, "ADEChallengeData2016")):
            root = os.path.join(root, "ADEChallengeData2016")
        return os.path.join(root, "images", name), os.path.join(root, "annotations", name)
    return os.path.join(root, name, "images"), os.path.join(root, name, "labels")


def find_pairs(root, data_format, split):
    """{stem: (photo path, label path)} of a split, sorted by stem; errors name the folder and the fix."""
    image_dir, label_dir = _dirs(root, data_format, split)
    layout = ("ADEChallengeData2016/images/{training,validation}/*.jpg + annotations/.../*.png"
              if data_format == "ade20k" else "<root>/{train,val}/images/* + <root>/{train,val}/labels/*.png")
    other = next(f for f in DATA_FORMATS if f != data_format)
    for d in (image_dir, label_dir):
        if not os.path.isdir(d):
            hint = (f"; {root} has the {other} layout: pass --data_format={other}"
                    if all(os.path.isdir(x) for x in _dirs(root, other, split)) else "")
            raise FileNotFoundError(f"{d} does not exist; data_format={data_format} expects {layout}{hint}")
    photos = {os.path.splitext(os.path.basename(p))[0]: p for p in sorted(glob.glob(os.path.join(image_dir, "*")))
              if p.lower().endswith(IMAGE_EXTS)}
    labels = {os.path.splitext(os.path.basename(p))[0]: p for p in glob.glob(os.path.join(label_dir, "*.png"))}
    if not photos:
        raise FileNotFoundError(f"no images in {image_dir}; data_format={data_format} expects {layout}")
    missing = [s for s in photos if s not in labels]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) in {image_dir} have no label map <stem>.png in {label_dir} "
                                f"(e.g. {missing[:3]})")
    return {s: (photos[s], labels[s]) for s in sorted(photos)}


def _stem(name):
    name = os.path.basename(name.strip())
    root, ext = os.path.splitext(name)
    return root if ext.lower() in IMAGE_EXTS else name


def read_ref_list(path, keys, refs, *, build="python -m cocosnet.build_ref_list --dataroot=<data> "
                                             "--ref_split=<train|val>"):
    """``{key stem: [ref stems]}`` from a ``key,ref1,...,refK`` file.

    Only lines whose key is in ``keys`` are kept (a list may cover several splits); every kept key's
    references must be in ``refs`` (the training stems). Errors name the file, the line and the fix (a missing
    file: the ``build`` command that writes it).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"reference list {path} does not exist; build one with `{build}` or pass "
                                f"--ref_list (training) / --ref_list_val (validation)")
    table = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            names = [x for x in line.strip().split(",") if x.strip()]
            if len(names) < 2:
                raise ValueError(f"{path}:{n}: {line.strip()!r} has no exemplar; lines are key,ref1,...,refK")
            key = _stem(names[0])
            if key not in keys:
                continue
            stems = [_stem(x) for x in names[1:]]
            missing = [x for x in stems if x not in refs]
            if missing:
                raise FileNotFoundError(f"{path}:{n}: exemplar(s) {missing} of {names[0]} are not training images "
                                        f"of the dataset (no photo + label map with that name); fix the list or "
                                        f"rebuild it with python -m cocosnet.build_ref_list")
            table[key] = stems
    absent = [k for k in keys if k not in table]
    if absent:
        raise ValueError(f"{path}: no line for {len(absent)} of the {len(keys)} images (e.g. {absent[:3]}); every "
                         f"image needs a line key,ref1,...; rebuild it with python -m cocosnet.build_ref_list")
    return table


def read_ids(path, label_nc, *, class_table=""):
    """[H, W] int64 class ids of a label PNG; an id >= ``label_nc`` is an error naming the file (and the class
    table file ``class_table`` label_nc came from, if any)."""
    ids = read_label(path, fix=f"CoCosNet reads class ids 0..{label_nc - 1} as pixel values (bash "
                               f"scripts/prepare_data.sh custom converts colour label maps with a class table)")
    ids = ids.astype(np.int64)
    if ids.max() >= label_nc or ids.min() < 0:
        bad = sorted(set(ids[(ids >= label_nc) | (ids < 0)].tolist()))
        if class_table:
            raise unknown_ids_error(f"label map {path}", bad, label_nc, class_table=class_table)
        raise ValueError(f"label map {path} holds class ids {bad[:10]} outside 0..{label_nc - 1}; set "
                         f"--label_nc to at least {bad[-1] + 1} for training (ADE20K: 151 = 150 classes + 'other'; "
                         f"eval.py and predict.py take it from the checkpoint: use one trained with it), or fix the "
                         f"file")
    return ids


def one_hot(ids, label_nc):
    """[H, W] ids -> [label_nc, H, W] float32."""
    out = np.zeros((label_nc,) + ids.shape, np.float32)
    np.put_along_axis(out, ids[None], 1.0, axis=0)
    return out


class ExemplarDataset:
    """A split's samples with their exemplars (module doc).

    Args:
        root, data_format: the dataset (:data:`DATA_FORMATS`).
        split: ``train`` or ``val``.
        ref_list: the reference-list file.
        label_nc: one-hot channels (151 for ADE20K).
        size: output side; ``load_size``: training resize before the random crop.
        train: random exemplar choice, crops and flips (else: first exemplar, plain resize).
        real_reference_probability, hard_reference_probability: the exemplar draw (0.7, 0.2: 50 % first,
            20 % last, 30 % self).
        max_samples: use only the first N keys (0: all).
        class_table: the class table file label_nc came from (named in the error for an id outside it).

    ``get(index, rng)`` -> (seg [L, S, S], ref [3, S, S], ref_seg [L, S, S], real [3, S, S], self_ref []).
    """

    def __init__(self, root, data_format, split, ref_list, label_nc, size, load_size=0, *, train=False,
                 real_reference_probability=0.7, hard_reference_probability=0.2, max_samples=0,
                 class_table=""):
        if load_size and load_size < size:
            raise ValueError(f"load_size={load_size} is smaller than size={size}; the random crop needs load_size >= size")
        self.label_nc, self.size, self.load_size = label_nc, size, load_size or size
        self.train, self.class_table = train, class_table
        self.p_real, self.p_hard = real_reference_probability, hard_reference_probability
        self.pairs = find_pairs(root, data_format, split)
        self.refs = self.pairs if split == "train" else find_pairs(root, data_format, "train")
        keys = list(self.pairs)[:max_samples] if max_samples else list(self.pairs)
        self.table = read_ref_list(ref_list, keys, self.refs, build=(
            f"python -m cocosnet.build_ref_list --dataroot={root} --data_format={data_format} --ref_split={split} "
            f"--ref_out={ref_list}"))
        self.keys = keys
        used = {s: self.pairs[s] for s in keys}
        used.update({r: self.refs[r] for s in keys for r in self.table[s]})
        ids = f"the label maps hold class ids 0..{label_nc - 1}"
        validate_files(list(used.values()), lambda p: check_image_pair(*p, fix=ids), f"CoCosNet {split} images",
                       fix="each photo needs a label PNG of its size holding class ids")

    def __len__(self):
        return len(self.keys)

    def name(self, index):
        return self.keys[index]

    def photo_path(self, index):
        """The target photo file of sample ``index``."""
        return self.pairs[self.keys[index]][0]

    def exemplar_name(self, index):
        """The first (evaluation) exemplar's stem of sample ``index``."""
        return self.table[self.keys[index]][0]

    def _load(self, pair, rng):
        photo, label = pair
        img, ids = read_image(photo), read_ids(label, self.label_nc, class_table=self.class_table)
        side = self.load_size if self.train else self.size
        img, ids = resize_photo(img, side, side), resize_nearest(ids, side, side)
        if self.train:
            y, x = rng.randint(0, side - self.size + 1, 2)
            img, ids = img[y:y + self.size, x:x + self.size], ids[y:y + self.size, x:x + self.size]
            if rng.rand() < 0.5:
                img, ids = img[:, ::-1], ids[:, ::-1]
        photo01 = np.ascontiguousarray(img.transpose(2, 0, 1), np.float32) / 127.5 - 1.0
        return photo01, one_hot(np.ascontiguousarray(ids), self.label_nc)

    def get(self, index, rng=None):
        rng = rng if rng is not None else np.random.RandomState(index)
        key = self.keys[index]
        real, seg = self._load(self.pairs[key], rng)
        refs = self.table[key]
        self_ref = 0.0
        if self.train:
            u = rng.rand()
            if u < self.p_hard:
                ref_pair = self.refs[refs[-1]]
            elif u < self.p_real:
                ref_pair = self.refs[refs[0]]
            else:
                ref_pair, self_ref = self.pairs[key], 1.0
        else:
            ref_pair = self.refs[refs[0]]
        ref, ref_seg = self._load(ref_pair, rng)
        return seg, ref, ref_seg, real, np.float32(self_ref)
