"""Pixel metrics: PSNR and SSIM between generated and real images.

Protocol (both): uint8 RGB at the real image's resolution (no resize: sizes must match), value range
0..255 (``data_range=255``), computed per image and averaged over the set. SSIM follows Wang et al.
2004 exactly as ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255, channel_axis=-1)``: 11-tap Gaussian window (truncate 3.5),
K1=0.01, K2=0.03, reflect padding, 5-pixel border cropped, mean over pixels then over channels.
"""
import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["check_images", "psnr", "ssim", "PairMean", "PSNR", "SSIM"]

DATA_RANGE = 255.0


def check_images(fake, real, what="image pair"):
    """Validate an [..., H, W, 3] pair: uint8 (or integer-valued floats in 0..255) and equal shapes."""
    fake, real = np.asarray(fake), np.asarray(real)
    for arr, side in ((fake, "generated"), (real, "real")):
        if arr.ndim < 3 or arr.shape[-1] != 3:
            raise ValueError(f"{what}: {side} image has shape {arr.shape}; expected [..., H, W, 3] RGB")
        if arr.dtype != np.uint8:
            lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
            if lo < 0 or hi > 255 or (hi <= 1.0 and arr.dtype.kind == "f"):
                raise ValueError(f"{what}: {side} image has dtype {arr.dtype} and values in [{lo:.3g}, {hi:.3g}]; "
                                 f"expected uint8 0..255 (convert [-1, 1] outputs with common.io.tensor_to_uint8)")
    if fake.shape != real.shape:
        raise ValueError(f"{what}: generated image has shape {fake.shape}, real image {real.shape}; "
                         f"resize the generated image to the real image's size first (state the filter)")
    return fake, real


def psnr(fake, real):
    """PSNR in dB of one [H, W, 3] pair: 10 log10(255^2 / MSE); inf for identical images."""
    fake, real = check_images(fake, real)
    mse = np.mean((fake.astype(np.float64) - real.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(DATA_RANGE ** 2 / mse))


def ssim(fake, real, sigma=1.5, k1=0.01, k2=0.03):
    """SSIM of one [H, W, 3] pair (Gaussian window; see module docstring)."""
    fake, real = check_images(fake, real)
    radius = int(3.5 * sigma + 0.5)
    if min(fake.shape[:2]) < 2 * radius + 1:
        raise ValueError(f"SSIM needs images of at least {2 * radius + 1}x{2 * radius + 1}; got {fake.shape[:2]}")
    c1, c2 = (k1 * DATA_RANGE) ** 2, (k2 * DATA_RANGE) ** 2
    scores = []
    for c in range(3):
        x, y = fake[..., c].astype(np.float64), real[..., c].astype(np.float64)
        blur = lambda a: gaussian_filter(a, sigma, truncate=3.5, mode="reflect")  # noqa: E731
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        scores.append(s[radius:-radius, radius:-radius].mean())
    return float(np.mean(scores))


class PairMean:
    """Mean of a per-pair score over the set; subclasses define ``name``, ``protocol`` and ``scores``."""
    name, protocol = None, None

    def __init__(self):
        self.reset()

    def reset(self):
        self.values = []

    def scores(self, fake, real):
        """[B, H, W, 3] uint8 pairs -> B scores."""
        raise NotImplementedError

    def update(self, fake, real):
        """fake, real: [B, H, W, 3] or [H, W, 3] uint8."""
        fake, real = check_images(fake, real, self.name)
        if fake.ndim == 3:
            fake, real = fake[None], real[None]
        self.values += [float(v) for v in self.scores(fake, real)]

    def compute(self):
        if not self.values:
            raise ValueError(f"{self.name}: no images were evaluated (empty set)")
        return {self.name: float(np.mean(self.values))}


class PSNR(PairMean):
    name = "psnr"
    protocol = "PSNR dB, uint8 RGB 0..255 at the real image size (no resize), data_range 255, mean over images"


    def scores(self, fake, real):
        return [psnr(f, r) for f, r in zip(fake, real)]


class SSIM(PairMean):
    name = "ssim"
    protocol = ("SSIM (Wang et al.), uint8 RGB 0..255 at the real image size (no resize), Gaussian 11x11 "
                "sigma 1.5, K1 0.01, K2 0.03, data_range 255, channel mean, mean over images "
                "(= skimage gaussian_weights=True, use_sample_covariance=False)")

    def scores(self, fake, real):
        return [ssim(f, r) for f, r in zip(fake, real)]
