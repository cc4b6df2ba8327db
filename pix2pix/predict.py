"""Translate input images with a trained generator: ``python pix2pix/predict.py --input=IMG_OR_DIR``.

Each input (e.g. a colour label map for labels->photo) is resized (bicubic, as in training) to
``image_size`` (default: the training crop size) and translated; outputs go to
``<output_dir>/predict/<name>.png``. The generator runs under ``eval_protocol``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.drivers import main  # noqa: E402
from pix2pix.src.spec import Pix2PixSpec  # noqa: E402

if __name__ == "__main__":
    main(Pix2PixSpec(), "predict")
