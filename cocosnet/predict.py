"""Translate label maps with an exemplar:

    python cocosnet/predict.py --input=LABEL.png|FOLDER --exemplar=PHOTO [--exemplar_label=LABEL.png]

Writes ``<output_dir>/predict/<name>.png`` (the output) and ``<name>_warped.png`` (the exemplar warped
onto the label map by the correspondence network).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("cocosnet.src.spec.CoCosNetSpec", "predict")
