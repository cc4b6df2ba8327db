"""The pix2pix optimisation step (paper Sec. 3.3): update D, then update G against the updated D.

    L_D = 0.5 * [ GAN(D(x, y), real) + GAN(D(x, G(x)), fake) ]
    L_G = GAN(D(x, G(x)), real) + lambda_L1 * |y - G(x)|_1

G runs forward once per step (:class:`common.train.GANTrainStep`), as in the reference code.
"""
from mindspore import nn, ops

from common.gan import GANLoss
from common.train import GANTrainStep, StepCell

__all__ = ["DiscriminatorLoss", "GeneratorLoss", "Pix2PixTrainStep"]


class DiscriminatorLoss(nn.Cell):
    """(fake_B, real_A [B, Cin, H, W], real_B [B, Cout, H, W]) -> (L_D,)."""

    def __init__(self, netD, gan_mode="vanilla"):
        super().__init__(auto_prefix=False)
        self.netD = netD
        self.gan = GANLoss(gan_mode)

    def construct(self, fake_b, real_a, real_b):
        pred_fake = self.netD(ops.cat((real_a, fake_b), 1))
        pred_real = self.netD(ops.cat((real_a, real_b), 1))
        return (0.5 * (self.gan(pred_fake, False) + self.gan(pred_real, True)),)


class GeneratorLoss(nn.Cell):
    """(fake_B, real_A, real_B) -> (L_G, L_GAN, L_L1)."""

    def __init__(self, netD, gan_mode="vanilla", lambda_l1=100.0):
        super().__init__(auto_prefix=False)
        self.netD = netD
        self.gan = GANLoss(gan_mode)
        self.lambda_l1 = lambda_l1

    def construct(self, fake_b, real_a, real_b):
        pred_fake = self.netD(ops.cat((real_a, fake_b), 1))
        loss_gan = self.gan(pred_fake, True, False)
        loss_l1 = ops.abs(fake_b - real_b).mean()
        return loss_gan + self.lambda_l1 * loss_l1, loss_gan, loss_l1


class Pix2PixTrainStep(StepCell):
    """One pix2pix iteration as one compiled graph: (real_A, real_B) -> (L_D, L_G, L_GAN, L_L1)."""

    def __init__(self, netG, netD, opt_G, opt_D, gan_mode="vanilla", lambda_l1=100.0, *, loss_scale=0):
        super().__init__(auto_prefix=False)
        self.step = GANTrainStep(netG, DiscriminatorLoss(netD, gan_mode), GeneratorLoss(netD, gan_mode, lambda_l1),
                                 opt_G, opt_D, generator_inputs=1, order="D_then_G", loss_scale=loss_scale)

    def construct(self, real_a, real_b):
        return self.step(real_a, real_b)
