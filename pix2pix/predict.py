"""Translate input images with a trained generator: ``python pix2pix/predict.py --input=IMG_OR_DIR``.

Each input (e.g. a colour label map for labels->photo) of any size is resized (bicubic, as in training) to the
network's scale, ``image_size`` (default: the training crop size), and translated as ``--fit`` says: tile
(default: short side to image_size, aspect kept, overlapping tiles; a 301x199 input at 64 gives a 97x64 output),
pad or resize (squashed to a square). Outputs are at that scale, not the input's size, and go to
``<output_dir>/predict/<name>.png``; each resize is logged. A single-channel input is a class-id map painted in
the class table's colours (``--class_table``), else a grey picture (logged). The generator runs under
``eval_protocol``. The exported ONNX/MINDIR file has a fixed input shape [1, 3, S, S] (S = image_size at export):
``--backend=onnxruntime`` tiles any input into it; elsewhere feed exactly that shape, or export again with
``--image_size``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("pix2pix.src.spec.Pix2PixSpec", "predict")
