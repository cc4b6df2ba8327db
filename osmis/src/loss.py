"""OSMIS / SIV-GAN losses and the loss cells of the train step.

* adversarial: BCE with logits, mean over each decision map, summed over a branch's outputs and weighted
  ``1/D`` (low-level), ``0.5/D`` (content), ``0.5/D`` (layout), D = ``num_blocks_d`` (reference);
* OSMIS content: weighted cross-entropy over C+1 classes on the [C*B, C+1] content logits; targets: class
  c for the rows of class c (reals in D, fakes in G), the "fake" class C for fakes in D; class weights
  ``1 / sum(mask_c)`` over batch and pixels of the full-resolution mask of that pass (0 for an absent
  class) and 1 for the fake class, PyTorch's weighted mean;
* diversity regularisation (G only): ``-2/(L(L-1)) * sum_scales sum_{k<m} mean|f_k - f_m|`` over the L
  generator features (normalised by the number of scales, as the reference writes it), times
  ``lambda_DR``.

Fake masks in D: resized (nearest) to the low-level map, hardened with a straight-through estimator:
Bernoulli(clamp(mask, 0.001, 0.999)) while ``iteration < bernoulli_warmup``, one-hot argmax afterwards.
"""

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from common.layers import AvgPool2d, PairwiseMeanAbs, reduce_sum
from common.spectral_norm import SpectralVectors
from osmis.src.augment import DiffAugment
from osmis.src.model import resize_nearest

__all__ = ["bce_with_logits", "weighted_cross_entropy", "class_weights", "DiversityLoss", "GeneratorLoss",
           "DiscriminatorLoss", "IterationCounter", "BATCH_FIELDS"]


# the train step's inputs, in order (``osmis.src.dataset.TrainSamples.get``)
BATCH_FIELDS = ("z_g", "z_d", "image", "mask", "theta_g", "theta_real", "theta_d", "bern_g", "bern_d", "fa_mix",
                "fa_drop", "fa_layout")


def bce_with_logits(x, target):
    """mean(BCE-with-logits(x, target)) for a constant target 0 or 1 (numerically stable form)."""
    return (ops.relu(x) - x * target + ops.log1p(ops.exp(-ops.abs(x)))).mean()


def class_weights(mask):
    """[C+1] weights: 1/sum(mask_c) over (batch, H, W) (0 for an absent class), then 1.0 for 'fake'."""
    s = reduce_sum(ops.stop_gradient(mask), (0, 2, 3), keep_dims=False)
    present = ops.cast(s > 0, s.dtype)
    w = present / ops.maximum(s, 1e-12)
    return ops.concat((w, ops.ones((1,), s.dtype)))


def weighted_cross_entropy(logits, target_onehot, weights):
    """PyTorch ``cross_entropy(logits, target, weight)``: logits [N, K, 1, 1], one-hot targets [N, K]."""
    logp = ops.log_softmax(logits.reshape(logits.shape[0], -1), axis=1)
    w_rows = (target_onehot * weights.reshape(1, -1)).sum(axis=1)
    nll = -(target_onehot * logp).sum(axis=1)
    return (w_rows * nll).sum() / w_rows.sum()


class DiversityLoss(nn.Cell):
    """``-2/(L(L-1)) * sum_scales sum_{k<m} mean|f_k - f_m|`` of L feature maps [B, C, H, W]
    (:class:`common.layers.PairwiseMeanAbs`: compiled on CPU)."""

    def __init__(self, batch_size):
        super().__init__()
        self.pairwise = PairwiseMeanAbs(batch_size)

    def construct(self, features):
        total = 0.0
        for f in features:
            total = total + self.pairwise(f).sum()
        n = len(features)
        return -total * 2.0 / (n * (n - 1))


class IterationCounter(nn.Cell):
    """After-step hook adding 1 to ``D.iteration`` (saved with D: the Bernoulli warm-up resumes exactly)."""

    def __init__(self, netD):
        super().__init__(auto_prefix=False)
        self.iteration = netD.iteration

    def construct(self):
        return ops.assign_add(self.iteration, ops.ones((), ms.float32))


class _OSMISLoss(nn.Cell):
    """Shared parts: augmentation, fake-mask hardening, the weighted adversarial terms."""

    def __init__(self, outputs, netD, arch, batch_size, bernoulli_warmup):
        super().__init__(auto_prefix=False)
        self.outputs = outputs
        self.netD = netD
        self.batch_size = batch_size
        self.augment = DiffAugment()
        self.num_blocks_g, self.d0 = arch["num_blocks_g"], arch["num_blocks_d0"]
        self.masks = arch["num_mask_channels"] > 0
        self.classes = arch["num_mask_channels"]
        self.low_size = tuple(arch["low_level_size"])
        d = float(arch["num_blocks_d"])
        self.w_low, self.w_content, self.w_layout = 1.0 / d, 0.5 / d, 0.5 / d
        self.warmup = float(bernoulli_warmup)
        c, b = max(self.classes, 1), batch_size
        real = np.zeros((c * b, c + 1), np.float32)
        for k in range(c):
            real[k * b:(k + 1) * b, k] = 1.0
        fake = np.zeros((c * b, c + 1), np.float32)
        fake[:, c] = 1.0
        self.target_real, self.target_fake = Tensor(real), Tensor(fake)

    def hard_fake_mask(self, mask, bern):
        """[B, C, H, W] soft mask -> [B, C, h, w] at the low-level size, hardened with the STE."""
        soft = resize_nearest(mask, self.low_size)
        bernoulli = ops.cast(bern < ops.clip_by_value(soft, 0.001, 0.999), soft.dtype)
        argmax = ops.one_hot(ops.argmax(soft, 1), self.classes, Tensor(1.0, soft.dtype), Tensor(0.0, soft.dtype), axis=1)
        warm = ops.cast(ops.stop_gradient(self.netD.iteration) < self.warmup, soft.dtype)
        hard = warm * bernoulli + (1 - warm) * argmax
        return hard - ops.stop_gradient(soft) + soft

    def adversarial(self, outputs, real, full_mask):
        """(low-level, content, layout) weighted branch losses of D's outputs against 'real' or 'fake'."""
        low, content, layout = outputs
        target = 1.0 if real else 0.0
        l_low = 0.0
        for x in low:
            l_low = l_low + bce_with_logits(x, target)
        l_lay = 0.0
        for x in layout:
            l_lay = l_lay + bce_with_logits(x, target)
        l_con = 0.0
        if self.masks:
            weights = class_weights(full_mask)
            onehot = self.target_real if real else self.target_fake
            for x in content:
                l_con = l_con + weighted_cross_entropy(x, onehot, weights)
        else:
            for x in content:
                l_con = l_con + bce_with_logits(x, target)
        return l_low * self.w_low, l_con * self.w_content, l_lay * self.w_layout


class GeneratorLoss(_OSMISLoss):
    """G step: ``(out, *batch) -> (loss, low, content, layout, DR)``; ``out`` the flat output of
    ``outputs`` (:class:`osmis.src.model.TrainingOutputs` on ``z_g``: D0 images, G features, mask)."""

    def __init__(self, outputs, netD, arch, batch_size, bernoulli_warmup, lambda_DR):
        super().__init__(outputs, netD, arch, batch_size, bernoulli_warmup)
        self.lambda_DR = float(lambda_DR)
        self.diversity = DiversityLoss(batch_size)

    def fake_pass(self, images, mask, theta, bern):
        """D's weighted losses on fakes (D0 images, mask [B, C, H, W] or None), labelled real."""
        if self.masks:
            augmented = self.augment(images + (mask,), theta)
            mask = augmented[-1]
            outputs = self.netD(augmented[:-1], self.hard_fake_mask(mask, bern))
            return self.adversarial(outputs, True, mask)
        return self.adversarial(self.netD(self.augment(images, theta)), True, None)

    def construct(self, out, z_g, z_d, image, mask, theta_g, theta_real, theta_d, bern_g, bern_d, fa_mix, fa_drop,
                  fa_layout):
        out = self.outputs.unpack(out)
        mask = out[-1] if self.masks else None
        l_low, l_con, l_lay = self.fake_pass(out[:self.d0], mask, theta_g, bern_g)
        features = out[self.d0:self.d0 + self.num_blocks_g]
        dr = self.diversity(features) * self.lambda_DR
        return l_low + l_con + l_lay + dr, l_low, l_con, l_lay, dr


class DiscriminatorLoss(_OSMISLoss):
    """D step: reals (augmented, with feature augmentation) and the fakes ``G(z_d)`` of a new noise batch
    (``TrainingOutputs.fakes``; the G step's ``out`` only orders them after its forward: :meth:`fakes`) ->
    ``(loss, real, fake)``.

    The low-level branch runs once on reals and fakes together, a [2B, ...] batch (one pass of each of its
    convolutions and gradients instead of two; the content and layout branches run per half, feature augmentation
    on the reals). Its spectral norms iterate once more before it, so their vectors end where the reference's two
    calls leave them; both halves use that second estimate of sigma (the reference's reals use the first). With
    ``norm_D: batch`` the two passes stay separate (batch statistics would mix reals and fakes).
    """

    def __init__(self, outputs, netD, arch, batch_size, bernoulli_warmup):
        super().__init__(outputs, netD, arch, batch_size, bernoulli_warmup)
        self.pool = AvgPool2d(2)  # bilinear x0.5 (align_corners=False) on even sizes
        self.joint = arch["norm_D"] != "batch"
        if self.joint:
            self.low_level_vectors = SpectralVectors(netD.low_level_cells(), take_over=False)
            self.halves = ops.Split(0, 2)  # [2B, ...] -> two [B, ...]; its gradient is one concatenation

    def fakes(self, z_d, out):
        """``TrainingOutputs.fakes(z_d)``, run after the G step's forward ``out``: G's spectral norms then iterate
        in the reference's order (graph mode orders the two forwards by this dependency, not by program order)."""
        return self.outputs.fakes(ops.depend(z_d, out))

    def discriminate(self, reals, fakes, real_mask, fake_mask, fa):
        """D's outputs on reals (feature augmentation ``fa``) and on fakes: ``(real outputs, fake outputs)``."""
        if not self.joint:
            return self.netD(reals, real_mask, fa), self.netD(fakes, fake_mask)
        iterated = self.low_level_vectors.iterate()
        images = tuple(ops.depend(ops.concat((r, f)), iterated) for r, f in zip(reals, fakes))
        low, y = self.netD.low_level(images)
        low = tuple(self.halves(x) for x in low)
        y_real, y_fake = self.halves(y)
        real = (tuple(x[0] for x in low),) + self.netD.branches(y_real, real_mask, fa)
        fake = (tuple(x[1] for x in low),) + self.netD.branches(y_fake, fake_mask)
        return real, fake

    def construct(self, out, z_g, z_d, image, mask, theta_g, theta_real, theta_d, bern_g, bern_d, fa_mix, fa_drop,
                  fa_layout):
        pyramid = (image,)
        for _ in range(self.d0 - 1):
            pyramid = (self.pool(pyramid[0]),) + pyramid
        fa = (fa_mix, fa_drop, fa_layout)
        if self.masks:
            reals = self.augment(pyramid + (mask,), theta_real)
            fake_images, fake_mask = self.fakes(z_d, out)
            fakes = self.augment(fake_images + (fake_mask,), theta_d)
            real_mask, fake_mask = reals[-1], fakes[-1]
            real_out, fake_out = self.discriminate(reals[:-1], fakes[:-1], resize_nearest(real_mask, self.low_size),
                                                   self.hard_fake_mask(fake_mask, bern_d), fa)
        else:
            fake_images, _ = self.fakes(z_d, out)
            real_mask = fake_mask = None
            real_out, fake_out = self.discriminate(self.augment(pyramid, theta_real),
                                                   self.augment(fake_images, theta_d), None, None, fa)
        l_real = self.adversarial(real_out, True, real_mask)
        l_fake = self.adversarial(fake_out, False, fake_mask)
        real = l_real[0] + l_real[1] + l_real[2]
        fake_total = l_fake[0] + l_fake[1] + l_fake[2]
        return real + fake_total, real, fake_total
