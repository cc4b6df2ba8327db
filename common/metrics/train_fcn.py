"""Train an FCN-8s scorer on any Cityscapes-style labelled dataset, for FCN-score on data the paper's
Caffe model never saw (the demo data, users' own data).

Data layout: ``<root>/leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png`` with
``<root>/gtFine/<split>/<city>/<frame>_gtFine_labelIds.png`` (matched by frame id). Images are resized
to ``--height`` x ``--width`` (bilinear; labels nearest), labelIds mapped to the 19 trainIds (255
ignored), softmax cross-entropy, Adam. The trunk starts from the real ImageNet VGG16 weights
(``pretrained_path("vgg16")``, scripts/get_pretrained.sh) when available.

Scores from a self-trained scorer are NOT comparable with the pix2pix paper's FCN-scores.

    python -m common.metrics.train_fcn --data ROOT --out outputs/fcn_scorer/fcn8s.ckpt [--epochs 20]
"""
import argparse
import json
import os

import cv2
import numpy as np
from tqdm import tqdm

import common  # noqa: F401
import mindspore as ms
from mindspore import nn, ops

from common import cityscapes as cs
from common.io import atomic_file, read_image, read_label
from common.metrics.fcn import FCN8s, init_fcn8s_from_vgg16, preprocess_bgr
from common.metrics.segmentation import match_by_name
from common.pretrained import pretrained_path
from common.runtime import set_seed

__all__ = ["load_training_set", "train_fcn8s", "main"]


def load_training_set(root, split, height, width):
    """-> (images [N, 3, H, W] float32 BGR minus mean, labels [N, H, W] int32 trainIds)."""
    pairs = match_by_name(os.path.join(root, "leftImg8bit", split), os.path.join(root, "gtFine", split))
    images, labels = [], []
    for _, img_path, lab_path in pairs:
        img = cv2.resize(read_image(img_path), (width, height), interpolation=cv2.INTER_LINEAR)
        lab = cv2.resize(read_label(lab_path), (width, height), interpolation=cv2.INTER_NEAREST)
        images.append(preprocess_bgr(img).asnumpy()[0])
        labels.append(cs.label_ids_to_train_ids(lab).astype(np.int32))
    return np.stack(images), np.stack(labels)


def train_fcn8s(net, images, labels, epochs=20, batch_size=4, lr=1e-4, seed=0, log=print):
    """Adam on softmax cross-entropy (ignore 255); returns the per-epoch mean losses."""
    set_seed(seed)
    optimizer = nn.Adam(net.trainable_params(), learning_rate=lr)

    def loss_fn(x, y):
        return ops.cross_entropy(net(x), y, ignore_index=cs.IGNORE)
    grad_fn = ms.value_and_grad(loss_fn, None, optimizer.parameters)
    rng = np.random.RandomState(seed)
    net.set_train(True)
    history = []
    for epoch in range(1, epochs + 1):
        order, losses = rng.permutation(len(images)), []
        for i in tqdm(range(0, len(order), batch_size), desc=f"fcn epoch {epoch}/{epochs}", unit="batch", leave=False):
            idx = order[i:i + batch_size]
            loss, grads = grad_fn(ms.Tensor(images[idx]), ms.Tensor(labels[idx]))
            optimizer(grads)
            losses.append(float(loss.asnumpy()))
        history.append(float(np.mean(losses)))
        log(f"fcn-scorer epoch {epoch}/{epochs} loss {history[-1]:.4f}")
    net.set_train(False)
    return history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="Cityscapes-style root (leftImg8bit/, gtFine/)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", required=True, help="output .ckpt (a .json with the protocol is written beside)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--vgg16", default=None, help="VGG16 weights (default: pretrained_path('vgg16'))")
    parser.add_argument("--tiny", action="store_true", help="narrow network for smoke tests (random init)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    set_seed(args.seed)
    if args.tiny:
        net, init = FCN8s(cs.NUM_CLASSES, channels=(8, 8, 16, 16, 16), fc=32), "random (tiny smoke-test net)"
    else:
        net = FCN8s(cs.NUM_CLASSES)
        source = args.vgg16 or pretrained_path("vgg16")
        init_fcn8s_from_vgg16(net, source)
        init = f"ImageNet VGG16 from {source}"
    images, labels = load_training_set(args.data, args.split, args.height, args.width)
    history = train_fcn8s(net, images, labels, args.epochs, args.batch_size, args.lr, args.seed)
    with atomic_file(args.out) as tmp:
        ms.save_checkpoint(net, tmp)
    card = {"network": "FCN-8s", "classes": list(cs.CLASS_NAMES), "trained_on": os.path.abspath(args.data),
            "split": args.split, "images": len(images), "size": [args.height, args.width], "init": init,
            "epochs": args.epochs, "final_loss": history[-1], "tiny": args.tiny,
            "note": "self-trained scorer: FCN-scores are not comparable with the pix2pix paper's"}
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(card, f, indent=1)
    print(f"wrote {args.out} (final loss {history[-1]:.4f})")


if __name__ == "__main__":
    main()
