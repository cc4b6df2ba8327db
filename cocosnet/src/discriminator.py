"""CoCosNet discriminator: two PatchGANs (the reference ``MultiscaleDiscriminator`` of ``NLayerDiscriminator``s),
spectral norm + instance norm, self-attention before the last stride-1 layer.

The reference also registers a segmentation decoder (``dec``) per scale that its forward never calls;
it is left out (430,711 parameters per scale at full width).

At 256x256, ``ndf=64``, input [label one-hot, RGB] = 154 channels::

    model0: conv 4x4/2 154->64 (bias) + LReLU          -> [B,64,128,128]
    model1: SN conv 4x4/2 64->128 + IN + LReLU         -> [B,128,64,64]
    model2: SN conv 4x4/2 128->256 + IN + LReLU        -> [B,256,32,32]
    attn (256) then model3: SN conv 4x4/1 256->512 + IN + LReLU -> [B,512,31,31]
    model4: conv 4x4/1 512->1 (bias)                   -> [B,1,30,30]

Scale 2 sees the input average-pooled (3x3, stride 2, pad 1, padding excluded from the mean): 14x14 patches.
"""
from mindspore import nn

from common.layers import InstanceNorm2d, LeakyReLU
from cocosnet.src.blocks import Attention, conv2d, sn_conv2d

__all__ = ["NLayerDiscriminator", "MultiscaleDiscriminator"]


class NLayerDiscriminator(nn.Cell):
    """One PatchGAN with ``n_layers`` 4x4 convs before the 1-channel output conv.

    ``grad_channels=(first, stop)``: the input channels that can carry a gradient (the image of a
    [label map, image] input; the first convolution computes only their input gradient), ``None``: all.

    Shapes: [B, input_nc, H, W] -> tuple of the ``n_layers + 1`` layer outputs (all used by the
    feature-matching loss; the last, [B, 1, H', W'], is the patch score).
    """

    def __init__(self, input_nc, ndf=64, n_layers=4, attention=True, *, grad_channels=None):
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"n_layers={n_layers} must be at least 2 (4 in the reference)")
        self.n_layers = n_layers
        layers = [nn.SequentialCell([conv2d(input_nc, ndf, 4, 2, 1, grad_channels=grad_channels), LeakyReLU(0.2)])]
        nf = ndf
        self.use_attention = attention
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 8 * ndf)
            stride = 1 if n == n_layers - 1 else 2
            if attention and n == n_layers - 1:
                self.attn = Attention(nf_prev)
            layers.append(nn.SequentialCell([sn_conv2d(nf_prev, nf, 4, stride, 1, bias=False), InstanceNorm2d(nf),
                                             LeakyReLU(0.2)]))
        layers.append(nn.SequentialCell([conv2d(nf, 1, 4, 1, 1)]))
        for i, layer in enumerate(layers):
            setattr(self, f"model{i}", layer)
        self.models = layers

    def construct(self, x):
        outs = ()
        for i, layer in enumerate(self.models):
            if self.use_attention and i == self.n_layers - 1:
                x = self.attn(x)
            x = layer(x)
            outs += (x,)
        return outs


class MultiscaleDiscriminator(nn.Cell):
    """``num_D`` PatchGANs, each on the input average-pooled once more than the previous one.

    Args:
        input_nc: channels of [label one-hot, image] (154 for ADE20K).
        ndf, n_layers, num_D: 64, 4, 2 in the reference.
        grad_channels: ``(first, stop)``, the input channels that can carry a gradient (see
            :class:`NLayerDiscriminator`); ``None``: all.

    Shapes: [B, input_nc, H, W] -> tuple over scales of tuples of layer outputs.
    """

    def __init__(self, input_nc=154, ndf=64, n_layers=4, num_D=2, attention=True, *, grad_channels=None):
        super().__init__()
        nets = [NLayerDiscriminator(input_nc, ndf, n_layers, attention, grad_channels=grad_channels)
                for _ in range(num_D)]
        for i, net in enumerate(nets):
            setattr(self, f"discriminator_{i}", net)
        self.nets = nets
        self.downsample = nn.AvgPool2d(3, 2, pad_mode="pad", padding=1, count_include_pad=False)

    def construct(self, x):
        results = ()
        for i, net in enumerate(self.nets):
            if i > 0:
                x = self.downsample(x)
            results += (net(x),)
        return results
