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

from common.drivers import import_checkpoint, parse, run_cli  # noqa: E402
from crn.src.convert import import_tf_generator  # noqa: E402
from crn.src.spec import CRNSpec  # noqa: E402


def convert(cfg, source, out):
    import_tf_generator(source, out, aspect=cfg.aspect, width_mult=cfg.width_mult)


def main(argv=None):
    """Convert ``--tf_ckpt`` into a MindSpore G checkpoint; returns its path."""
    cfg = parse(CRNSpec(), sys.argv[1:] if argv is None else argv)
    return import_checkpoint(cfg, "tf_ckpt", "import_tf.py", convert)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:], usage=__doc__)
