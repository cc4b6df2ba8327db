"""Translate label maps with an exemplar:

    python cocosnet/predict.py --input=LABEL.png|FOLDER --exemplar=PHOTO [--exemplar_label=LABEL.png]

Writes ``<output_dir>/predict/<name>.png`` (the output) and ``<name>_warped.png`` (the exemplar warped
onto the label map by the correspondence network), both size x size: every input (label map, exemplar, exemplar
label map) of another size is resized to the square the networks were trained at (labels nearest, the
exemplar bicubic), so a non-square input is squashed (its aspect ratio is not kept); each resize is logged.
Label maps are PNG class ids (a JPEG label map is an error, its ids are lossy; a palette PNG gives its
indices). The size is the checkpoint's: the correspondence attends over (size/4)^2 positions, so another size
needs a model trained at it, and the exported ONNX/MINDIR files have the fixed shapes of that size.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("cocosnet.src.spec.CoCosNetSpec", "predict")
