"""Train a Cascaded Refinement Network (``--help`` lists the keys).

    python crn/train.py                                   # the built-in demo data, demo-sized model
    python crn/train.py --dataroot=/data/cityscapes --vgg_path=imagenet-vgg-verydeep-19.mat
    python crn/train.py --size=512 --n_epochs=20 --init_from=outputs/crn256/ckpt --output_dir=outputs/crn512

Writes <output_dir>/{train.log, losses.json, loss_curve.png, samples/epoch_NNNN.png, ckpt/}. Ctrl-C saves
a snapshot; ``--resume=true`` continues from it. A configuration that would not fit in memory is refused
before anything is written.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("crn.src.spec.CRNSpec", "train")
