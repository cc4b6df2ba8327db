"""CoCosNet networks, built with the reference's ADE20K options, and the composite inference network.

* :func:`build_correspondence` - :class:`cocosnet.src.correspondence.CorrespondenceNet`
* :func:`build_generator` - :class:`cocosnet.src.generator.TranslationNet`
* :func:`build_discriminator` - :class:`cocosnet.src.discriminator.MultiscaleDiscriminator`
* :class:`CoCosNet` - correspondence then translation: (label map, exemplar, exemplar label map) -> image.

``REFERENCE_PARAMS`` are the trainable-parameter counts of the official code at full width (spectral-norm
``u``/``v`` excluded); ``common.vgg.VGG("vgg19", taps=("relu5_4",))`` holds the 20,024,384 of the fixed
VGG19 loss network (all 16 convs of ``vgg19_conv.pth``; the losses tap relu5_2 at most).
"""
from mindspore import nn, ops

from cocosnet.src.correspondence import CorrespondenceNet
from cocosnet.src.discriminator import MultiscaleDiscriminator
from cocosnet.src.generator import TranslationNet

__all__ = ["ADE20K_LABEL_NC", "REFERENCE_PARAMS", "build_correspondence", "build_generator", "build_discriminator",
           "CoCosNet"]

ADE20K_LABEL_NC = 151
REFERENCE_PARAMS = {"correspondence": 59_315_716, "generator": 96_664_260, "discriminator": 6_000_772,
                    "vgg19": 20_024_384}


def build_correspondence(label_nc=ADE20K_LABEL_NC, ngf=64, corr_channels=256, spade_hidden=128):
    """Correspondence network; defaults give the reference's 59,315,716 parameters."""
    return CorrespondenceNet(label_nc, ngf, corr_channels, spade_hidden)


def build_generator(label_nc=ADE20K_LABEL_NC, ngf=64, spade_hidden=128):
    """Translation network on 3 + label_nc channels; defaults give the reference's 96,664,260 parameters."""
    return TranslationNet(label_nc, ngf, spade_hidden, attention=True)


def build_discriminator(label_nc=ADE20K_LABEL_NC, ndf=64, num_D=2):
    """Two-scale PatchGAN on [label one-hot, RGB] (the gradient reaches only the RGB channels); defaults give the
    reference's 6,000,772 parameters."""
    return MultiscaleDiscriminator(label_nc + 3, ndf, n_layers=4, num_D=num_D, attention=True,
                                   grad_channels=(label_nc, label_nc + 3))


class CoCosNet(nn.Cell):
    """Correspondence + translation: the published single-network form.

    ``construct(seg, ref, ref_seg)``: [B, L, H, W] one-hot, [B, 3, H, W] in [-1, 1], [B, L, H, W] one-hot
    -> [B, 3, H, W] in [-1, 1]. :meth:`translate` also returns the warped exemplar and warped mask.
    """

    def __init__(self, correspondence, generator):
        super().__init__()
        self.correspondence = correspondence
        self.generator = generator

    def translate(self, seg, ref, ref_seg):
        """(image [B,3,H,W], warp_out [B,3,H,W], warp_mask [B,L,H/4,W/4])."""
        warp_out, warp_mask = self.correspondence(seg, ref, ref_seg)
        return self.generator(ops.cat((warp_out, seg), 1)), warp_out, warp_mask

    def construct(self, seg, ref, ref_seg):
        return self.translate(seg, ref, ref_seg)[0]
