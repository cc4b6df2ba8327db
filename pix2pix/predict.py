"""Translate input images with a trained generator: ``python pix2pix/predict.py --input=IMG_OR_DIR``.

Each input (e.g. a colour label map for labels->photo) is resized (bicubic, as in training) to
``image_size`` (default: the training crop size) and translated; outputs go to
``<output_dir>/predict/<name>.png``. The generator runs under ``eval_protocol``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("pix2pix.src.spec.Pix2PixSpec", "predict")
