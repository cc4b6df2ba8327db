"""Evaluate a trained CRN on the validation split (architecture read from the checkpoint).

    python crn/eval.py [--ckpt=outputs/crn/ckpt] [--inception_path=...] [--fcn_ckpt=... --fcn_label_dir=...]

Writes <output_dir>/eval/: images/<name>_k<i>.png (all k outputs), fake/ and real/ (output 0 and the photo,
which the image metrics score), grids/, index.html and metrics.json: PSNR, SSIM, LPIPS (output 0 vs the
photo), the LPIPS diversity over the k outputs, FID/KID/IS with --inception_path, the FCN-score of output 0
with --fcn_ckpt. Validation photos (area) and label maps (nearest) of any size are resized to the model's
size x aspect*size, where every metric is computed.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("crn.src.spec.CRNSpec", "eval")
