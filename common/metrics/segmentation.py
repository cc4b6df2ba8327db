"""Segmentation scores from one confusion matrix over the whole set (FCN-score, mIoU).

Protocol: label maps in trainId space (``ignore`` pixels, 255 by default, are skipped); predictions
are compared at the label's resolution; one confusion matrix is accumulated over all images, then

* pixel accuracy   = trace / sum,
* mean class acc.  = mean_c  TP_c / (TP_c + FN_c),
* mean IoU         = mean_c  TP_c / (TP_c + FN_c + FP_c),

where the means skip classes without any ground-truth pixel (class acc.) and classes neither present
nor predicted (IoU). Predictions outside 0..K-1 (e.g. the 20th "void" channel of the pix2pix FCN-8s)
count as misses; the pix2pix script instead dropped such frames silently. Generated files are matched
to ground truth by name (frame id), never by position.
"""
import os
import re

import numpy as np

from common.cityscapes import CLASS_NAMES, IGNORE
from common.io import IMAGE_EXTENSIONS

__all__ = ["ConfusionMatrix", "frame_id", "match_by_name"]


class ConfusionMatrix:
    """K x (K+1) pixel counts: rows = ground truth, columns = prediction (last column: outside 0..K-1)."""

    def __init__(self, num_classes=len(CLASS_NAMES), ignore=IGNORE, class_names=None):
        self.num_classes, self.ignore = num_classes, ignore
        self.class_names = tuple(class_names) if class_names is not None else (
            CLASS_NAMES if num_classes == len(CLASS_NAMES) else tuple(str(i) for i in range(num_classes)))
        self.reset()

    def reset(self):
        self.hist = np.zeros((self.num_classes, self.num_classes + 1), np.int64)
        self.images = 0

    def update(self, pred, label, name="label"):
        """Add one [H, W] prediction / ground-truth pair (integer class ids)."""
        pred, label = np.asarray(pred), np.asarray(label)
        if pred.shape != label.shape:
            raise ValueError(f"{name}: prediction {pred.shape} and label {label.shape} differ in size; "
                             f"resize the generated image to the label size before segmenting it")
        label = label.astype(np.int64).reshape(-1)
        valid = label != self.ignore
        bad = np.unique(label[valid & ((label < 0) | (label >= self.num_classes))])
        if bad.size:
            raise ValueError(f"{name}: label ids {bad[:10].tolist()} are outside the table 0..{self.num_classes - 1} "
                             f"(ignore={self.ignore}); map raw ids to train ids first "
                             f"(Cityscapes: common.cityscapes.label_ids_to_train_ids)")
        pred = pred.astype(np.int64).reshape(-1)[valid]
        pred = np.where((pred >= 0) & (pred < self.num_classes), pred, self.num_classes)
        k = self.num_classes + 1
        self.hist += np.bincount(label[valid] * k + pred, minlength=self.num_classes * k).reshape(self.num_classes, k)
        self.images += 1

    def scores(self):
        """(pixel acc., per-class acc. [K], per-class IoU [K]) with NaN for undefined classes."""
        if self.images == 0 or self.hist.sum() == 0:
            raise ValueError("segmentation score: no labelled pixels were evaluated (empty set or all ignore)")
        tp = np.diag(self.hist[:, :self.num_classes]).astype(np.float64)
        gt = self.hist.sum(axis=1).astype(np.float64)
        predicted = self.hist[:, :self.num_classes].sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(gt > 0, tp / gt, np.nan)
            union = gt + predicted - tp
            iou = np.where(union > 0, tp / union, np.nan)
        return tp.sum() / gt.sum(), acc, iou

    def compute(self):
        pixel_acc, acc, iou = self.scores()
        return {"pixel_acc": float(pixel_acc), "mean_class_acc": float(np.nanmean(acc)),
                "mean_iou": float(np.nanmean(iou))}

    def table(self):
        """Per-class table in the MindSpore pix2pix README format (Markdown: class | accuracy | IoU)."""
        pixel_acc, acc, iou = self.scores()
        lines = ["| class | accuracy | IoU |", "|---|---|---|"]
        lines += [f"| {n} | {a:.4f} | {u:.4f} |" for n, a, u in zip(self.class_names, acc, iou)]
        lines += [f"| **mean** | {np.nanmean(acc):.4f} | {np.nanmean(iou):.4f} |",
                  f"| **pixel accuracy** | {pixel_acc:.4f} | |"]
        return "\n".join(lines)


_SUFFIXES = ("_leftImg8bit", "_gtFine_labelIds", "_gtFine_color", "_gtFine_trainIds", "_labelIds",
             "_synthesized_image", "_fake_B", "_fake", "_label", "_real_B")


def frame_id(path):
    """The frame id of a result or label file: the stem without known suffixes
    (``aachen_000000_000019_leftImg8bit.png`` and ``aachen_000000_000019_gtFine_labelIds.png`` ->
    ``aachen_000000_000019``)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if stem.endswith(suffix):
                stem, changed = stem[:-len(suffix)], True
    return stem


def _walk(folder, pattern):
    out = {}
    for root, _, names in os.walk(folder):
        for n in sorted(names):
            if n.lower().endswith(IMAGE_EXTENSIONS) and re.search(pattern, n):
                key = frame_id(n)
                if key in out:
                    raise ValueError(f"two files with frame id {key!r} under {folder}: {out[key]} and "
                                     f"{os.path.join(root, n)}")
                out[key] = os.path.join(root, n)
    return out


def match_by_name(result_dir, label_dir, label_pattern=r"_gtFine_labelIds\.png$", result_pattern=r"."):
    """Pair every ground-truth file with the generated file of the same frame id.

    Returns a list of (frame id, result path, label path), sorted by frame id. Errors list the frames
    without a generated image (or generated images without a label): a partial set is never scored.
    """
    for d, what in ((result_dir, "result folder"), (label_dir, "label folder")):
        if not os.path.isdir(d):
            raise FileNotFoundError(f"{what} {d} does not exist")
    labels, results = _walk(label_dir, label_pattern), _walk(result_dir, result_pattern)
    if not labels:
        raise FileNotFoundError(f"no label files matching {label_pattern!r} under {label_dir}")
    missing = sorted(set(labels) - set(results))
    extra = sorted(set(results) - set(labels))
    if missing or extra:
        raise ValueError(f"generated images in {result_dir} do not match labels in {label_dir} by name: "
                         f"{len(missing)} labels without a result (e.g. {missing[:3]}), {len(extra)} results "
                         f"without a label (e.g. {extra[:3]}); name results <frame id>_leftImg8bit.png")
    return [(k, results[k], labels[k]) for k in sorted(labels)]
