"""PyTorch restatement of one CoCosNet (ADE20K, 256x256) training iteration, for a same-run speed comparison.

    python bench/torch_cocosnet_step.py SIZE [--steps 3] [--inference] [--serve]

The official code's networks at its ADE20K widths (``microsoft/CoCosNet``: ``NoVGGCorrespondence``,
``SPADEGenerator`` with positional norm and attention, the two-scale ``MultiscaleDiscriminator``; spectral norm
through ``torch.nn.utils.spectral_norm``, one power iteration per call), a VGG19 of the official layout for the
losses, and the official iteration: the G step (correspondence with the real image's domain-alignment pass, the
loss VGG on exemplar and real without a graph, translation, D on [fake, real] as one batch, hinge GAN x10,
D feature matching x10, VGG feature matching, relu5_2 perceptual x0.01, contextual loss x10, domain alignment
x10, warped-mask loss x100, Adam(1e-4, (0, 0.9), eps 1e-3) over G and the correspondence), then the D step
(D on [fake.detach().requires_grad_(), real], hinge x10, Adam(4e-4, (0, 0.9))). As in the official code the G step's backward
also fills D's weight gradients (D's parameters keep ``requires_grad``). Batch 1, one-hot label maps of 151
channels, a self-exemplar sample (every loss term active), flush-to-zero on (the issue's reference figure was
measured with it). A benchmark, not a port: PyTorch's default initialisation, random VGG weights, and the
unused decoder the official D registers (430,711 parameters per scale, never called) left out.
Prints the parameter counts, the median seconds per iteration (and of its G and D steps) and the peak RSS;
``--inference``: the median seconds of one translation (correspondence, then translation) under ``no_grad``;
``--serve``: after the warm-up, one iteration per line read from stdin (``bench/train_step.py --paired``).
"""
import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

SN = nn.utils.spectral_norm
LABELS = 151  # ADE20K's 150 classes + "other"
EPS = sys.float_info.epsilon


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def l2_normalize(x):
    """Divide by the L2 norm over dim 1 (+ machine epsilon), the official ``feature_normalize``."""
    return x / (torch.norm(x, 2, 1, keepdim=True) + EPS)


def positional_norm(x):
    """(x - mean) / sqrt(var + 1e-5) over channels per pixel, with torch's unbiased variance (the official PONO)."""
    return (x - x.mean(1, keepdim=True)) / x.var(1, keepdim=True).add(1e-5).sqrt()


class SPADE(nn.Module):
    """Positional norm modulated by (1 + gamma, beta) from the nearest-resized conditioning map; reflection pads."""

    def __init__(self, channels, label_nc, hidden=128):
        super().__init__()
        self.shared = nn.Conv2d(label_nc, hidden, 3)
        self.gamma = nn.Conv2d(hidden, channels, 3)
        self.beta = nn.Conv2d(hidden, channels, 3)

    def forward(self, x, seg):
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = F.pad(F.relu(self.shared(F.pad(seg, (1,) * 4, mode="reflect"))), (1,) * 4, mode="reflect")
        return positional_norm(x) * (1 + self.gamma(actv)) + self.beta(actv)


class SPADEResnetBlock(nn.Module):
    """SPADE -> LReLU -> pad -> SN conv3 twice, plus a learned SPADE + SN 1x1 shortcut when fin != fout."""

    def __init__(self, fin, fout, label_nc):
        super().__init__()
        mid = min(fin, fout)
        self.conv_0, self.conv_1 = SN(nn.Conv2d(fin, mid, 3)), SN(nn.Conv2d(mid, fout, 3))
        self.norm_0, self.norm_1 = SPADE(fin, label_nc), SPADE(mid, label_nc)
        self.learned = fin != fout
        if self.learned:
            self.conv_s, self.norm_s = SN(nn.Conv2d(fin, fout, 1, bias=False)), SPADE(fin, label_nc)

    def forward(self, x, seg):
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned else x
        pad = lambda t: F.pad(t, (1,) * 4, mode="reflect")  # noqa: E731
        dx = self.conv_0(pad(lrelu(self.norm_0(x, seg))))
        dx = self.conv_1(pad(lrelu(self.norm_1(dx, seg))))
        return shortcut + dx


class Attention(nn.Module):
    """SAGAN attention (SN 1x1 convs, no bias; keys and values max-pooled 2x2), gamma initialised to 0."""

    def __init__(self, ch):
        super().__init__()
        self.theta, self.phi = SN(nn.Conv2d(ch, ch // 8, 1, bias=False)), SN(nn.Conv2d(ch, ch // 8, 1, bias=False))
        self.g, self.o = SN(nn.Conv2d(ch, ch // 2, 1, bias=False)), SN(nn.Conv2d(ch // 2, ch, 1, bias=False))
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        b, c, h, w = x.shape
        theta = self.theta(x).view(b, c // 8, h * w)
        phi = F.max_pool2d(self.phi(x), 2).view(b, c // 8, h * w // 4)
        g = F.max_pool2d(self.g(x), 2).view(b, c // 2, h * w // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
        return self.gamma * self.o(torch.bmm(g, beta.transpose(1, 2)).view(b, c // 2, h, w)) + x


def sn_instance(cin, cout, kernel, stride, padding):
    """Spectral-normalised convolution without bias, then a non-affine instance norm (``spectralinstance``)."""
    return nn.Sequential(SN(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)), nn.InstanceNorm2d(cout))


class AdaptiveFeatureGenerator(nn.Module):
    """Domain encoder: five SN+IN convolutions (two of stride 2) and three SPADE blocks at 1/4 size -> 256 ch."""

    def __init__(self, ic, nf=64):
        super().__init__()
        self.layers = nn.ModuleList([sn_instance(ic, nf, 3, 1, 1), sn_instance(nf, 2 * nf, 3, 2, 1),
                                     sn_instance(2 * nf, 4 * nf, 3, 1, 1), sn_instance(4 * nf, 8 * nf, 3, 2, 1),
                                     sn_instance(8 * nf, 8 * nf, 3, 1, 1)])
        self.blocks = nn.ModuleList([SPADEResnetBlock(8 * nf, 8 * nf, ic), SPADEResnetBlock(8 * nf, 8 * nf, ic),
                                     SPADEResnetBlock(8 * nf, 4 * nf, ic)])

    def forward(self, x):
        seg = x
        for i, layer in enumerate(self.layers):
            x = layer(lrelu(x) if i else x)
        for block in self.blocks:
            x = block(x, seg)
        return x


class ResidualBlock(nn.Module):
    """reflection pad -> conv3 -> IN -> PReLU -> pad -> conv3 -> IN, + x, PReLU (one PReLU weight per block)."""

    def __init__(self, ch):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(ch, ch, 3), nn.Conv2d(ch, ch, 3)
        self.prelu = nn.PReLU()

    def forward(self, x):
        out = self.prelu(F.instance_norm(self.conv1(F.pad(x, (1,) * 4, mode="reflect"))))
        return self.prelu(F.instance_norm(self.conv2(F.pad(out, (1,) * 4, mode="reflect"))) + x)


class Correspondence(nn.Module):
    """``NoVGGCorrespondence``: both encoders, shared residual blocks on [features, 1/4-size one-hot map],
    3x3-unfolded features centred and L2-normalised per position, softmax(f / 0.01) over the exemplar's
    positions, the exemplar (average-pooled by 4) and its one-hot map warped at 1/4 size."""

    def __init__(self):
        super().__init__()
        self.seg_encoder, self.img_encoder = AdaptiveFeatureGenerator(LABELS), AdaptiveFeatureGenerator(3)
        ch = 256 + LABELS
        self.layer = nn.Sequential(*[ResidualBlock(ch) for _ in range(4)])
        self.theta, self.phi = nn.Conv2d(ch, 256, 1), nn.Conv2d(ch, 256, 1)

    @staticmethod
    def matching(x):
        x = F.unfold(x, 3, padding=1)  # [B, 2304, N]
        return l2_normalize(x - x.mean(1, keepdim=True))

    def forward(self, ref, real, seg, ref_seg):
        f_seg = l2_normalize(self.seg_encoder(seg))
        f_img = l2_normalize(self.img_encoder(ref))
        align = None
        if real is not None:
            align = F.l1_loss(f_seg, l2_normalize(self.img_encoder(real))) * 10
        size = f_seg.shape[2:]
        cont = self.layer(torch.cat((f_seg, F.interpolate(seg, size=size, mode="nearest")), 1))
        ref_features = self.layer(torch.cat((f_img, F.interpolate(ref_seg, size=size, mode="nearest")), 1))
        theta, phi = self.matching(self.theta(cont)), self.matching(self.phi(ref_features))
        corr = F.softmax(torch.matmul(theta.permute(0, 2, 1), phi) / 0.01, dim=-1)  # [B, N, N]
        b, h, w = ref.shape[0], size[0], size[1]
        colour = F.avg_pool2d(ref, 4).view(b, 3, -1).permute(0, 2, 1)
        warped = torch.matmul(corr, colour).permute(0, 2, 1).reshape(b, 3, h, w)
        ref_mask = F.interpolate(ref_seg, size=size, mode="nearest").view(b, LABELS, -1).permute(0, 2, 1)
        warp_mask = torch.matmul(corr, ref_mask).permute(0, 2, 1).reshape(b, LABELS, h, w)
        return F.interpolate(warped, scale_factor=4, mode="nearest"), warp_mask, align


class Generator(nn.Module):
    """``SPADEGenerator``: [warped exemplar, label map] (154 ch) resized to 1/32 -> conv 1024 -> seven SPADE
    blocks with nearest x2 between (attention before the 128x128 block) -> LReLU -> conv3 -> tanh."""

    def __init__(self, nf=64, ic=3 + LABELS):
        super().__init__()
        self.fc = nn.Conv2d(ic, 16 * nf, 3, padding=1)
        widths = [(16, 16), (16, 16), (16, 16), (16, 8), (8, 4), (4, 2), (2, 1)]
        self.blocks = nn.ModuleList([SPADEResnetBlock(a * nf, b * nf, ic) for a, b in widths])
        self.attn = Attention(4 * nf)
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, cond):
        x = self.fc(F.interpolate(cond, size=(cond.shape[2] // 32, cond.shape[3] // 32), mode="nearest"))
        for i, block in enumerate(self.blocks):
            if i in (1, 3, 4, 5, 6):
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            if i == 5:
                x = self.attn(x)
            x = block(x, cond)
        return torch.tanh(self.conv_img(lrelu(x)))


class PatchGAN(nn.Module):
    """``NLayerDiscriminator`` (4 layers, ndf 64, kernel 4): every layer's output returned; attention before
    the stride-1 512-channel layer."""

    def __init__(self, ic=3 + LABELS, nf=64):
        super().__init__()
        self.model0 = nn.Conv2d(ic, nf, 4, 2, 1)
        self.model1, self.model2 = sn_instance(nf, 2 * nf, 4, 2, 1), sn_instance(2 * nf, 4 * nf, 4, 2, 1)
        self.attn = Attention(4 * nf)
        self.model3 = sn_instance(4 * nf, 8 * nf, 4, 1, 1)
        self.model4 = nn.Conv2d(8 * nf, 1, 4, 1, 1)

    def forward(self, x):
        outs = [lrelu(self.model0(x))]
        outs.append(lrelu(self.model1(outs[-1])))
        outs.append(lrelu(self.model2(outs[-1])))
        outs.append(lrelu(self.model3(self.attn(outs[-1]))))
        outs.append(self.model4(outs[-1]))
        return outs


class MultiscaleDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.scales = nn.ModuleList([PatchGAN(), PatchGAN()])

    def forward(self, x):
        result = []
        for d in self.scales:
            result.append(d(x))
            x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        return result


class VGG19(nn.Module):
    """The official loss VGG's layout (``conv1_1`` ... ``conv5_4``, max pooling); Caffe-style input."""

    CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
    TAPS = {1: "r12", 3: "r22", 5: "r32", 9: "r42", 13: "r52"}  # conv index (0-based, pools skipped) -> name

    def __init__(self):
        super().__init__()
        convs, cin = [], 3
        for v in self.CFG:
            if v != "M":
                convs.append(nn.Conv2d(cin, v, 3, padding=1))
                cin = v
        self.convs = nn.ModuleList(convs)
        self.register_buffer("mean", torch.tensor([0.40760392, 0.45795686, 0.48501961]).view(1, 3, 1, 1))

    def forward(self, x):
        x = (torch.flip((x + 1) / 2, [1]) - self.mean) * 255
        out, k = [], 0
        for v in self.CFG:
            if v == "M":
                x = F.max_pool2d(x, 2)
                continue
            x = F.relu(self.convs[k](x))
            if k in self.TAPS:
                out.append(x)
            if k == max(self.TAPS):  # the layers after relu5_2 feed no loss
                break
            k += 1
        return out


def contextual(x, y, h=0.1):
    """The official ``ContextualLoss_forward`` with PONO centring: -log(mean_i max_j A_ij), per sample."""
    b, c = x.shape[:2]
    mean = y.mean(1, keepdim=True)
    x, y = l2_normalize(x - mean).view(b, c, -1), l2_normalize(y - mean).view(b, c, -1)
    d = 1 - torch.matmul(x.permute(0, 2, 1), y)
    d_norm = d / (torch.min(d, dim=-1, keepdim=True)[0] + 1e-3)
    w = torch.exp((1 - d_norm) / h)
    a = w / torch.sum(w, dim=-1, keepdim=True)
    return -torch.log(torch.mean(torch.max(a, dim=-1)[0], dim=1))


def build(size):
    torch.manual_seed(0)
    corr, gen, disc, vgg = Correspondence(), Generator(), MultiscaleDiscriminator(), VGG19().eval()
    for p in vgg.parameters():
        p.requires_grad_(False)

    def label_map():
        ids = torch.randint(0, LABELS, (1, 1, size // 32, size // 32))
        ids = F.interpolate(ids.float(), size=(size, size), mode="nearest").long()
        return ids, torch.zeros(1, LABELS, size, size).scatter_(1, ids, 1.0)

    label, seg = label_map()
    ref_label, ref_seg = label, seg  # a self-exemplar sample (the exemplar is the image itself re-cropped)
    real = torch.rand(1, 3, size, size) * 2 - 1
    ref = torch.flip(real, [3])
    self_ref = torch.ones(1, 1, 1, 1)
    return corr, gen, disc, vgg, (label, seg, real, ref, ref_label, ref_seg, self_ref)


def mask_loss(warp_mask, label, ref_label):
    """Official warped-mask NLL at 1/4 size: zero weight for class 0 and for classes missing from the exemplar."""
    gt = F.interpolate(label.float(), scale_factor=0.25, mode="nearest").long().squeeze(1)
    ref_ids = F.interpolate(ref_label.float(), scale_factor=0.25, mode="nearest").long().squeeze(1)
    weights = torch.ones_like(gt, dtype=torch.float32)
    for i in range(gt.shape[0]):
        missing = [c for c in torch.unique(gt[i]) if c not in torch.unique(ref_ids[i])]
        for c in missing:
            weights[i][gt[i] == c] = 0
        weights[i][gt[i] == 0] = 0
    nll = -torch.log(warp_mask + 1e-10).gather(1, gt.unsqueeze(1)).squeeze(1)  # F.nll_loss(..., reduction="none")
    return (nll * weights).sum() / (weights.sum() + 1e-5)


def make_step(size, inference=False):
    """(step, times): a zero-argument callable running one training iteration (or one translation under
    ``no_grad``), and the list it appends each iteration's (G step, D step) seconds to."""
    corr, gen, disc, vgg, (label, seg, real, ref, ref_label, ref_seg, self_ref) = build(size)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731 (weight_orig counted once)
    print(f"torch cocosnet {size}: correspondence {count(corr):,} generator {count(gen):,} "
          f"discriminator {count(disc):,} VGG19 {count(vgg):,} parameters; {torch.get_num_threads()} threads")
    times = []
    if inference:
        corr.eval(), gen.eval()

        def translate():
            with torch.no_grad():
                warped, _, _ = corr(ref, None, seg, ref_seg)
                return gen(torch.cat((warped, seg), 1))
        return translate, times

    opt_G = torch.optim.Adam(list(gen.parameters()) + list(corr.parameters()), lr=1e-4, betas=(0.0, 0.9), eps=1e-3)
    opt_D = torch.optim.Adam(disc.parameters(), lr=4e-4, betas=(0.0, 0.9))

    def discriminate(fake):
        out = disc(torch.cat((torch.cat((seg, fake), 1), torch.cat((seg, real), 1)), 0))
        return [[t[:1] for t in o] for o in out], [[t[1:] for t in o] for o in out]

    def step():
        t0 = time.perf_counter()
        opt_G.zero_grad()
        with torch.no_grad():
            ref_features, real_features = vgg(ref), vgg(real)
        warped, warp_mask, align = corr(ref, real, seg, ref_seg)
        fake = gen(torch.cat((warped, seg), 1))
        pred_fake, pred_real = discriminate(fake)
        gan = sum(-p[-1].mean() for p in pred_fake) / len(pred_fake) * 10
        feat = sum(F.l1_loss(f, r.detach()) * 10 / len(pred_fake)
                   for pf, pr in zip(pred_fake, pred_real) for f, r in zip(pf[:-1], pr[:-1]))
        fake_features = vgg(fake)
        weights = self_ref / (self_ref.sum() + 1e-5)
        fm = sum(w * (torch.abs(f - r) * weights).mean()
                 for w, f, r in zip([1 / 32, 1 / 16, 1 / 8, 1 / 4, 1], fake_features, real_features))
        perc = F.mse_loss(fake_features[-1], real_features[-1]) * 0.01
        ctx = (contextual(fake_features[-1], ref_features[-1]).mean() * 8
               + contextual(fake_features[-2], ref_features[-2]).mean() * 4
               + contextual(F.avg_pool2d(fake_features[-3], 2), F.avg_pool2d(ref_features[-3], 2)).mean() * 2)
        loss = gan + feat + fm + perc + ctx * 10 + align + mask_loss(warp_mask, label, ref_label) * 100
        loss.backward()
        opt_G.step()
        t1 = time.perf_counter()
        opt_D.zero_grad()
        pred_fake, pred_real = discriminate(fake.detach().requires_grad_())  # as the official D step
        d_loss = sum(F.relu(1 + p[-1]).mean() for p in pred_fake) / len(pred_fake) * 10 + \
            sum(F.relu(1 - p[-1]).mean() for p in pred_real) / len(pred_real) * 10
        d_loss.backward()
        opt_D.step()
        times.append((t1 - t0, time.perf_counter() - t1))
    return step, times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", type=int, nargs="?", default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--inference", action="store_true", help="time one translation under no_grad instead")
    parser.add_argument("--serve", action="store_true",
                        help="for bench/train_step.py --paired: after the warm-up, one step per line read from stdin")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    from train_step import median_ms, peak_rss_gb, serve  # bench/, this script's folder
    step, times = make_step(args.size, args.inference)
    if args.serve:
        return serve(step)
    ms_step = median_ms(step, args.steps)
    peak = peak_rss_gb()
    if args.inference:
        print(f"torch cocosnet inference peak RSS {peak:.2f} GB")
        print(f"torch cocosnet inference median ms {ms_step:.1f}")
        return
    timed = times[-args.steps:]  # after median_ms's warm-up steps
    g_ms, d_ms = (sorted(t[i] for t in timed)[len(timed) // 2] * 1000 for i in (0, 1))
    print(f"torch cocosnet G step {g_ms:.1f} ms, D step {d_ms:.1f} ms (medians); peak RSS {peak:.2f} GB")
    print(f"torch cocosnet step median ms {ms_step:.1f}")


if __name__ == "__main__":
    main()
