"""FID, KID and IS from one pass of the FID InceptionV3 over the generated and the real set.

Protocol: uint8 RGB -> [0, 1] -> bilinear resize to 299x299 (align_corners=False) -> [-1, 1]
(pytorch-fid); pool3 2048-d features for FID (float64 statistics) and KID (100 subsets of
min(1000, N)); 1008-way unbiased logits for IS (10 splits, set order). FID is only comparable
across papers with the pt_inception-2015-12-05 weights and the same real set and resolution.
"""
import numpy as np

from common.conv import use_inference_conv_impl
from common.metrics.frechet import (FeatureSet, frechet_distance, gaussian_statistics, inception_score,
                                    kernel_inception_distance)
from common.metrics.image import check_images
from common.metrics.inception import InceptionV3, load_inception, to_inception_input

__all__ = ["InceptionMetrics"]


class InceptionMetrics:
    """FID / KID / IS (state protocol of :mod:`common.metrics`).

    Args:
        weights: ``pt_inception-2015-12-05-6726825d.pth`` or a converted ``.ckpt``; ``None`` keeps the
            random initialisation (timing and plumbing only: the numbers are then meaningless and the
            protocol says so).
        net: an existing ``InceptionV3(taps=("pool3", "logits_unbiased"))`` to share.
        conv_impl: the network's CPU convolution path, ``native`` or ``matmul``
            (:func:`common.conv.use_conv_impl`), normally the process's ``Runtime.conv_impl``.
    """

    def __init__(self, weights=None, net=None, kid_subsets=100, kid_subset_size=1000, is_splits=10,
                 conv_impl="native"):
        self.net = net or InceptionV3(taps=("pool3", "logits_unbiased"), layout="fid")
        if weights is not None:
            load_inception(self.net, weights)
        use_inference_conv_impl(self.net, conv_impl)
        self.net.set_train(False)
        self.kid_subsets, self.kid_subset_size, self.is_splits = kid_subsets, kid_subset_size, is_splits
        source = weights or "RANDOM-INIT weights (numbers meaningless)"
        prep = "uint8 RGB -> [0,1] -> bilinear 299x299 (align_corners=False) -> [-1,1]"
        self.protocol = {
            "fid": f"FID (pytorch-fid recipe, float64), InceptionV3 FID layout pool3 2048-d, {prep}; weights {source}",
            "kid": (f"KID (unbiased MMD^2, cubic polynomial kernel, {kid_subsets} subsets of "
                    f"min({kid_subset_size}, N)), pool3 2048-d, {prep}; weights {source}"),
            "is": f"IS, exp(E KL(p(y|x)||p(y))), 1008-way unbiased logits, {is_splits} splits in set order, "
                  f"generated images only, {prep}; weights {source}",
        }
        self.reset()

    def reset(self):
        self.fake, self.real, self.logits = FeatureSet("fid generated"), FeatureSet("fid real"), FeatureSet("is")

    def features(self, images):
        """[B, H, W, 3] uint8 -> (pool3 [B, 2048], logits_unbiased [B, 1008]) as NumPy."""
        pool3, logits = self.net(to_inception_input(images))
        return pool3.asnumpy(), logits.asnumpy()

    def update(self, fake, real):
        """Generated and real batches; sizes may differ between the two sets (both are resized)."""
        for arr, side in ((fake, "generated"), (real, "real")):
            check_images(arr, arr, f"fid {side}")
        fake, real = np.asarray(fake), np.asarray(real)
        fake, real = (fake[None], real[None]) if fake.ndim == 3 else (fake, real)
        pool3, logits = self.features(fake)
        self.fake.update(pool3)
        self.logits.update(logits)
        self.real.update(self.features(real)[0])

    def compute(self):
        fake, real = self.fake.array(), self.real.array()
        mu1, s1 = gaussian_statistics(fake, "fid generated")
        mu2, s2 = gaussian_statistics(real, "fid real")
        kid, kid_std, _ = kernel_inception_distance(fake, real, self.kid_subsets, self.kid_subset_size)
        splits = min(self.is_splits, len(fake))
        is_mean, is_std = inception_score(self.logits.array(), splits)
        return {"fid": frechet_distance(mu1, s1, mu2, s2), "kid": kid, "kid_std": kid_std,
                "is": is_mean, "is_std": is_std}
