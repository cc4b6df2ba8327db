"""Eval OSMIS / SIV-GAN (``--help`` lists the keys); see osmis/README.md.

Generates num_generated samples at the checkpoint's train_size (HxW) and compares them with the training frames
of --dataroot (empty: the data the checkpoint was trained on), each resized (bilinear; masks nearest) to that
train_size, whatever its own size.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("osmis.src.spec.OSMISSpec", "eval")
