"""CRN training objective: the VGG19 feature-matching loss, with the hindsight (diversity) loss when k > 1.

The loss network is ``common.perceptual.PerceptualLoss`` (post-ReLU features, average pooling, input
0..255 minus the ImageNet mean) on layers pixel, conv1_2, conv2_2, conv3_2, conv4_2, conv5_2 with the
per-resolution weights of the reference scripts.

VGG19 weights come from ``vgg_path`` (MatConvNet ``imagenet-vgg-verydeep-19.mat``, torchvision ``.pth`` or
MindSpore ``.ckpt``). Without one (the built-in demo), the ImageNet VGG16 of ``common.weights`` stands in:
tap relu{b}_2 of VGG16 replaces relu{b}_2 of VGG19 (both nets have conv{b}_2 at the same resolution in
every block b = 1..5; VGG19 only adds conv3_4/4_4/5_4 after the taps used), average pooling is kept, and
the input is normalised torchvision-style ((x - mean) / std), as those weights were trained. The feature
scales differ from the MatConvNet VGG19, so the reference lambdas are only approximately balanced.
"""
from mindspore import nn

from common.perceptual import CRN_LAYER_WEIGHTS, HindsightLoss, PerceptualLoss
from common.pretrained import vgg16_stand_in
from common.weights import load_vgg

__all__ = ["CRN_LAYERS", "layer_weights", "build_loss_network", "CRNWithLoss"]

CRN_LAYERS = ("pixel", "relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")


def layer_weights(cfg):
    """{layer: lambda}: ``cfg.layer_weights`` (6 comma-separated numbers) or the reference table of the size.

    Sizes below 256 (quick runs) use the 256p weights.
    """
    if cfg.layer_weights:
        try:
            values = [float(v) for v in str(cfg.layer_weights).split(",")]
        except ValueError:
            values = []
        if len(values) != len(CRN_LAYERS):
            raise ValueError(f"layer_weights={cfg.layer_weights!r}: give {len(CRN_LAYERS)} comma-separated numbers "
                             f"for {', '.join(CRN_LAYERS)}, or leave it empty for the reference weights")
        return dict(zip(CRN_LAYERS, values))
    return dict(CRN_LAYER_WEIGHTS[max(256, cfg.size)])


def build_loss_network(cfg, log=print):
    """The frozen perceptual loss of a config, weights loaded; ``log`` receives one line saying which VGG."""
    weights = layer_weights(cfg)
    if cfg.vgg_path:
        loss = PerceptualLoss(weights, arch="vgg19", pool="avg", normalize="caffe")
        load_vgg(loss.vgg, cfg.vgg_path)
        log(f"loss network: VGG19 from {cfg.vgg_path} (average pooling, 0..255 minus the ImageNet mean)")
        return loss
    path = vgg16_stand_in("imagenet-vgg-verydeep-19.mat (or a VGG19 .pth/.ckpt)")
    loss = PerceptualLoss(weights, arch="vgg16", pool="avg", normalize="torch")
    load_vgg(loss.vgg, path)
    log(f"loss network: no vgg_path given, so the ImageNet VGG16 {path} stands in for the CRN VGG19 "
        f"(relu{{1..5}}_2 of VGG16 for those of VGG19, average pooling, torchvision normalisation); "
        f"pass --vgg_path for the reference loss")
    return loss


class CRNWithLoss(nn.Cell):
    """Generator + loss: label [B, P, H, W], photo [B, 3, H, W] (0..255) -> scalar loss.

    With k > 1 outputs the hindsight loss (per-class min over the k images, weight ``min_weight``),
    with k = 1 the plain feature-matching loss.
    """

    def __init__(self, generator, perceptual, min_weight=0.999):
        super().__init__(auto_prefix=False)  # the generator keeps its own parameter names in checkpoints
        self.generator = generator
        self.diverse = generator.num_outputs > 1
        self.loss = HindsightLoss(perceptual, min_weight) if self.diverse else perceptual

    def construct(self, label, photo):
        fake = self.generator(label)
        if self.diverse:
            return self.loss(fake, photo, label)
        return self.loss(fake, photo).mean()
