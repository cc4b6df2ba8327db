"""Evaluate a CoCosNet checkpoint on the validation pairs: ``python cocosnet/eval.py [--ckpt=...]``.

Writes ``<output_dir>/eval/{label,exemplar,warped,fake,real}/<name>.png``, ``index.html`` and
``metrics.json``: PSNR, SSIM (and LPIPS, FID/KID/IS with their weights) of output vs target, plus the
style figure (per-class palette distance of the output to the exemplar and to the target).
The architecture comes from the checkpoint. Validation label maps and exemplars of any size are resized to the
network's size x size; ``--eval_size=original`` (default) scores each output resized back to its photo's own
size, ``--eval_size=network`` at size x size.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("cocosnet.src.spec.CoCosNetSpec", "eval")
