"""Export a trained pix2pix generator to MINDIR and/or ONNX and prove the files reproduce it.

    python pix2pix/export.py [--ckpt=outputs/pix2pix/ckpt] [--export_format=ONNX] [--export_norm=running_stats]

Input ``input`` [1, input_nc, S, S] float32 in [-1, 1], S = ``image_size`` (default: the training crop
size); output ``output`` [1, output_nc, S, S] in [-1, 1]. Files go to
``<output_dir>/export/<file_name>_<export_norm>.{mindir,onnx}`` with a ``.json`` note beside them.
``export_norm``: ``batch_stats`` (default, the paper's test protocol as explicit mean/var ops) or
``running_stats`` (ONNX BatchNormalization with the moving statistics). Dropout is off. The ONNX file is
checked against MindSpore with onnxruntime (max |diff| <= 1e-4), the MINDIR file by reloading it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("pix2pix.src.spec.Pix2PixSpec", "export")
