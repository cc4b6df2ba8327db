"""PyTorch restatement of the official CoCosNet networks (microsoft/CoCosNet, ADE20K options): the tests' reference
(``tests/test_cocosnet_import.py``, ``tests/test_cocosnet_model.py``) and the networks of the same-run speed reference
``bench/torch_cocosnet_step.py``.

Module for module as ``models/networks/{correspondence,generator,architecture,normalization,discriminator}.py``
build them, so that ``state_dict()`` holds the official key names (``adaptive_model_seg.layer1.0.weight_orig``,
``head_0.norm_0.mlp_shared.1.weight``, ``discriminator_1.model1.0.0.weight_orig``, ...) and a ``torch.save`` of it
is what the released ``latest_net_{Corr,G,D}.pth`` hold. The widths are parameters (the official code fixes the
SPADE hidden width at 128 and the correspondence's at 4 * 64 features and 256 theta/phi channels); the options are
the ADE20K ones: ``norm_G=spectralspadesyncbatch3x3`` with ``PONO`` (SPADE normalises with the positional norm,
its convolutions plain; the residual blocks' convolutions spectral-normalised), ``norm_E`` / ``norm_D`` =
``spectralinstance`` (spectral norm, the bias removed, then a non-affine instance norm), ``maskmix``, ``PONO_C``,
``match_kernel=3``, ``adaptor_kernel=3``, ``warp_stride=4``, ``CBN_intype=warp_mask``, ``use_attention``, no
``mask_noise`` / ``noise_for_mask`` / ``use_coordconv`` / ``warp_patch`` / ``adaptor_nonlocal`` /
``adaptor_res_deeper``.

Spectral norm is ``torch.nn.utils.spectral_norm``, as in the official code: in training mode each forward runs one
power iteration (under ``no_grad``) and writes ``weight_u`` / ``weight_v``; in eval mode (the official ``test.py``
calls ``model.eval()`` and runs ``mode='inference'`` under ``torch.no_grad()``) it divides by
``sigma = u^T W_orig v`` from the stored vectors, with no iteration. :func:`randomize` gives every network the
weights of a trained checkpoint's kind: random gains, PReLU slopes and attention gains away from their initial
values, and the spectral vectors of one training-mode forward (not the converged singular vectors, so that sigma is
neither 1 nor the largest singular value and a lost or swapped vector shows).
"""
import sys

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["positional_norm", "feature_normalize", "SPADE", "SPADEResnetBlock", "Attention", "ResidualBlock",
           "AdaptiveFeatureGenerator", "NoVGGCorrespondence", "SPADEGenerator", "NLayerDiscriminator",
           "MultiscaleDiscriminator", "randomize"]

spectral_norm = nn.utils.spectral_norm


def positional_norm(x, eps=1e-5):
    """Per sample and pixel over channels: (x - mean) / sqrt(var + eps), torch's unbiased variance."""
    return (x - x.mean(1, keepdim=True)) / (x.var(1, keepdim=True) + eps).sqrt()


def feature_normalize(x):
    """``util.feature_normalize``: divided by the L2 norm over dim 1 plus the float epsilon."""
    return x / (torch.norm(x, 2, 1, keepdim=True) + sys.float_info.epsilon)


def spectral_instance(conv):
    """``get_nonspade_norm_layer(opt, 'spectralinstance')(conv)``: spectral norm, the bias dropped, then a
    non-affine instance norm, as ``Sequential(conv, norm)`` (keys ``0.weight_orig``, ``0.weight_u``, ``0.weight_v``)."""
    conv = spectral_norm(conv)
    del conv.bias
    conv.register_parameter("bias", None)
    return nn.Sequential(conv, nn.InstanceNorm2d(conv.out_channels, affine=False))


class SPADE(nn.Module):
    """``normalization.SPADE('spadesyncbatch3x3', ..., PONO=True)``: reflection-padded 3x3 convolutions."""

    def __init__(self, norm_nc, label_nc, hidden=128):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(label_nc, hidden, 3), nn.ReLU())
        self.pad = nn.ReflectionPad2d(1)
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, 3)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, 3)

    def forward(self, x, segmap):
        normalized = positional_norm(x)
        actv = self.mlp_shared(F.interpolate(segmap, size=x.shape[2:], mode="nearest"))
        return normalized * (1 + self.mlp_gamma(self.pad(actv))) + self.mlp_beta(self.pad(actv))


class SPADEResnetBlock(nn.Module):
    """``architecture.SPADEResnetBlock`` with ``norm_G`` spectral: SPADE, LReLU(0.2), reflection pad, SN 3x3 conv,
    twice; the shortcut a SPADE and an SN 1x1 conv without bias when fin != fout."""

    def __init__(self, fin, fout, ic, hidden=128):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.pad = nn.ReflectionPad2d(1)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, 3))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, 3))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))
        self.norm_0 = SPADE(fin, ic, hidden)
        self.norm_1 = SPADE(fmiddle, ic, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, ic, hidden)

    def forward(self, x, seg):
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(self.pad(F.leaky_relu(self.norm_0(x, seg), 0.2)))
        dx = self.conv_1(self.pad(F.leaky_relu(self.norm_1(dx, seg), 0.2)))
        return x_s + dx


class Attention(nn.Module):
    """``architecture.Attention``: 1x1 convs without bias (SN when ``use_sn``), keys and values 2x2 max-pooled,
    a 0-d gain ``gamma``."""

    def __init__(self, ch, use_sn=True):
        super().__init__()
        wrap = spectral_norm if use_sn else (lambda m: m)
        self.ch = ch
        self.theta = wrap(nn.Conv2d(ch, ch // 8, 1, bias=False))
        self.phi = wrap(nn.Conv2d(ch, ch // 8, 1, bias=False))
        self.g = wrap(nn.Conv2d(ch, ch // 2, 1, bias=False))
        self.o = wrap(nn.Conv2d(ch // 2, ch, 1, bias=False))
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        b, _, h, w = x.shape
        theta = self.theta(x).view(b, self.ch // 8, h * w)
        phi = F.max_pool2d(self.phi(x), 2).view(b, self.ch // 8, h * w // 4)
        g = F.max_pool2d(self.g(x), 2).view(b, self.ch // 2, h * w // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)  # [B, HW, HW/4]
        return self.gamma * self.o(torch.bmm(g, beta.transpose(1, 2)).view(b, self.ch // 2, h, w)) + x


class ResidualBlock(nn.Module):
    """``correspondence.ResidualBlock``: pad, conv, IN, PReLU, pad, conv, IN, + x, the same PReLU."""

    def __init__(self, ch):
        super().__init__()
        self.padding1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(ch, ch, 3)
        self.bn1 = nn.InstanceNorm2d(ch)
        self.prelu = nn.PReLU()
        self.padding2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(ch, ch, 3)
        self.bn2 = nn.InstanceNorm2d(ch)

    def forward(self, x):
        out = self.prelu(self.bn1(self.conv1(self.padding1(x))))
        return self.prelu(self.bn2(self.conv2(self.padding2(out))) + x)


class AdaptiveFeatureGenerator(nn.Module):
    """``generator.AdaptiveFeatureGenerator``: five ``spectralinstance`` 3x3 convs (stride 2 at layers 2 and 4,
    LReLU(0.2) between), then three SPADE blocks modulated by ``seg`` (the encoder's input)."""

    def __init__(self, ic, ngf=64, hidden=128):
        super().__init__()
        self.layer1 = spectral_instance(nn.Conv2d(ic, ngf, 3, stride=1, padding=1))
        self.layer2 = spectral_instance(nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1))
        self.layer3 = spectral_instance(nn.Conv2d(2 * ngf, 4 * ngf, 3, stride=1, padding=1))
        self.layer4 = spectral_instance(nn.Conv2d(4 * ngf, 8 * ngf, 3, stride=2, padding=1))
        self.layer5 = spectral_instance(nn.Conv2d(8 * ngf, 8 * ngf, 3, stride=1, padding=1))
        self.actvn = nn.LeakyReLU(0.2, False)
        self.head_0 = SPADEResnetBlock(8 * ngf, 8 * ngf, ic, hidden)
        self.G_middle_0 = SPADEResnetBlock(8 * ngf, 8 * ngf, ic, hidden)
        self.G_middle_1 = SPADEResnetBlock(8 * ngf, 4 * ngf, ic, hidden)

    def forward(self, input, seg):
        x = self.layer1(input)
        for layer in (self.layer2, self.layer3, self.layer4, self.layer5):
            x = layer(self.actvn(x))
        x = self.head_0(x, seg)
        x = self.G_middle_0(x, seg)
        return self.G_middle_1(x, seg)


class NoVGGCorrespondence(nn.Module):
    """``correspondence.NoVGGCorrespondence`` (``WTA_scale_weight`` 1).

    ``forward(ref_img, real_img, seg_map, ref_seg_map)`` -> ``{'warp_out': [B,3,H,W], 'warp_mask': [B,L,H/4,W/4]}``,
    and with a ``real_img`` (training, ``novgg_featpair`` 10) the domain-alignment term ``'loss_novgg_featpair'``:
    10 * L1 between the label map's and the real image's normalised features.
    The official ``F.softmax(f.squeeze(), -1)`` drops the batch axis at batch 1 and broadcasts it back in the
    next matmul; the softmax here keeps it (the same values).
    """

    def __init__(self, label_nc, ngf=64, corr_channels=256, hidden=128, down=4):
        super().__init__()
        self.adaptive_model_seg = AdaptiveFeatureGenerator(label_nc, ngf, hidden)
        self.adaptive_model_img = AdaptiveFeatureGenerator(3, ngf, hidden)
        self.down = down
        self.inter_channels = corr_channels
        ch = 4 * ngf + label_nc
        self.layer = nn.Sequential(*[ResidualBlock(ch) for _ in range(4)])
        self.phi = nn.Conv2d(ch, corr_channels, 1)
        self.theta = nn.Conv2d(ch, corr_channels, 1)
        self.upsampling = nn.Upsample(scale_factor=down)  # nearest

    @staticmethod
    def _matching_vectors(x):
        """3x3 unfold, each position's vector centred over its dimensions (PONO_C) and L2-normalised."""
        x = F.unfold(x, kernel_size=3, padding=1)
        x = x - x.mean(dim=1, keepdim=True)
        return torch.div(x, torch.norm(x, 2, 1, keepdim=True) + sys.float_info.epsilon)

    def forward(self, ref_img, real_img, seg_map, ref_seg_map, temperature=0.01):
        b, _, height, width = ref_img.shape
        fh, fw = int(height / self.down), int(width / self.down)
        f_seg = feature_normalize(self.adaptive_model_seg(seg_map, seg_map))
        f_img = feature_normalize(self.adaptive_model_img(ref_img, ref_img))
        out = {}
        if real_img is not None:
            f_real = feature_normalize(self.adaptive_model_img(real_img, real_img))
            out["loss_novgg_featpair"] = F.l1_loss(f_seg, f_real) * 10
        seg = F.interpolate(seg_map, size=f_seg.shape[2:], mode="nearest")
        ref_seg = F.interpolate(ref_seg_map, size=f_img.shape[2:], mode="nearest")
        cont_features = self.layer(torch.cat((f_seg, seg), 1))
        ref_features = self.layer(torch.cat((f_img, ref_seg), 1))
        theta = self._matching_vectors(self.theta(cont_features)).permute(0, 2, 1)
        phi = self._matching_vectors(self.phi(ref_features))
        f_div_c = F.softmax(torch.matmul(theta, phi) / temperature, dim=-1)  # [B, N, N]
        ref = F.avg_pool2d(ref_img, self.down).view(b, 3, -1).permute(0, 2, 1)
        y = torch.matmul(f_div_c, ref).permute(0, 2, 1).contiguous().view(b, 3, fh, fw)
        ref_seg = F.interpolate(ref_seg_map, scale_factor=1 / self.down, mode="nearest")
        channel = ref_seg.shape[1]
        warp_mask = torch.matmul(f_div_c, ref_seg.view(b, channel, -1).permute(0, 2, 1))
        return dict(out, warp_out=self.upsampling(y),
                    warp_mask=warp_mask.permute(0, 2, 1).contiguous().view(b, channel, fh, fw))


class SPADEGenerator(nn.Module):
    """``generator.SPADEGenerator`` with ``CBN_intype=warp_mask`` and attention: the conditioning map
    [warp_out, one-hot] resized to crop_size/32, fc, head_0, x2, G_middle_0, G_middle_1, x2, up_0, x2, up_1, x2,
    attn, up_2, x2, up_3, LReLU(0.2), conv_img, tanh; every block gets the full-size map (its SPADEs resize it)."""

    def __init__(self, label_nc, ngf=64, hidden=128, crop_size=256, aspect_ratio=1.0):
        super().__init__()
        nf = ngf
        self.sw = crop_size // 2 ** 5
        self.sh = round(self.sw / aspect_ratio)
        ic = 3 + label_nc
        self.fc = nn.Conv2d(ic, 16 * nf, 3, padding=1)
        self.head_0 = SPADEResnetBlock(16 * nf, 16 * nf, ic, hidden)
        self.G_middle_0 = SPADEResnetBlock(16 * nf, 16 * nf, ic, hidden)
        self.G_middle_1 = SPADEResnetBlock(16 * nf, 16 * nf, ic, hidden)
        self.up_0 = SPADEResnetBlock(16 * nf, 8 * nf, ic, hidden)
        self.up_1 = SPADEResnetBlock(8 * nf, 4 * nf, ic, hidden)
        self.attn = Attention(4 * nf, True)
        self.up_2 = SPADEResnetBlock(4 * nf, 2 * nf, ic, hidden)
        self.up_3 = SPADEResnetBlock(2 * nf, 1 * nf, ic, hidden)
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)  # nearest

    def forward(self, input, warp_out=None):
        seg = input if warp_out is None else warp_out
        x = self.fc(F.interpolate(seg, size=(self.sh, self.sw)))
        x = self.head_0(x, seg)
        x = self.G_middle_0(self.up(x), seg)
        x = self.G_middle_1(x, seg)
        x = self.up_0(self.up(x), seg)
        x = self.up_1(self.up(x), seg)
        x = self.up_2(self.attn(self.up(x)), seg)
        x = self.up_3(self.up(x), seg)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 2e-1)))


class NLayerDiscriminator(nn.Module):
    """``discriminator.NLayerDiscriminator`` (``n_layers_D`` 4, ``spectralinstance``, attention): every layer's
    output. ``semantic_nc`` registers the segmentation decoder ``dec`` that the official code builds and never
    calls (its keys are in the released ``latest_net_D.pth``); None leaves it out."""

    def __init__(self, input_nc, ndf=64, n_layers=4, semantic_nc=None):
        super().__init__()
        nf = ndf
        sequence = [[nn.Conv2d(input_nc, nf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, False)]]
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            last = n == n_layers - 1
            if last:
                self.attn = Attention(nf_prev, True)
                if semantic_nc is not None:
                    dec, nc = [], nf_prev
                    for _ in range(n_layers - 1):
                        dec += [nn.Upsample(scale_factor=2),
                                spectral_instance(nn.Conv2d(nc, nc // 2, 3, stride=1, padding=1)),
                                nn.LeakyReLU(0.2, False)]
                        nc //= 2
                    self.dec = nn.Sequential(*dec, nn.Conv2d(nc, semantic_nc, 3, stride=1, padding=1))
            sequence += [[spectral_instance(nn.Conv2d(nf_prev, nf, 4, stride=1 if last else 2, padding=1)),
                          nn.LeakyReLU(0.2, False)]]
        sequence += [[nn.Conv2d(nf, 1, 4, stride=1, padding=1)]]
        for n, layers in enumerate(sequence):
            self.add_module(f"model{n}", nn.Sequential(*layers))
        self.n_models = len(sequence)

    def forward(self, input):
        results = [input]
        for n in range(self.n_models):
            x = results[-1]
            if n == self.n_models - 2:  # model3: attention first
                x = self.attn(x)
            results.append(getattr(self, f"model{n}")(x))
        return results[1:]


class MultiscaleDiscriminator(nn.Module):
    """``discriminator.MultiscaleDiscriminator``: ``num_D`` PatchGANs, the input average-pooled (3x3, stride 2,
    padding 1, padding excluded from the mean) between scales -> one list of layer outputs per scale."""

    def __init__(self, input_nc, ndf=64, num_D=2, semantic_nc=None):
        super().__init__()
        for i in range(num_D):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(input_nc, ndf, 4, semantic_nc))

    def forward(self, input):
        result = []
        for d in self.children():
            result.append(d(input))
            input = F.avg_pool2d(input, kernel_size=3, stride=2, padding=[1, 1], count_include_pad=False)
        return result


def randomize(net, *inputs, seed=0):
    """Weights of a trained checkpoint's kind, in place; returns ``net`` in eval mode.

    PReLU slopes uniform in [0.05, 0.5] and attention gains in +-[0.3, 1] (their initial 0.25 and 0 would hide a
    wrong mapping), the convolutions PyTorch's initialisation; then one training-mode forward on ``inputs`` under
    ``no_grad`` (each spectral norm's power iteration from its random start writes ``weight_u`` / ``weight_v``, as
    the last training step did), then eval mode, where ``sigma = u^T W v`` from those vectors.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("prelu.weight"):
                p.copy_(0.05 + 0.45 * torch.rand(p.shape, generator=gen))
            elif name.endswith("attn.gamma"):
                sign = 1.0 if torch.rand((), generator=gen) < 0.5 else -1.0
                p.fill_(sign * float(0.3 + 0.7 * torch.rand((), generator=gen)))
        net.train()
        net(*inputs)
    return net.eval()
