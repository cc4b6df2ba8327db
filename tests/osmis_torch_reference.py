"""A compact PyTorch restatement of the official OSMIS / SIV-GAN networks and losses, for parity tests.

Restated from ``boschresearch/one-shot-synthesis`` (AGPL; read, not copied): ``core/models.py`` (Generator,
G_block, Discriminator with ``content_masked_attention``, D_block), ``core/utils.py`` (``to_rgb``, ``from_rgb``,
``to_decision``, ``preprocess_real``), ``core/losses.py`` (``losses_computer`` with BCE, ``content_segm_loss`` and
``diversity_regularization``) and ``train.py`` (what the G step and the D step feed D and the losses). Every
convolution the reference wraps in ``torch.nn.utils.spectral_norm`` is wrapped here too (one power iteration per
forward in training mode).

What is left out, and why the parity test does not need it:

* feature augmentation (``core/feature_augmentation.py``): at ``prob_FA_con = prob_FA_lay = 0`` every branch of
  ``Content_FA`` / ``Layout_FA`` is skipped (each op fires on ``random.random() < prob``), so both are the identity;
* image augmentation (``AugmentPipe_kornia``): with ``prob_augm = 0`` no op fires, but the pipeline still resizes
  every image scale to the full resolution and back (bilinear, ``combine_fakes`` / ``detach_fakes``), which blurs
  the lower scales; :func:`augment_roundtrip` restates that part (the port's augmentation does not do it: see
  ``osmis/README.md``, differences);
* norms other than ``none`` (the reference's default), the ``hinge`` / ``wgan`` losses, EMA and the optimisers.

The fake masks' Bernoulli hardening takes its uniform draws as an argument (``hard = u < clamp(p)``, the definition
of ``torch.bernoulli``) so that both sides can be fed the same draw.

Module and parameter names follow the MindSpore cells (``osmis.src.model``), so :func:`copy_from_mindspore` maps
them one to one (``X.conv.weight`` -> ``X.weight_orig``, ``X.conv.bias`` -> ``X.bias``).
"""
import torch
import torch.nn.functional as F
from torch import nn

SN = nn.utils.spectral_norm
G_CHANNELS = (8, 8, 8, 8, 8, 8, 8, 4, 2, 1)
D_CHANNELS = (1, 2, 4, 8, 8, 8, 8, 8, 8)


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def sn_conv(cin, cout, k, bias=True):
    return SN(nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias))


class GBlock(nn.Module):
    """``G_block``: norm, LReLU, up, conv1, norm, LReLU, conv2; shortcut up, then conv_sc (1x1, no bias)."""

    def __init__(self, cin, cout, first):
        super().__init__()
        mid = min(cin, cout)
        self.first = first
        self.conv1, self.conv2 = sn_conv(cin, mid, 3), sn_conv(mid, cout, 3)
        self.conv_sc = sn_conv(cin, cout, 1, bias=False)

    def ups(self, x):
        return x if self.first else F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, x):
        h = x
        x = self.conv2(lrelu(self.conv1(self.ups(lrelu(x)))))
        return self.conv_sc(self.ups(h)) + x


class Generator(nn.Module):
    """``Generator.generate(z, get_feat=True)`` -> {"images": [G], "features": [G], "masks": softmax (OSMIS)}."""

    def __init__(self, noise_shape, num_blocks, num_mask_channels, ch_G, noise_dim=64):
        super().__init__()
        chs = [int(m * ch_G) for m in G_CHANNELS][-num_blocks - 1:]
        self.first_linear = nn.ConvTranspose2d(noise_dim, chs[0], tuple(noise_shape))
        self.body = nn.ModuleList([GBlock(chs[i], chs[i + 1], i == 0) for i in range(num_blocks)])
        self.rgb_converters = nn.ModuleList([sn_conv(chs[i + 1], 3, 3) for i in range(num_blocks)])
        self.masks = num_mask_channels > 0
        if self.masks:
            self.mask_converter = nn.Conv2d(chs[-1], num_mask_channels, 3, padding=1, bias=True)

    def forward(self, z):
        x = self.first_linear(z)
        images, features = [], []
        for block, to_rgb in zip(self.body, self.rgb_converters):
            x = block(x)
            images.append(torch.tanh(to_rgb(x)))
            features.append(torch.tanh(x))
        out = {"images": images, "features": features}
        if self.masks:
            out["masks"] = F.softmax(self.mask_converter(x), dim=1)
        return out


class DBlock(nn.Module):
    """``D_block``: [norm, LReLU] conv1, norm, LReLU, conv2, pool; shortcut conv_sc (or identity), pool."""

    def __init__(self, cin, cout, first=False, only_content=False):
        super().__init__()
        mid = min(cin, cout)
        k = 1 if only_content else 3
        self.first, self.pool = first, not only_content
        self.conv1, self.conv2 = sn_conv(cin, mid, k), sn_conv(mid, cout, k)
        self.learned_sc = cin != cout or not only_content
        if self.learned_sc:
            self.conv_sc = sn_conv(cin, cout, 1, bias=False)

    def forward(self, x):
        h = x
        if not self.first:
            x = lrelu(x)
        x = self.conv2(lrelu(self.conv1(x)))
        if self.pool:
            x = F.avg_pool2d(x, 2)
        if self.learned_sc:
            h = self.conv_sc(h)
        if self.pool:
            h = F.avg_pool2d(h, 2)
        return x + h


class Discriminator(nn.Module):
    """``Discriminator.discriminate`` with masked content attention; feature augmentation at probability 0."""

    def __init__(self, num_blocks, num_blocks_ll, num_mask_channels, ch_D, bernoulli_warmup):
        super().__init__()
        chs = [int(m * ch_D) for m in D_CHANNELS][:num_blocks + 1]
        self.masks = num_mask_channels > 0
        if self.masks:
            for i in range(num_blocks_ll + 1, num_blocks):
                chs[i] *= 2
        self.num_blocks, self.num_blocks_ll = num_blocks, num_blocks_ll
        self.bernoulli_warmup = bernoulli_warmup
        self.body_ll, self.rgb_to_features, self.final_ll = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(num_blocks_ll):
            msg = chs[i] // 8 if i > 0 else chs[0]
            cin = chs[i] + msg if i > 0 else chs[0]
            self.body_ll.append(DBlock(cin, chs[i + 1], first=i == 0))
            self.rgb_to_features.append(sn_conv(3, msg, 3))
            self.final_ll.append(sn_conv(chs[i + 1], 1, 1))
        n_out = num_mask_channels + 1 if self.masks else 1
        ks = range(num_blocks_ll, num_blocks)
        self.body_content = nn.ModuleList([DBlock(chs[i], chs[i + 1], only_content=True) for i in ks])
        self.final_content = nn.ModuleList([sn_conv(chs[i + 1], n_out, 1) for i in ks])
        self.body_layout = nn.ModuleList([DBlock(chs[i] if i == num_blocks_ll else 1, 1) for i in ks])
        self.final_layout = nn.ModuleList([sn_conv(1, 1, 1) for _ in ks])

    def content_masked_attention(self, y, mask, for_real, epoch, uniform):
        """Per-class masked features stacked class-major on the batch axis; fakes hardened (straight through)."""
        mask = F.interpolate(mask, size=y.shape[2:], mode="nearest")
        if not for_real:
            soft = mask
            if epoch < self.bernoulli_warmup:
                hard = (uniform < torch.clamp(soft, 0.001, 0.999)).to(soft.dtype)
            else:
                hard = F.one_hot(torch.argmax(soft, dim=1), num_classes=soft.shape[1]).permute(0, 3, 1, 2)
            mask = hard - soft.detach() + soft
        return torch.cat([mask[:, c:c + 1] * y for c in range(mask.shape[1])], dim=0)

    def forward(self, images, masks=None, for_real=True, epoch=0, uniform=None):
        """``images``: the scales low to high (D uses the last ``num_blocks_ll``); ``masks`` full resolution."""
        out = {"low-level": [], "content": [], "layout": []}
        y = self.rgb_to_features[0](images[-1])
        for i in range(self.num_blocks_ll):
            if i > 0:
                y = torch.cat((y, self.rgb_to_features[i](images[-i - 1])), dim=1)
            y = self.body_ll[i](y)
            out["low-level"].append(self.final_ll[i](y))
        y_con = self.content_masked_attention(y, masks, for_real, epoch, uniform) if self.masks else y
        y_con = torch.mean(y_con, dim=(2, 3), keepdim=True)
        for block, final in zip(self.body_content, self.final_content):
            y_con = block(y_con)
            out["content"].append(final(y_con))
        y_lay = y
        for block, final in zip(self.body_layout, self.final_layout):
            y_lay = block(y_lay)
            out["layout"].append(final(y_lay))
        return out


def real_pyramid(image, num_blocks_ll):
    """``preprocess_real``: bilinear x0.5 (align_corners=False) ``num_blocks_ll - 1`` times, low to high."""
    scales = [image]
    for _ in range(num_blocks_ll - 1):
        scales.append(F.interpolate(scales[-1], scale_factor=0.5, mode="bilinear", align_corners=False,
                                    recompute_scale_factor=False))
    return scales[::-1]


def augment_roundtrip(images):
    """What ``AugmentPipe_kornia`` does to the image scales when no op fires: each scale resized (bilinear,
    align_corners=False) to the largest and back."""
    full = images[-1].shape[2:]
    return [F.interpolate(F.interpolate(x, size=full, mode="bilinear"), size=x.shape[2:], mode="bilinear")
            for x in images]


class Losses:
    """``losses_computer`` with ``loss_mode bce``: per-output sums per branch, weighted 1/D, 0.5/D, 0.5/D."""

    def __init__(self, num_blocks_d, masks, lambda_DR):
        self.masks = masks
        self.lambdas = {"content": 0.5 / num_blocks_d, "layout": 0.5 / num_blocks_d,
                        "low-level": 1.0 / num_blocks_d, "DR": lambda_DR}

    @staticmethod
    def bce(x, real):
        return F.binary_cross_entropy_with_logits(x, torch.full_like(x, 1.0 if real else 0.0))

    @staticmethod
    def content_segm(x, mask, real):
        c = mask.shape[1]
        if real:
            target = torch.arange(c).repeat_interleave(mask.shape[0])
        else:
            target = torch.full((x.shape[0],), c, dtype=torch.long)
        target = target[:, None, None].expand(-1, x.shape[2], x.shape[3])
        weights = torch.cat((1 / torch.sum(mask.detach(), dim=(0, 2, 3)), torch.ones(1)))
        weights[weights == float("inf")] = 0
        return F.cross_entropy(x, target, weight=weights)

    @staticmethod
    def diversity(features):
        ans = 0
        for f in features:
            for k in range(f.shape[0]):
                for m in range(k + 1, f.shape[0]):
                    ans = ans - F.l1_loss(f[k], f[m])
        return ans * 2 / (len(features) * (len(features) - 1))

    def __call__(self, out_d, mask, real, features=None):
        losses = {}
        for item, outputs in out_d.items():
            for x in outputs:
                if item == "content" and self.masks:
                    term = self.content_segm(x, mask, real)
                else:
                    term = self.bce(x, real)
                losses[item] = losses.get(item, 0) + term
        if features is not None:
            losses["DR"] = self.diversity(features)
        return {k: v * self.lambdas[k] for k, v in losses.items()}


def g_step_losses(netG, netD, losses, z, epoch, uniform, roundtrip=False):
    """``train.py``'s G step up to the backward: G(z) with features, D on the fakes (``for_real=False``), the
    losses against 'real'. Returns (G outputs, D outputs, loss dict)."""
    out = netG(z)
    images = augment_roundtrip(out["images"]) if roundtrip else out["images"]
    mask = out.get("masks")
    logits = netD(images, mask, for_real=False, epoch=epoch, uniform=uniform)
    return out, logits, losses(logits, mask, real=True, features=out["features"])


def d_step_losses(netG, netD, losses, image, mask, z, epoch, uniform, roundtrip=False):
    """``train.py``'s D step up to the optimiser step: D on the real pyramid (``for_real=True``), then on G(z) of a
    new noise batch drawn under no_grad. Returns (real outputs, fake outputs, real losses, fake losses)."""
    reals = real_pyramid(image, netD.num_blocks_ll)
    if roundtrip:
        reals = augment_roundtrip(reals)
    real_out = netD(reals, mask, for_real=True, epoch=epoch)
    with torch.no_grad():
        fake = netG(z)
    images = augment_roundtrip(fake["images"]) if roundtrip else fake["images"]
    fake_mask = fake.get("masks")
    fake_out = netD(images, fake_mask, for_real=False, epoch=epoch, uniform=uniform)
    return real_out, fake_out, losses(real_out, mask, real=True), losses(fake_out, fake_mask, real=False)


def torch_name(ms_name):
    """The parameter or buffer of these modules that holds the MindSpore parameter ``ms_name``."""
    if ms_name.endswith(".conv.weight"):
        return ms_name[:-len(".conv.weight")] + ".weight_orig"
    if ms_name.endswith(".conv.bias"):
        return ms_name[:-len(".conv.bias")] + ".bias"
    return ms_name


def copy_from_mindspore(module, cell):
    """Copy every parameter (and spectral-norm u, v) of the MindSpore ``cell`` into ``module``; returns the name map
    {MindSpore name: torch name}. D's ``iteration`` counter has no counterpart (the step passes ``epoch``)."""
    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    names = {}
    with torch.no_grad():
        for p in cell.get_parameters():
            if p.name == "iteration":
                continue
            name = torch_name(p.name)
            target = state.pop(name)
            value = torch.from_numpy(p.asnumpy().copy())
            assert tuple(target.shape) == tuple(value.shape), (p.name, target.shape, value.shape)
            target.copy_(value)
            names[p.name] = name
    assert not state, f"torch tensors without a MindSpore parameter: {sorted(state)}"
    return names
