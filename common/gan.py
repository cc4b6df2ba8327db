"""GAN objectives: ``vanilla`` (BCE with logits), ``lsgan`` (least squares) and ``hinge``."""
from mindspore import nn, ops

__all__ = ["GANLoss", "GAN_MODES"]

GAN_MODES = ("vanilla", "lsgan", "hinge")


class GANLoss(nn.Cell):
    """Adversarial loss on discriminator logits of any shape, averaged over all elements.

    ``loss(pred, target_is_real, for_discriminator=True)``: for ``hinge`` the discriminator uses
    ``relu(1 -/+ pred)`` and the generator ``-pred``; the other modes ignore ``for_discriminator``.
    """

    def __init__(self, mode="vanilla"):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"gan_mode={mode!r} is not supported; choose one of {GAN_MODES}")
        self.mode = mode

    def construct(self, pred, target_is_real, for_discriminator=True):
        if self.mode == "vanilla":
            target = ops.ones_like(pred) if target_is_real else ops.zeros_like(pred)
            return ops.binary_cross_entropy_with_logits(pred, target, ops.ones_like(pred), ops.ones_like(pred))
        if self.mode == "lsgan":
            target = ops.ones_like(pred) if target_is_real else ops.zeros_like(pred)
            return ops.square(pred - target).mean()
        if for_discriminator:
            if target_is_real:
                return ops.relu(1.0 - pred).mean()
            return ops.relu(1.0 + pred).mean()
        return -pred.mean()
