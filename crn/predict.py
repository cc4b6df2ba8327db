"""Synthesise k images for each label map: ``python crn/predict.py --input=labels/ [--label_format=trainIds]``.

Labels are read according to ``label_format`` (PNG: a JPEG label map is an error, its ids are lossy; a palette
PNG gives its indices as ids). A map with the model's aspect ratio but another size is resized (nearest,
logged) to size x aspect*size, the size of the outputs; any other aspect ratio is an error naming the fix.
Writes <output_dir>/predict/<name>_k<i>.png and <name>_grid.png. The exported ONNX/MINDIR file has a fixed
input shape [1, num_classes + 1, size, aspect*size] (the checkpoint's: a CRN has one module per resolution, so
another size needs a model trained at it).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("crn.src.spec.CRNSpec", "predict")
