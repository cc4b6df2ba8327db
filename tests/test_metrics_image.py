"""PSNR/SSIM against skimage.metrics; Fréchet distance, KID and IS against direct formulas."""
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from common.metrics import (PSNR, SSIM, FeatureSet, frechet_distance, gaussian_statistics, inception_score,
                            kernel_inception_distance)

RNG = np.random.RandomState(0)


def _pair(h=48, w=40):
    real = RNG.randint(0, 256, (h, w, 3)).astype(np.uint8)
    fake = np.clip(real.astype(int) + RNG.randint(-40, 41, real.shape), 0, 255).astype(np.uint8)
    return fake, real


def test_psnr_ssim_equal_skimage():
    pairs = [_pair() for _ in range(3)]
    p, s = PSNR(), SSIM()
    p.update(np.stack([f for f, _ in pairs]), np.stack([r for _, r in pairs]))
    for f, r in pairs:
        s.update(f, r)
    ref_p = np.mean([peak_signal_noise_ratio(r, f, data_range=255) for f, r in pairs])
    ref_s = np.mean([structural_similarity(r, f, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           data_range=255, channel_axis=-1) for f, r in pairs])
    assert abs(p.compute()["psnr"] - ref_p) <= 1e-4
    assert abs(s.compute()["ssim"] - ref_s) <= 1e-4
    assert 0.0 < ref_s < 0.99  # the pairs differ: the comparison is not between trivial values


def test_image_metric_bad_input():
    f, r = _pair()
    with pytest.raises(ValueError, match=r"shape \(48, 40, 3\).*\(40, 48, 3\).*resize"):
        PSNR().update(f, r.transpose(1, 0, 2))
    with pytest.raises(ValueError, match=r"values in \[-1, 1\].*tensor_to_uint8"):
        SSIM().update(f.astype(np.float32) / 127.5 - 1, r)
    with pytest.raises(ValueError, match="empty set"):
        PSNR().compute()
    with pytest.raises(ValueError, match="at least 11x11"):
        SSIM().update(f[:8, :8], r[:8, :8])


def test_frechet_distance_matches_eigen_formula():
    a, b = RNG.randn(200, 16), RNG.randn(300, 16) * 1.3 + 0.2
    mu1, s1 = gaussian_statistics(a)
    mu2, s2 = gaussian_statistics(b)
    # independent: Tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))), symmetric PSD, float64
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(w)) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same feature layer"):
        frechet_distance(mu1, s1, mu2[:8], s2[:8, :8])
    with pytest.raises(ValueError, match="at least 2 samples"):
        gaussian_statistics(a[:1])
    with pytest.raises(ValueError, match="empty set"):
        FeatureSet("fid").array()


def test_frechet_rank_deficient_eigh_equals_pytorch_fid_sqrtm():
    a, b = RNG.randn(20, 48), RNG.randn(25, 48) * 0.7 + 0.1  # fewer samples than dimensions, as 500 vs 2048
    stats = gaussian_statistics(a) + gaussian_statistics(b)
    assert frechet_distance(*stats) == pytest.approx(frechet_distance(*stats, method="sqrtm"), rel=1e-6)


def test_kid_matches_direct_double_sum():
    x, y = RNG.randn(12, 5), RNG.randn(10, 5) + 0.5
    mean, std, size = kernel_inception_distance(x, y, subsets=1, subset_size=1000)
    assert size == 10
    rng = np.random.RandomState(0)
    xs, ys = x[rng.choice(12, 10, replace=False)], y[rng.choice(10, 10, replace=False)]
    k = lambda a, b: (a @ b / 5 + 1) ** 3  # noqa: E731
    m = 10
    xx = sum(k(xs[i], xs[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(xs[i], ys[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert std == 0.0


def test_inception_score_direct_formula():
    logits = RNG.randn(40, 7) * 3
    mean, std = inception_score(logits, splits=10)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = []
    for k in range(10):
        part = p[4 * k:4 * k + 4]
        py = part.mean(0)
        ref.append(np.exp(np.mean([np.sum(q * np.log(q / py)) for q in part])))
    assert mean == pytest.approx(np.mean(ref), rel=1e-10) and std == pytest.approx(np.std(ref), rel=1e-9)
    assert inception_score(np.zeros((20, 7)), splits=10)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="N >= splits"):
        inception_score(logits[:5])
