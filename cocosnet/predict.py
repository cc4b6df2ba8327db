"""Translate label maps with an exemplar:

    python cocosnet/predict.py --input=LABEL.png|FOLDER --exemplar=PHOTO [--exemplar_label=LABEL.png]

Writes ``<output_dir>/predict/<name>.png`` (the output) and ``<name>_warped.png`` (the exemplar warped
onto the label map by the correspondence network).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.drivers import main  # noqa: E402
from cocosnet.src.spec import CoCosNetSpec  # noqa: E402

if __name__ == "__main__":
    main(CoCosNetSpec(), "predict")
