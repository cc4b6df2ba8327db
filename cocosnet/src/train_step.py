"""The CoCosNet objective and optimisation step (the reference ``Pix2PixModel`` with its ADE20K options).

One iteration (``G_then_D``, :class:`common.train.GANTrainStep`): the correspondence and translation nets
run once; G + Corr take one Adam step on

    L_G = w_gan * hinge_G + lambda_feat * FM_D + lambda_vgg * fm_ratio * FM_VGG(self-reference samples)
          + w_perc * MSE(relu5_2) + lambda_vgg * ctx_w * CX + w_align * |f_seg - f_img(real)|_1 + w_mask * L_mask

then D takes one step on ``w_gan * (hinge_D(fake) + hinge_D(real))`` with the same (detached) fake.
With ``recompute: true``, :class:`RecomputingStep` computes the same iteration holding one part's
activations at a time (each part's forward run again in its backward).

* ``hinge_G = -mean D(fake)``, ``hinge_D = mean relu(1 -/+ D)``, each averaged over the D scales;
* ``FM_D``: L1 between D's intermediate features of fake and real (4 per scale), divided by the scales;
* ``FM_VGG``: relu1_2 .. relu5_2 with weights 1/32, 1/16, 1/8, 1/4, 1, L1 weighted per sample by the
  self-reference flag (:func:`cocosnet.src.loss.self_reference_l1`);
* ``CX``: 8 CX(relu5_2) + 4 CX(relu4_2) + 2 CX(avgpool2 relu3_2) of the output against the exemplar;
* ``L_mask``: :func:`cocosnet.src.loss.warped_mask_loss`.

Tensors: seg, ref_seg [B, L, H, W] one-hot; ref, real [B, 3, H, W] in [-1, 1]; self_ref [B] (0/1).
"""
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from common.pretrained import vgg16_stand_in
from common.spectral_norm import SpectralVectors
from common.train import GANTrainStep, after
from common.vgg import VGG
from common.weights import load_vgg
from cocosnet.src.blocks import nearest_resize
from cocosnet.src.correspondence import avg_pool
from cocosnet.src.loss import contextual_loss, self_reference_l1, warped_mask_loss

__all__ = ["VGG_TAPS", "FM_WEIGHTS", "LOSS_NAMES", "VGGFeatures", "build_vgg_features", "CoCosNetForward",
           "GeneratorLoss", "DiscriminatorLoss", "build_train_step"]

VGG_TAPS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
FM_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
CAFFE_MEAN_BGR = (0.40760392, 0.45795686, 0.48501961)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
LOSS_NAMES = ("d_loss", "d_fake", "d_real", "g_loss", "g_gan", "g_feat", "g_fm", "g_perc", "g_ctx", "g_align",
              "g_mask")


class VGGFeatures(nn.Cell):
    """Frozen VGG relu1_2 .. relu5_2 (max pooling) of images in [-1, 1].

    ``normalize="caffe_bgr"``: the reference ``vgg19_conv.pth`` (``vgg_normal_correct``): (x + 1) / 2,
    RGB -> BGR, minus the BGR ImageNet mean, times 255. ``"torch"``: torchvision weights,
    ((x + 1) / 2 - mean) / std in RGB.

    Shapes: [B, 3, H, W] -> tuple of the ``taps`` (default relu1_2 .. relu5_2: 5 [B, C_l, H / 2^l, W / 2^l],
    H, W multiples of 16).
    """

    def __init__(self, arch="vgg19", normalize="caffe_bgr", taps=VGG_TAPS):
        super().__init__()
        if normalize not in ("caffe_bgr", "torch"):
            raise ValueError(f"normalize={normalize!r}; choose caffe_bgr (vgg19_conv.pth) or torch (torchvision)")
        self.vgg = VGG(arch, taps, pool="max", requires_grad=False)
        self.bgr = normalize == "caffe_bgr"
        if self.bgr:
            mean, scale = np.array(CAFFE_MEAN_BGR), np.full(3, 255.0)
        else:
            mean, scale = np.array(TORCH_MEAN_RGB), 1.0 / np.array(TORCH_STD_RGB)
        self.mean = Tensor(mean.reshape(1, 3, 1, 1).astype(np.float32))
        self.scale = Tensor(scale.reshape(1, 3, 1, 1).astype(np.float32))

    def construct(self, x):
        x = (x + 1.0) * 0.5
        if self.bgr:
            x = ops.cat((x[:, 2:3], x[:, 1:2], x[:, 0:1]), 1)
        return self.vgg((x - self.mean) * self.scale)


def build_vgg_features(vgg_path, log=print, taps=VGG_TAPS, *, retrieval=False):
    """The loss VGG: VGG19 from ``vgg_path`` (the reference ``vgg19_conv.pth``, or any file with its
    Caffe BGR weights that ``common.weights`` reads: ``conv1_1.weight`` keys, ``features.N``, .ckpt), else the cached ImageNet VGG16 as a stand-in (relu{b}_2 of VGG16 for those of VGG19:
    same resolutions, torchvision normalisation). ``log`` receives one line saying which (``retrieval``: for
    ``build_ref_list``'s features, where no loss scale is at stake)."""
    role = "retrieval features" if retrieval else "loss network"
    if vgg_path:
        net = VGGFeatures("vgg19", "caffe_bgr", taps)
        load_vgg(net.vgg, vgg_path)
        log(f"{role}: VGG19 from {vgg_path} (max pooling; (x+1)/2, BGR, minus the Caffe mean, x255 as "
            f"the reference vgg19_conv.pth)")
        return net
    path = vgg16_stand_in("vgg19_conv.pth (the reference's loss VGG19)")
    net = VGGFeatures("vgg16", "torch", taps)
    load_vgg(net.vgg, path)
    if retrieval:
        log(f"{role}: the ImageNet VGG16 {path} (torchvision normalisation; --vgg_path takes a VGG19)")
    else:
        log(f"{role}: no vgg_path given, so the ImageNet VGG16 {path} stands in for the reference VGG19 "
            f"(relu{{1..5}}_2 of VGG16, torchvision normalisation; the loss scales differ); pass "
            f"--vgg_path=vgg19_conv.pth for the reference losses")
    return net


class CoCosNetForward(nn.Cell):
    """Correspondence + translation for training: (seg, ref, ref_seg, real) ->
    (fake [B,3,H,W], warp_out [B,3,H,W], warp_mask [B,L,h,w], f_seg [B,C,h,w], f_real [B,C,h,w]).

    ``f_real`` is the image encoder on the real image (the domain-alignment target).
    """

    def __init__(self, corr, netG):
        super().__init__(auto_prefix=False)
        self.corr = corr
        self.netG = netG

    def construct(self, seg, ref, ref_seg, real):
        warp_out, warp_mask, f_seg, _, _, _, _, _ = self.corr.correspond(seg, ref, ref_seg)
        fake = self.netG(ops.cat((warp_out, seg), 1))
        return fake, warp_out, warp_mask, f_seg, self.corr.encode_image(real)


def _discriminate(netD, seg, fake, real):
    """D on [seg, fake] and [seg, real] as one batch -> (fake outputs, real outputs), each a tuple over
    scales of tuples of layer outputs."""
    b = fake.shape[0]
    both = netD(ops.cat((ops.cat((seg, fake), 1), ops.cat((seg, real), 1)), 0))
    fake_out, real_out = (), ()
    for scale in both:  # Split rather than slices: MindSpore's CPU StridedSlice copies ~30x slower
        halves = tuple(ops.split(t, b, axis=0) for t in scale)
        fake_out += (tuple(h[0] for h in halves),)
        real_out += (tuple(h[1] for h in halves),)
    return fake_out, real_out


class GeneratorLoss(nn.Cell):
    """(forward outputs, seg, ref, ref_seg, real, self_ref) -> (L_G, gan, feat, fm, perc, ctx, align, mask),
    each term already weighted (module doc)."""

    def __init__(self, netD, vgg, *, weight_gan=10.0, lambda_feat=10.0, lambda_vgg=10.0, fm_ratio=0.1,
                 weight_perceptual=0.01, ctx_w=1.0, weight_align=10.0, weight_mask=100.0, down=4):
        super().__init__(auto_prefix=False)
        self.netD, self.vgg = netD, vgg
        self.weight_gan, self.lambda_feat = weight_gan, lambda_feat
        self.weight_fm, self.weight_perceptual = lambda_vgg * fm_ratio, weight_perceptual
        self.weight_ctx, self.weight_align, self.weight_mask = lambda_vgg * ctx_w, weight_align, weight_mask
        self.down = down

    def construct(self, out, seg, ref, ref_seg, real, self_ref):
        fake, _, warp_mask, f_seg, f_real = out
        b = fake.shape[0]
        pred_fake, pred_real = _discriminate(self.netD, seg, fake, real)
        num_d = len(pred_fake)
        gan = 0.0
        feat = 0.0
        for i in range(num_d):
            gan = gan - pred_fake[i][-1].mean()
            for j in range(len(pred_fake[i]) - 1):
                feat = feat + ops.abs(pred_fake[i][j] - ops.stop_gradient(pred_real[i][j])).mean()
        gan = gan / num_d * self.weight_gan
        feat = feat / num_d * self.lambda_feat
        # VGG on the fake alone (the pass the backward goes through), then on [real, ref] as one batch of
        # targets (no gradient path: its backward is never built); each target tap split back (Split, not slices)
        f_fake = self.vgg(fake)
        targets = tuple(ops.split(f, b, axis=0) for f in self.vgg(ops.stop_gradient(ops.cat((real, ref), 0))))
        f_real_img, f_ref = tuple(t[0] for t in targets), tuple(t[1] for t in targets)
        fm = 0.0
        for w, fake_tap, real_tap in zip(FM_WEIGHTS, f_fake, f_real_img):
            fm = fm + w * self_reference_l1(fake_tap, real_tap, self_ref)
        fm = fm * self.weight_fm
        perc = ops.square(f_fake[-1] - f_real_img[-1]).mean() * self.weight_perceptual
        ctx = (8.0 * contextual_loss(f_fake[4], f_ref[4]).mean()
               + 4.0 * contextual_loss(f_fake[3], f_ref[3]).mean()
               + 2.0 * contextual_loss(avg_pool(f_fake[2], 2), avg_pool(f_ref[2], 2)).mean())
        ctx = ctx * self.weight_ctx
        align = ops.abs(f_seg - f_real).mean() * self.weight_align
        h, w = warp_mask.shape[2], warp_mask.shape[3]
        mask = warped_mask_loss(warp_mask, nearest_resize(seg, (h, w)), nearest_resize(ref_seg, (h, w)))
        mask = mask * self.weight_mask
        total = gan + feat + fm + perc + ctx + align + mask
        return total, gan, feat, fm, perc, ctx, align, mask


class DiscriminatorLoss(nn.Cell):
    """(forward outputs (detached), seg, ref, ref_seg, real, self_ref) -> (L_D, fake term, real term)."""

    def __init__(self, netD, weight_gan=10.0):
        super().__init__(auto_prefix=False)
        self.netD = netD
        self.weight_gan = weight_gan

    def construct(self, out, seg, ref, ref_seg, real, self_ref):
        pred_fake, pred_real = _discriminate(self.netD, seg, out[0], real)
        num_d = len(pred_fake)
        d_fake, d_real = 0.0, 0.0
        for i in range(num_d):
            d_fake = d_fake + ops.relu(1.0 + pred_fake[i][-1]).mean()
            d_real = d_real + ops.relu(1.0 - pred_real[i][-1]).mean()
        d_fake = d_fake / num_d * self.weight_gan
        d_real = d_real / num_d * self.weight_gan
        return d_fake + d_real, d_fake, d_real


class _LabelEncoding(nn.Cell):
    """seg [B, L, H, W] -> f_seg [B, C, h, w]: the correspondence's label-domain encoder."""

    def __init__(self, corr):
        super().__init__(auto_prefix=False)
        self.corr = corr

    def construct(self, seg):
        return self.corr.encode_label(seg)


class _ImageEncoding(nn.Cell):
    """image [B, 3, H, W] -> [B, C, h, w]: the correspondence's image-domain encoder (on the exemplar, and on
    the real image for the alignment loss)."""

    def __init__(self, corr):
        super().__init__(auto_prefix=False)
        self.corr = corr

    def construct(self, image):
        return self.corr.encode_image(image)


class _Matching(nn.Cell):
    """(f_seg, f_ref, seg, ref, ref_seg) -> (warp_out [B,3,H,W], warp_mask [B,L,h,w]): the correspondence after
    its encoders; seg, ref and ref_seg are data (no gradient)."""

    def __init__(self, corr):
        super().__init__(auto_prefix=False)
        self.corr = corr

    def construct(self, f_seg, f_ref, seg, ref, ref_seg):
        seg, ref, ref_seg = ops.stop_gradient(seg), ops.stop_gradient(ref), ops.stop_gradient(ref_seg)
        out = self.corr.match(f_seg, f_ref, seg, ref, ref_seg)
        return out[0], out[1]


class _LowResolution(nn.Cell):
    """The translation network up to H/2: [B, 3 + L, H, W] -> [B, 4ngf, H/2, W/2]."""

    def __init__(self, netG):
        super().__init__(auto_prefix=False)
        self.netG = netG

    def construct(self, seg):
        return self.netG.low_resolution(seg)[-1]


class _HighResolution(nn.Cell):
    """The translation network from H/2: ([B, 4ngf, H/2, W/2], [B, 3 + L, H, W]) -> [B, 3, H, W]."""

    def __init__(self, netG):
        super().__init__(auto_prefix=False)
        self.netG = netG

    def construct(self, x, seg):
        return self.netG.high_resolution(x, seg)[-1]


def _gradient_sources(params, parts):
    """For each of ``params``, where the parts' pullbacks put its gradient: ``(k, j, k2, j2)``, position ``j``
    of part ``k`` plus, for a parameter in two parts (``k2 >= 0``), position ``j2`` of part ``k2``.
    ``parts``: tuples of parameters, in the order their pullbacks return gradients."""
    where = {}
    for k, part in enumerate(parts):
        for j, p in enumerate(part):
            where.setdefault(id(p), []).append((k, j))
    sources = []
    for p in params:
        found = where.get(id(p), [])
        if not 1 <= len(found) <= 2:
            raise ValueError(f"{p.name}: in {len(found)} recomputed parts; each parameter needs one or two")
        sources.append(found[0] + (found[1] if len(found) == 2 else (-1, -1)))
    return tuple(sources)


class RecomputingStep(GANTrainStep):
    """The CoCosNet iteration of :class:`common.train.GANTrainStep` (``G_then_D``, same values and gradients),
    holding one part's activations at a time instead of all of them.

    The forward runs once, keeping only the tensors between six parts (f_seg, f_ref [B,4ngf,H/4,W/4], the
    warped exemplar, the translation network's H/2 features [B,4ngf,H/2,W/2]); the generator losses give
    their gradient w.r.t. the five forward outputs; then each part is run again from its kept inputs and
    pulled back, one after the other: the translation network from H/2 (up_2, up_3, the image), the
    translation network up to H/2 (-> the warped exemplar's gradient), the image encoder on the real image,
    the matching (shared residual blocks, theta / phi, correlation and warps), the label encoder, the image
    encoder on the exemplar. Cost: one more forward of both networks.

    The spectral norms of both networks iterate where the single-pass step's forward would (every layer once at
    the start, the image encoder's again before its pass on the real image; :class:`SpectralVectors`), so both
    runs of a part see the same vectors; the image encoder's are saved and set back for its rerun on the exemplar
    (snapshot slots of :class:`SpectralVectors`), and left as the step would leave them. Every write of them waits
    for the passes that read them before it, so the step gives the same bits without MindSpore's copies of
    Parameter reads (``CoCosNetSpec.parameter_read_copies``).
    """

    def __init__(self, corr, netG, d_loss, g_loss, opt_G, opt_D, *, loss_scale=0):
        # no generator cell: the five part cells below run its forward
        super().__init__(None, d_loss, g_loss, opt_G, opt_D, order="G_then_D", loss_scale=loss_scale)
        self.label_encoding = _LabelEncoding(corr)
        self.image_encoding = _ImageEncoding(corr)
        self.matching = _Matching(corr)
        self.low_resolution = _LowResolution(netG)
        self.high_resolution = _HighResolution(netG)
        label, image = corr.adaptive_model_seg.trainable_params(), corr.adaptive_model_img.trainable_params()
        encoders = {id(p) for p in label + image}
        matching = [p for p in corr.trainable_params() if id(p) not in encoders]
        high = [p for name in ("up_2", "up_3", "conv_img") for p in getattr(netG, name).trainable_params()]
        in_high = {id(p) for p in high}
        low = [p for p in netG.trainable_params() if id(p) not in in_high]
        parts = (matching, label, image, low, high)
        self.weights_matching, self.weights_label, self.weights_image, self.weights_low, self.weights_high = (
            ms.ParameterTuple(part) for part in parts)
        # in construct's order: matching, label encoder, image encoder on the exemplar and on the real image,
        # translation network up to H/2 and from H/2
        self.sources = _gradient_sources(self.weights_G, parts[:3] + parts[2:])
        self.vectors_netG = SpectralVectors(netG)
        self.vectors_corr = SpectralVectors(corr)
        self.vectors_encoder = SpectralVectors(corr.adaptive_model_img, slots=2)  # 0: exemplar's, 1: real's

    def construct(self, seg, ref, ref_seg, real, self_ref):
        batch = (seg, ref, ref_seg, real, self_ref)
        iterated = (self.vectors_netG.iterate(), self.vectors_corr.iterate())
        f_seg = self.label_encoding(ops.depend(seg, iterated))
        f_ref = self.image_encoding(ops.depend(ref, iterated))
        warp_out, warp_mask = self.matching(f_seg, f_ref, seg, ref, ref_seg)
        condition = ops.cat((warp_out, seg), 1)
        x = self.low_resolution(condition)
        fake = self.high_resolution(x, condition)
        # the writes wait for the passes that read the vectors before them (no data path orders those reads)
        iterated = self.vectors_encoder.iterate(after=(f_ref, self.vectors_encoder.save(0)))
        f_real = self.image_encoding(ops.depend(real, iterated))
        out = (fake, warp_out, warp_mask, f_seg, f_real)
        g_outputs, d_out = self.g_grad(out, *batch)
        d_fake, d_warp_out, d_warp_mask, d_f_seg, d_f_real = d_out
        # each part run again from its inputs kept above and pulled back, after the previous part's gradients
        _, pullback = ms.vjp(self.high_resolution, *after((x, condition), d_out), weights=self.weights_high)
        (d_x, d_condition), grads_high = pullback(d_fake)
        _, pullback = ms.vjp(self.low_resolution, ops.depend(condition, grads_high), weights=self.weights_low)
        (d_input,), grads_low = pullback(d_x)
        d_warp_out = d_warp_out + d_condition[:, :3] + d_input[:, :3]
        _, pullback = ms.vjp(self.image_encoding, ops.depend(real, grads_low), weights=self.weights_image)
        _, grads_real = pullback(d_f_real)
        restored = self.vectors_encoder.restore(0, after=(grads_real, self.vectors_encoder.save(1)))
        inputs = after((f_seg, f_ref), grads_real)
        _, pullback = ms.vjp(self.matching, *inputs, seg, ref, ref_seg, weights=self.weights_matching)
        d_inputs, grads_matching = pullback((d_warp_out, d_warp_mask))
        _, pullback = ms.vjp(self.label_encoding, ops.depend(seg, grads_matching), weights=self.weights_label)
        _, grads_label = pullback(d_f_seg + d_inputs[0])
        inputs = ops.depend(ref, (grads_label, restored))
        _, pullback = ms.vjp(self.image_encoding, inputs, weights=self.weights_image)
        _, grads_ref = pullback(d_inputs[1])
        grads_ref = ops.depend(grads_ref, self.vectors_encoder.restore(1, after=grads_ref))
        parts = (grads_matching, grads_label, grads_ref, grads_real, grads_low, grads_high)
        grads = ()
        for k, j, k2, j2 in self.sources:
            grads = grads + ((parts[k][j] + parts[k2][j2],) if k2 >= 0 else (parts[k][j],))
        g_outputs = self.generator_update(g_outputs, grads)
        d_outputs = self.discriminator_step(after(out, g_outputs), after(batch, g_outputs))
        return self.after_step(d_outputs + g_outputs)


def build_train_step(corr, netG, netD, vgg, opt_G, opt_D, weights, *, loss_scale=0, recompute=False):
    """The compiled CoCosNet iteration ``step(seg, ref, ref_seg, real, self_ref)`` -> the 11 losses of
    :data:`LOSS_NAMES` (D's first). ``weights``: keyword arguments of :class:`GeneratorLoss`
    (``weight_gan`` also weighs D's hinge terms). ``recompute``: :class:`RecomputingStep` (less memory, one
    more forward) instead of :class:`common.train.GANTrainStep`."""
    d_loss = DiscriminatorLoss(netD, weights.get("weight_gan", 10.0))
    g_loss = GeneratorLoss(netD, vgg, **weights)
    if recompute:
        return RecomputingStep(corr, netG, d_loss, g_loss, opt_G, opt_D, loss_scale=loss_scale)
    return GANTrainStep(CoCosNetForward(corr, netG), d_loss, g_loss, opt_G, opt_D, generator_inputs=4,
                        order="G_then_D", loss_scale=loss_scale)
