"""Export a trained pix2pix generator to MINDIR and/or ONNX and prove the files reproduce it.

    python pix2pix/export.py [--ckpt=outputs/pix2pix/ckpt] [--export_format=ONNX] [--export_norm=running_stats]

Input ``input`` [1, input_nc, image_size, image_size] float32 in [-1, 1]; output ``output``
[1, output_nc, image_size, image_size] in [-1, 1]. Files go to
``<output_dir>/export/<file_name>_<export_norm>.{mindir,onnx}`` with ``<file_name>_<export_norm>.json``
beside them, which records the normalisation the graph holds:

* ``batch_stats`` (default): BN normalises with the statistics of the input batch, the pix2pix paper's
  test protocol (batch size 1: instance normalisation with BN's gamma/beta), as explicit mean/var ops;
* ``running_stats``: BN uses the moving mean/variance (PyTorch ``--eval``), ONNX ``BatchNormalization``.

Dropout is off in both (the paper keeps it on at test; a static graph has no random stream). The ONNX
file is checked against MindSpore with onnxruntime (max |diff| <= 1e-4), the MINDIR file by reloading it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json  # noqa: E402

import numpy as np  # noqa: E402

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)
from mindspore import Tensor  # noqa: E402

from common.config import load_config  # noqa: E402
from common.export import (ExportError, check_mindir_parity, check_onnx_parity, export_mindir,  # noqa: E402
                           export_onnx, prepare_for_export)
from common.io import atomic_file  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from pix2pix.src.utils import load_generator  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")
ONNX_ATOL = 1e-4
NORM_NOTES = {
    "batch_stats": "BatchNorm from the statistics of the input batch (pix2pix test protocol; batch 1 = instance "
                   "norm with BN's gamma/beta), written as explicit mean/variance ops",
    "running_stats": "BatchNorm from the moving mean/variance learnt in training (PyTorch --eval)",
}


def main(argv=None):
    """Export; returns {format: (path, max |diff| vs MindSpore)}."""
    cfg = load_config(CONFIG, sys.argv[1:] if argv is None else argv)
    init_runtime(cfg.device_target, cfg.mode, cfg.seed, cpu_conv="native")
    net, ckpt = load_generator(cfg, cfg.image_size)
    prepare_for_export(net, cfg.export_norm)
    rng = np.random.default_rng(0)
    x = Tensor(rng.uniform(-1, 1, (1, cfg.input_nc, cfg.image_size, cfg.image_size)).astype(np.float32))
    stem = os.path.join(cfg.output_dir, "export", f"{cfg.file_name}_{cfg.export_norm}")

    done, written = {}, []
    try:
        if cfg.export_format in ("MINDIR", "ALL"):
            written.append(export_mindir(net, x, stem + ".mindir"))
            done["MINDIR"] = (written[-1], check_mindir_parity(net, x, written[-1]))
        if cfg.export_format in ("ONNX", "ALL"):
            written.append(stem + ".onnx")
            export_onnx(net, x, written[-1], ["input"], ["output"])
            done["ONNX"] = (written[-1], check_onnx_parity(net, x, written[-1], atol=ONNX_ATOL))
    except ExportError:
        for path in written:  # a file that does not reproduce the network must not be left for use
            if os.path.exists(path):
                os.remove(path)
        raise

    shape = [1, cfg.input_nc, cfg.image_size, cfg.image_size]
    note = {"model": "pix2pix", "netG": cfg.netG, "ngf": cfg.ngf, "norm": cfg.norm, "checkpoint": ckpt,
            "export_norm": cfg.export_norm, "normalisation": NORM_NOTES[cfg.export_norm], "dropout": "off",
            "input": {"name": "input", "shape": shape, "dtype": "float32", "range": [-1, 1]},
            "output": {"name": "output", "shape": [1, cfg.output_nc] + shape[2:], "dtype": "float32",
                       "range": [-1, 1]},
            "files": {fmt: {"path": os.path.basename(p), "max_abs_diff_vs_mindspore": d}
                      for fmt, (p, d) in done.items()}}
    with atomic_file(stem + ".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(note, f, indent=1)
    for fmt, (path, diff) in done.items():
        print(f"{fmt}: {path} ({cfg.export_norm}) from {ckpt}, max |diff| vs MindSpore = {diff:.3g}")
    return done


if __name__ == "__main__":
    main()
