"""Build a CoCosNet reference list (``key,ref1,...,refK``) for any dataset by retrieval on VGG features.

The recipe the CoCosNet authors describe (microsoft/CoCosNet issue #10): ImageNet VGG features after the
last max-pool (pool5, before the classifier), cosine similarity, the top K training images. Each key of
the chosen split is compared with every training image (itself excluded); its line lists the K most
similar, most similar first, so the loader's "easy" exemplar is the best match and the "hard" one the
K-th.

Images are resized (bicubic) to ``size`` x ``size``; pool5 is then [512, size/32, size/32], flattened.
"""
import os

import numpy as np
from mindspore import Tensor

from common.io import atomic_file, read_image, resize_photo
from cocosnet.src.dataset import find_pairs
from cocosnet.src.train_step import build_vgg_features

__all__ = ["descriptors", "top_k", "build_ref_list"]


def descriptors(vgg, paths, size, batch=8):
    """[N, D] L2-normalised pool5 features of the images ``paths`` (``vgg``: a VGGFeatures with taps pool5)."""
    out = []
    for i in range(0, len(paths), batch):
        imgs = [resize_photo(read_image(p), size, size) for p in paths[i:i + batch]]
        x = np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
        feat = vgg(Tensor(x))[0].asnumpy().reshape(len(imgs), -1).astype(np.float64)
        out.append(feat / (np.linalg.norm(feat, axis=1, keepdims=True) + 1e-12))
    return np.concatenate(out)


def top_k(queries, gallery, k, exclude=None):
    """Indices [N, k] of the ``k`` most cosine-similar gallery rows per query row, best first.

    ``exclude``: [N] gallery index to skip per query (the query itself), or None.
    """
    sim = queries @ gallery.T
    if exclude is not None:
        sim[np.arange(len(queries)), exclude] = -np.inf
    k = min(k, gallery.shape[0] - (exclude is not None))
    if k < 1:
        raise ValueError("reference retrieval needs at least 2 training images (one besides the query)")
    order = np.argsort(-sim, axis=1, kind="stable")
    return order[:, :k]


def build_ref_list(root, data_format, split, out, *, k=10, size=224, vgg_path="", log=print):
    """Write the reference list of ``split`` (``train`` or ``val``) of a dataset to ``out``; returns ``out``.

    ``vgg_path``: a VGG19 (``vgg19_conv.pth`` or what ``common.weights`` reads); empty: the cached
    ImageNet VGG16 (``scripts/get_pretrained.sh``).
    """
    if size % 32:
        raise ValueError(f"retrieval_size={size} must be a multiple of 32 (VGG pool5)")
    train = find_pairs(root, data_format, "train")
    keys = train if split == "train" else find_pairs(root, data_format, split)
    vgg = build_vgg_features(vgg_path, log, taps=("pool5",), retrieval=True)
    vgg.set_train(False)
    names = {s: os.path.basename(p) for s, (p, _) in list(train.items()) + list(keys.items())}
    gallery_stems = list(train)
    log(f"build_ref_list: {len(keys)} {split} keys against {len(train)} training images, pool5 at {size}x{size}")
    gallery = descriptors(vgg, [train[s][0] for s in gallery_stems], size)
    if split == "train":
        queries, exclude = gallery, np.arange(len(gallery_stems))
    else:
        queries, exclude = descriptors(vgg, [keys[s][0] for s in keys], size), None
    best = top_k(queries, gallery, k, exclude)
    with atomic_file(out) as tmp:
        with open(tmp, "w") as f:
            for stem, row in zip(keys, best):
                f.write(",".join([names[stem]] + [names[gallery_stems[j]] for j in row]) + "\n")
    log(f"build_ref_list: wrote {len(keys)} lines of {best.shape[1]} exemplars to {out}")
    return out
