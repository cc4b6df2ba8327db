"""The pix2pix optimisation step (paper Sec. 3.3): update D, then update G against the updated D.

    L_D = 0.5 * [ GAN(D(x, y), real) + GAN(D(x, G(x)), fake) ]
    L_G = GAN(D(x, G(x)), real) + lambda_L1 * |y - G(x)|_1
"""
from mindspore import nn, ops

from common.gan import GANLoss
from common.train import TrainOneStep

__all__ = ["DiscriminatorLoss", "GeneratorLoss", "Pix2PixTrainStep"]


class DiscriminatorLoss(nn.Cell):
    """(real_A [B, Cin, H, W], real_B [B, Cout, H, W]) -> (L_D, fake_B); G is not differentiated."""

    def __init__(self, netG, netD, gan_mode="vanilla"):
        super().__init__(auto_prefix=False)
        self.netG, self.netD = netG, netD
        self.gan = GANLoss(gan_mode)

    def construct(self, real_a, real_b):
        fake_b = ops.stop_gradient(self.netG(real_a))
        pred_fake = self.netD(ops.cat((real_a, fake_b), 1))
        pred_real = self.netD(ops.cat((real_a, real_b), 1))
        loss = 0.5 * (self.gan(pred_fake, False) + self.gan(pred_real, True))
        return loss, fake_b


class GeneratorLoss(nn.Cell):
    """(real_A, real_B) -> (L_G, L_GAN, L_L1, fake_B); only G's weights receive gradients."""

    def __init__(self, netG, netD, gan_mode="vanilla", lambda_l1=100.0):
        super().__init__(auto_prefix=False)
        self.netG, self.netD = netG, netD
        self.gan = GANLoss(gan_mode)
        self.lambda_l1 = lambda_l1

    def construct(self, real_a, real_b):
        fake_b = self.netG(real_a)
        pred_fake = self.netD(ops.cat((real_a, fake_b), 1))
        loss_gan = self.gan(pred_fake, True, False)
        loss_l1 = ops.abs(fake_b - real_b).mean()
        loss = loss_gan + self.lambda_l1 * loss_l1
        return loss, loss_gan, loss_l1, fake_b


class Pix2PixTrainStep(nn.Cell):
    """One pix2pix iteration as one compiled graph: D step, then G step.

    Returns (L_D, L_G, L_GAN, L_L1).
    """

    def __init__(self, netG, netD, opt_G, opt_D, gan_mode="vanilla", lambda_l1=100.0):
        super().__init__(auto_prefix=False)
        self.step_D = TrainOneStep(DiscriminatorLoss(netG, netD, gan_mode), opt_D, has_aux=True)
        self.step_G = TrainOneStep(GeneratorLoss(netG, netD, gan_mode, lambda_l1), opt_G, has_aux=True)

    def construct(self, real_a, real_b):
        loss_d, _ = self.step_D(real_a, real_b)
        real_a = ops.depend(real_a, loss_d)
        loss_g, loss_gan, loss_l1, _ = self.step_G(real_a, real_b)
        return loss_d, loss_g, loss_gan, loss_l1
