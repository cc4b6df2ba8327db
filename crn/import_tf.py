"""Import an official TensorFlow CRN model (CQFIO/PhotographicImageSynthesis) into a MindSpore checkpoint.

    python crn/import_tf.py --tf_ckpt=result_256p/model.ckpt [--ckpt=outputs/crn/imported/G.ckpt]

``tf_ckpt`` is the bundle prefix (``model.ckpt`` for ``model.ckpt.index`` + ``model.ckpt.data-00000-of-00001``);
TensorFlow is not needed (``common.tf_checkpoint``). Size, classes, k and channel width are read off the
variables (256p and GTA: 256x512, k = 9; 512p, 1024p: k = 1; all 19 classes + void); ``aspect`` (not in the
weights, 2 for all four) and ``width_mult`` (tried first) come from the config. The checkpoint goes to
``--ckpt`` (a ``.ckpt`` path; default ``<output_dir>/imported/G.ckpt``) with the architecture as metadata,
for ``eval.py``/``predict.py``/``export.py --ckpt=<it>``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)

from common.config import load_config  # noqa: E402
from common.drivers import imported_checkpoint_path, run_cli  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from crn.src.convert import import_tf_generator  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")


def main(argv=None):
    """Convert ``--tf_ckpt`` into a MindSpore G checkpoint; returns its path."""
    cfg = load_config(CONFIG, sys.argv[1:] if argv is None else argv)
    if not cfg.tf_ckpt:
        raise ValueError("no TF checkpoint given: pass --tf_ckpt=<dir>/model.ckpt (the prefix of model.ckpt.index)")
    out = imported_checkpoint_path(cfg, "import_tf.py")
    init_runtime(cfg.device_target, cfg.mode, cfg.seed)
    import_tf_generator(cfg.tf_ckpt, out, aspect=cfg.aspect, width_mult=cfg.width_mult)
    return out


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
