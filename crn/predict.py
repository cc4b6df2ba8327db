"""Synthesise k images for each label map: ``python crn/predict.py --input=labels/ [--label_format=trainIds]``.

Labels are read according to ``label_format``; a map with the model's aspect ratio but another size is
resized (nearest, logged); any other size is an error. Writes <output_dir>/predict/<name>_k<i>.png and
<name>_grid.png.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("crn.src.spec.CRNSpec", "predict")
