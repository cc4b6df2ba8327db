"""VGG16/VGG19 feature extractors with named taps (``conv3_2``, ``relu4_2``, ``pool5`` ...).

Used by the perceptual losses (CRN, CoCosNet) and by the scorers (LPIPS, FCN-8s). The network only
holds the convolutional trunk; weights are loaded by layer name with :mod:`common.weights`.

Input preprocessing is the caller's: the MatConvNet/Caffe VGG19 wants RGB in 0..255 minus the
ImageNet mean, torchvision-derived weights want (x/255 - mean) / std.
"""
from mindspore import nn

from common.conv import Conv2d, use_conv_impl

__all__ = ["VGG_CONFIGS", "vgg_layer_names", "vgg_conv_names", "VGG"]

VGG_CONFIGS = {
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
_CHANNELS = (64, 128, 256, 512, 512)


def vgg_layer_names(arch):
    """All layer names of the trunk in order: conv1_1, relu1_1, ..., pool5."""
    if arch not in VGG_CONFIGS:
        raise ValueError(f"arch={arch!r}; choose one of {sorted(VGG_CONFIGS)}")
    names = []
    for block, n in enumerate(VGG_CONFIGS[arch], start=1):
        for i in range(1, n + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def vgg_conv_names(arch):
    """The conv layer names in order: conv1_1 ... conv5_3 (vgg16) or conv5_4 (vgg19)."""
    return [n for n in vgg_layer_names(arch) if n.startswith("conv")]


class VGG(nn.Cell):
    """VGG trunk returning the activations at ``taps`` (a tuple, in the order given).

    Args:
        arch: ``vgg16`` or ``vgg19``.
        taps: layer names to return, e.g. ``("relu1_2", "relu2_2", "relu3_3")``; the trunk is cut
            after the deepest tap.
        pool: ``max`` (ImageNet classifier) or ``avg`` (CRN and style-transfer losses).
        requires_grad: False freezes the weights (a loss network).
        conv_impl: ``native`` or ``matmul``: the CPU convolution path (:func:`common.conv.use_conv_impl`),
            normally the process's ``Runtime.conv_impl``.

    Shapes: [B, 3, H, W] -> tuple of [B, C_tap, H/2^k, W/2^k].
    """

    def __init__(self, arch="vgg19", taps=("relu5_4",), pool="max", requires_grad=False, conv_impl="native"):
        super().__init__()
        names = vgg_layer_names(arch)
        unknown = [t for t in taps if t not in names]
        if unknown:
            raise ValueError(f"unknown {arch} taps {unknown}; valid names: {names}")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool={pool!r}; choose max or avg")
        self.arch, self.taps, self.pool = arch, tuple(taps), pool
        order = sorted(set(taps), key=names.index)
        self.tap_index = tuple(order.index(t) for t in taps)
        self.convs = {}
        stages, current, cin = [], [], 3
        for name in names[:names.index(order[-1]) + 1]:
            if name.startswith("conv"):
                block = int(name[4])
                conv = Conv2d(cin, _CHANNELS[block - 1], 3, 1, pad_mode="pad", padding=1, has_bias=True)
                self.convs[name] = conv
                current.append(conv)
                cin = _CHANNELS[block - 1]
            elif name.startswith("relu"):
                current.append(nn.ReLU())
            else:
                current.append(nn.MaxPool2d(2, 2) if pool == "max" else nn.AvgPool2d(2, 2))
            if name in order:
                stages.append(nn.SequentialCell(current))
                current = []
        self.stages = nn.CellList(stages)
        if not requires_grad:
            for p in self.get_parameters():
                p.requires_grad = False
        use_conv_impl(self, conv_impl)

    def conv_layers(self):
        """``{layer name: common.conv.Conv2d}`` of the layers this trunk holds, in order."""
        return dict(self.convs)

    def construct(self, x):
        feats = ()
        for stage in self.stages:
            x = stage(x)
            feats += (x,)
        out = ()
        for i in self.tap_index:
            out += (feats[i],)
        return out
