"""Export a trained CRN generator to MINDIR and/or ONNX and prove the files reproduce it.

    python crn/export.py --ckpt=outputs/crn/ckpt [--export_format=ONNX] [--size=256 ...]

Input ``label`` [1, num_classes + 1, size, aspect*size] float32 (one-hot + void, see crn/src/dataset.py);
output ``images`` [1, k, 3, size, aspect*size] float32 in 0..1 units (the generator's 0..255 divided by 255,
not clipped: clip before saving). Files go to <output_dir>/export/crn_<size>p.{mindir,onnx}; the ONNX file
is checked against MindSpore with onnxruntime (max |diff| <= 1e-4 in those 0..1 units), the MINDIR file by
reloading it. The bilinear upsamplings are exported in their gather form (same values, see
crn/src/model.py:BilinearUpsample).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)
from mindspore import Tensor, nn  # noqa: E402

from common.config import load_config  # noqa: E402
from common.export import (check_mindir_parity, check_onnx_parity, export_mindir, export_onnx,  # noqa: E402
                           prepare_for_export)
from common.runtime import init_runtime  # noqa: E402
from crn.src.dataset import encode_label  # noqa: E402
from crn.src.utils import load_generator  # noqa: E402

class ExportedCRN(nn.Cell):
    """The generator with its output in 0..1 units: label [1, P, H, W] -> images [1, k, 3, H, W]."""

    def __init__(self, generator):
        super().__init__(auto_prefix=False)
        self.generator = generator

    def construct(self, label):
        return self.generator(label) / 255.0


CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")
ONNX_ATOL = 1e-4


def example_label(num_classes, height, width, seed=0):
    """A blocky random label map, one-hot encoded: [1, num_classes + 1, H, W] (parity-check input)."""
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, num_classes + 1, (max(height // 8, 1), max(width // 8, 1)))
    ids = np.kron(coarse, np.ones((8, 8), np.int64))[:height, :width]
    return encode_label(np.where(ids == num_classes, 255, ids), num_classes)[None]


def main(argv=None):
    """Export; returns {format: (path, max |diff|)}."""
    cfg = load_config(CONFIG, sys.argv[1:] if argv is None else argv)
    init_runtime(cfg.device_target, cfg.mode, cfg.seed)
    generator, ckpt = load_generator(cfg, cfg.num_classes + 1)
    net = prepare_for_export(ExportedCRN(generator.prepare_export()))
    label = Tensor(example_label(cfg.num_classes, cfg.size, cfg.aspect * cfg.size))
    stem = os.path.join(cfg.output_dir, "export", f"crn_{cfg.size}p")
    done = {}
    if cfg.export_format in ("MINDIR", "ALL"):
        path = export_mindir(net, label, stem + ".mindir")
        done["MINDIR"] = (path, check_mindir_parity(net, label, path))
    if cfg.export_format in ("ONNX", "ALL"):
        path = stem + ".onnx"
        export_onnx(net, label, path, input_names=("label",), output_names=("images",))
        done["ONNX"] = (path, check_onnx_parity(net, label, path, atol=ONNX_ATOL))
    for fmt, (path, diff) in done.items():
        print(f"{fmt}: {path} from {ckpt}, max |diff| vs MindSpore = {diff:.3g}")
    return done


if __name__ == "__main__":
    main()
