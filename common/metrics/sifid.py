"""SIFID (Shaham et al., SinGAN 2019): single-image FID between the feature maps of one generated and one
real image.

Protocol: uint8 RGB -> [0, 1] -> [-1, 1] at the image's own resolution (no resize); ImageNet
InceptionV3 (torchvision layout, as SinGAN) cut at ``layer``: ``conv2b`` (64 ch, before the first max
pool; OSMIS default), ``conv4a`` (192 ch, before the second; SinGAN CLI default), ``mixed6e`` (768);
every spatial position is a sample; float64 Fréchet distance per (generated, real) pair; mean over pairs.
The feature map must have more positions than channels for a full-rank covariance.
"""
import numpy as np

from common.metrics.frechet import frechet_distance, gaussian_statistics
from common.metrics.image import PairMean
from common.metrics.inception import INCEPTION_TAPS, InceptionV3, load_inception, to_inception_input

__all__ = ["SIFID", "sifid_from_features"]


def sifid_from_features(fake, real):
    """Fréchet distance between [C, h, w] feature maps, each spatial position a sample."""
    a, b = (np.asarray(f, np.float64).reshape(f.shape[0], -1).T for f in (fake, real))
    return frechet_distance(*gaussian_statistics(a, "sifid generated"), *gaussian_statistics(b, "sifid real"))


class SIFID(PairMean):
    """Mean SIFID over (generated, real) pairs (state protocol of :mod:`common.metrics`)."""

    def __init__(self, weights=None, layer="conv4a", layout="torchvision", net=None):
        if layer not in INCEPTION_TAPS or layer == "pool3":
            raise ValueError(f"SIFID layer={layer!r}; choose conv2b (64), conv4a (192) or mixed6e (768)")
        self.net = net or InceptionV3(taps=(layer,), layout=layout, resize=False)
        if weights is not None:
            load_inception(self.net, weights)
        self.net.set_train(False)
        self.layer, self.name = layer, f"sifid_{INCEPTION_TAPS[layer]}"
        self.protocol = (f"SIFID at InceptionV3 {layer} ({INCEPTION_TAPS[layer]} ch), {layout} layout, uint8 RGB -> "
                         f"[-1,1] at the image size (no resize), spatial positions as samples, float64 Fréchet "
                         f"distance per pair, mean over pairs; weights {weights or 'RANDOM-INIT (numbers meaningless)'}")
        super().__init__()

    def scores(self, fake, real):
        f_fake = self.net(to_inception_input(fake))[0].asnumpy()
        f_real = self.net(to_inception_input(real))[0].asnumpy()
        return [sifid_from_features(a, b) for a, b in zip(f_fake, f_real)]
