"""Evaluate a pix2pix generator on the validation split: ``python pix2pix/eval.py [--ckpt=...]``.

Writes ``<output_dir>/eval/{real_A,fake_B,real_B}/<name>.png``, ``index.html`` (input | output | target)
and ``metrics.json``: L1, PSNR, SSIM, LPIPS (when its weights are cached), FID/KID/IS with
``--inception_path``, the FCN-score with ``--fcn_ckpt``; metrics that cannot run are listed as "not
computed" with the flag that enables them. The architecture comes from the checkpoint. Validation AB images of any
size are split in halves and each half resized (bicubic) to the training ``crop_size``, where every metric is
computed.

Test protocol (``--eval_protocol=paper``, default): as in the paper, G runs exactly as in training
(BatchNorm from the test batch's statistics, batch size 1, dropout on); ``--eval_protocol=eval`` uses
running statistics and no dropout.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("pix2pix.src.spec.Pix2PixSpec", "eval")
