"""pix2pix networks (Isola et al., CVPR 2017): U-Net and ResNet generators, PatchGAN discriminator.

Builders keyed by the reference names: ``define_G('unet_256' | 'unet_128' | 'resnet_9blocks' |
'resnet_6blocks')`` plus ``unet_64`` (6 levels, for 64-pixel demos and tests) and ``define_D('basic' | 'n_layers' | 'pixel')``. Conv biases follow the reference
exactly (no bias before a BatchNorm, bias elsewhere), so parameter counts match PyTorch:
unet_256 = 54,413,955; 70x70 PatchGAN on 6 channels = 2,768,705. Convolutions are ``common.conv``
cells: ``nn.Conv2d`` / ``nn.Conv2dTranspose`` that run as MatMuls on CPU after ``use_conv_impl(net, "matmul")``.
"""
from mindspore import nn, ops

from common.conv import Conv2d, ConvTranspose2d
from common.layers import CounterDropout, InstanceNorm2d, LeakyReLU, init_weights

__all__ = ["UnetGenerator", "UnetSkipConnectionBlock", "ResnetGenerator", "ResnetBlock",
           "PatchGANDiscriminator", "PixelDiscriminator", "define_G", "define_D", "get_norm_layer",
           "GENERATORS", "DISCRIMINATORS", "valid_sizes"]


def get_norm_layer(norm):
    """``'batch' | 'instance' | 'none'`` -> (factory(C) -> Cell, convs_need_bias)."""
    if norm == "batch":
        return (lambda c: nn.BatchNorm2d(c, momentum=0.9, eps=1e-5)), False
    if norm == "instance":
        return (lambda c: InstanceNorm2d(c, affine=False)), True
    if norm == "none":
        return (lambda c: nn.Identity()), True
    raise ValueError(f"norm={norm!r} is not supported; choose batch, instance or none")


def _conv(cin, cout, k, s, p, bias):
    return Conv2d(cin, cout, k, s, pad_mode="pad", padding=p, has_bias=bias)


def _deconv(cin, cout, k, s, p, bias, output_padding=0):
    """PyTorch ``ConvTranspose2d(cin, cout, k, s, p, output_padding)``.

    MindSpore's ``output_padding`` appends zeros after the convolution, whereas PyTorch computes
    those rows and columns; trimming ``output_padding`` less at the bottom/right gives PyTorch's result.
    """
    if output_padding:
        p = (p, p - output_padding, p, p - output_padding)
    return ConvTranspose2d(cin, cout, k, s, pad_mode="pad", padding=p, has_bias=bias)


class UnetSkipConnectionBlock(nn.Cell):
    """One U-Net level: down-conv, the inner levels, up-conv, then concat with the input.

    [B, outer, H, W] -> [B, 2*outer, H, W] (outermost: [B, in, H, W] -> [B, out, H, W]).
    """

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False,
                 innermost=False, norm="batch", use_dropout=False, dropout_salt=0):
        super().__init__()
        self.outermost = outermost
        norm_layer, use_bias = get_norm_layer(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        down_conv = _conv(input_nc, inner_nc, 4, 2, 1, use_bias)
        if outermost:
            up_conv = _deconv(inner_nc * 2, outer_nc, 4, 2, 1, True)
            layers = [down_conv, submodule, nn.ReLU(), up_conv, nn.Tanh()]
        elif innermost:
            up_conv = _deconv(inner_nc, outer_nc, 4, 2, 1, use_bias)
            layers = [LeakyReLU(0.2), down_conv, nn.ReLU(), up_conv, norm_layer(outer_nc)]
        else:
            up_conv = _deconv(inner_nc * 2, outer_nc, 4, 2, 1, use_bias)
            layers = [LeakyReLU(0.2), down_conv, norm_layer(inner_nc), submodule, nn.ReLU(), up_conv,
                      norm_layer(outer_nc)]
            if use_dropout:
                layers.append(CounterDropout(0.5, salt=dropout_salt))
        self.model = nn.SequentialCell(layers)

    def construct(self, x):
        if self.outermost:
            return self.model(x)
        return ops.cat((x, self.model(x)), 1)


class UnetGenerator(nn.Cell):
    """U-Net generator with ``num_downs`` halvings: [B, input_nc, H, W] -> [B, output_nc, H, W] in [-1, 1].

    H and W must be multiples of 2**num_downs (unet_256: 256, unet_128: 128).
    """

    def __init__(self, input_nc=3, output_nc=3, num_downs=8, ngf=64, norm="batch", use_dropout=True):
        super().__init__()
        self.num_downs = num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for i in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm,
                                            use_dropout=use_dropout, dropout_salt=i + 1)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block,
                                             outermost=True, norm=norm)

    def construct(self, x):
        return self.model(x)


class ResnetBlock(nn.Cell):
    """x + [pad, conv3x3, norm, ReLU, (dropout), pad, conv3x3, norm](x); [B, C, H, W] -> same."""

    def __init__(self, dim, norm="batch", use_dropout=False, dropout_salt=0):
        super().__init__()
        norm_layer, use_bias = get_norm_layer(norm)
        layers = [nn.Pad(((0, 0), (0, 0), (1, 1), (1, 1)), mode="REFLECT"), _conv(dim, dim, 3, 1, 0, use_bias),
                  norm_layer(dim), nn.ReLU()]
        if use_dropout:
            layers.append(CounterDropout(0.5, salt=dropout_salt))
        layers += [nn.Pad(((0, 0), (0, 0), (1, 1), (1, 1)), mode="REFLECT"), _conv(dim, dim, 3, 1, 0, use_bias),
                   norm_layer(dim)]
        self.conv_block = nn.SequentialCell(layers)

    def construct(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Cell):
    """ResNet generator (Johnson et al.): 2 stride-2 downs, ``n_blocks`` residual blocks, 2 ups.

    [B, input_nc, H, W] -> [B, output_nc, H, W]; H and W must be multiples of 4.
    """

    def __init__(self, input_nc=3, output_nc=3, ngf=64, norm="batch", use_dropout=True, n_blocks=9):
        super().__init__()
        norm_layer, use_bias = get_norm_layer(norm)
        layers = [nn.Pad(((0, 0), (0, 0), (3, 3), (3, 3)), mode="REFLECT"), _conv(input_nc, ngf, 7, 1, 0, use_bias),
                  norm_layer(ngf), nn.ReLU()]
        for i in range(2):
            mult = 2 ** i
            layers += [_conv(ngf * mult, ngf * mult * 2, 3, 2, 1, use_bias), norm_layer(ngf * mult * 2), nn.ReLU()]
        for i in range(n_blocks):
            layers.append(ResnetBlock(ngf * 4, norm, use_dropout, dropout_salt=i + 1))
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [_deconv(ngf * mult, ngf * mult // 2, 3, 2, 1, use_bias, output_padding=1),
                       norm_layer(ngf * mult // 2), nn.ReLU()]
        layers += [nn.Pad(((0, 0), (0, 0), (3, 3), (3, 3)), mode="REFLECT"), _conv(ngf, output_nc, 7, 1, 0, True),
                   nn.Tanh()]
        self.model = nn.SequentialCell(layers)

    def construct(self, x):
        return self.model(x)


class PatchGANDiscriminator(nn.Cell):
    """n-layer PatchGAN: [B, input_nc, H, W] -> [B, 1, H', W'] logits (70x70 receptive field at n_layers=3).

    ``input_nc`` is the conditional input plus the image (6 for RGB->RGB); 256x256 in -> 30x30 out.
    """

    def __init__(self, input_nc=6, ndf=64, n_layers=3, norm="batch"):
        super().__init__()
        norm_layer, use_bias = get_norm_layer(norm)
        layers = [_conv(input_nc, ndf, 4, 2, 1, True), LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [_conv(ndf * prev, ndf * mult, 4, 2, 1, use_bias), norm_layer(ndf * mult), LeakyReLU(0.2)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [_conv(ndf * prev, ndf * mult, 4, 1, 1, use_bias), norm_layer(ndf * mult), LeakyReLU(0.2),
                   _conv(ndf * mult, 1, 4, 1, 1, True)]
        self.model = nn.SequentialCell(layers)

    def construct(self, x):
        return self.model(x)


class PixelDiscriminator(nn.Cell):
    """1x1 PatchGAN (pixelGAN): [B, input_nc, H, W] -> [B, 1, H, W] logits."""

    def __init__(self, input_nc=6, ndf=64, norm="batch"):
        super().__init__()
        norm_layer, use_bias = get_norm_layer(norm)
        self.model = nn.SequentialCell([
            _conv(input_nc, ndf, 1, 1, 0, True), LeakyReLU(0.2),
            _conv(ndf, ndf * 2, 1, 1, 0, use_bias), norm_layer(ndf * 2), LeakyReLU(0.2),
            _conv(ndf * 2, 1, 1, 1, 0, use_bias)])

    def construct(self, x):
        return self.model(x)


GENERATORS = {
    "unet_256": lambda i, o, ngf, norm, drop: UnetGenerator(i, o, 8, ngf, norm, drop),
    "unet_128": lambda i, o, ngf, norm, drop: UnetGenerator(i, o, 7, ngf, norm, drop),
    "unet_64": lambda i, o, ngf, norm, drop: UnetGenerator(i, o, 6, ngf, norm, drop),
    "resnet_9blocks": lambda i, o, ngf, norm, drop: ResnetGenerator(i, o, ngf, norm, drop, 9),
    "resnet_6blocks": lambda i, o, ngf, norm, drop: ResnetGenerator(i, o, ngf, norm, drop, 6),
}
DISCRIMINATORS = {
    "basic": lambda i, ndf, n, norm: PatchGANDiscriminator(i, ndf, 3, norm),
    "n_layers": lambda i, ndf, n, norm: PatchGANDiscriminator(i, ndf, n, norm),
    "pixel": lambda i, ndf, n, norm: PixelDiscriminator(i, ndf, norm),
}


def valid_sizes(netG):
    """Image side lengths ``netG`` accepts: a multiple of this number (256 for unet_256)."""
    if netG.startswith("unet_"):
        return {"unet_256": 256, "unet_128": 128, "unet_64": 64}[netG]
    return 4


def define_G(netG="unet_256", input_nc=3, output_nc=3, ngf=64, norm="batch", use_dropout=True,
             init_type="normal", init_gain=0.02):
    """Build and initialise a generator by its reference name."""
    if netG not in GENERATORS:
        raise ValueError(f"netG={netG!r} is not a pix2pix generator; choose one of {sorted(GENERATORS)}")
    net = GENERATORS[netG](input_nc, output_nc, ngf, norm, use_dropout)
    init_weights(net, init_type, init_gain)
    return net


def define_D(netD="basic", input_nc=6, ndf=64, n_layers_D=3, norm="batch", init_type="normal", init_gain=0.02):
    """Build and initialise a discriminator by its reference name."""
    if netD not in DISCRIMINATORS:
        raise ValueError(f"netD={netD!r} is not a pix2pix discriminator; choose one of {sorted(DISCRIMINATORS)}")
    net = DISCRIMINATORS[netD](input_nc, ndf, n_layers_D, norm)
    init_weights(net, init_type, init_gain)
    return net
