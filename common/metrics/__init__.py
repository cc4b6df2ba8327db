"""Evaluation metrics, each with one documented protocol (see ``common/METRICS.md``).

Every metric object follows the same state protocol::

    metric.reset(); metric.update(...) per batch; metric.compute() -> {name: float}; metric.protocol -> str

Image inputs are [B, H, W, 3] (or [H, W, 3]) uint8 RGB arrays as returned by ``common.io.read_image``.
Folders, metric selection and ``metrics.json``: :mod:`common.metrics.evaluate`; scoring two folders from the
shell: ``python -m common.metrics --fake DIR --real DIR`` (:mod:`common.metrics.__main__`).
"""
from common.metrics.image import PSNR, SSIM, psnr, ssim, check_images
from common.metrics.frechet import (FeatureSet, frechet_distance, gaussian_statistics, inception_score,
                                    kernel_inception_distance)
from common.metrics.segmentation import ConfusionMatrix, match_by_name

__all__ = ["PSNR", "SSIM", "psnr", "ssim", "check_images", "FeatureSet", "frechet_distance",
           "gaussian_statistics", "inception_score", "kernel_inception_distance", "ConfusionMatrix",
           "match_by_name"]
