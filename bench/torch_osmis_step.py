"""PyTorch restatement of one OSMIS / SIV-GAN training step, for a same-run speed comparison.

    python bench/torch_osmis_step.py HEIGHT WIDTH [--no_masks] [--steps 5] [--serve]

The reference's structure at the reference's widths (ch_G = ch_D = 32, batch 5, 3 mask classes): the
automatic configuration of ``osmis/src/config.py`` (restated: noise side 3..7), spectral-normalised
residual G and D blocks (``torch.nn.utils.spectral_norm``, one power iteration per call), low-level,
content (per-class masked means) and layout branches, per-sample affine augmentation with
``grid_sample`` on every image scale and the mask, BCE / weighted cross-entropy / diversity losses, the
reference's order (G step, then D on reals and on a new fake batch), Adam and the EMA of G. A
benchmark, not a port: the feature augmentation is reduced to its elementwise cost and the layer
initialisation is PyTorch's default. Prints the parameter counts and the median seconds per step; ``--serve``: after
the warm-up, one step per line read from stdin (``bench/train_step.py --paired``).
"""
import argparse
import copy
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

SN = nn.utils.spectral_norm
G_CH, D_CH = (8, 8, 8, 8, 8, 8, 8, 4, 2, 1), (1, 2, 4, 8, 8, 8, 8, 8, 8)
D_TABLE = {5: (6, 2), 6: (7, 3), 7: (7, 3), 8: (7, 4), 9: (8, 4)}


def auto_config(h, w):
    """(num_blocks_g, noise (h, w)): the first depth at which both sides have had 3 <= side / 2^(g-1) <= 7."""
    ok_h = ok_w = False
    for g in range(5, 10):
        ok_h |= 3 <= h / 2 ** (g - 1) <= 7
        ok_w |= 3 <= w / 2 ** (g - 1) <= 7
        if ok_h and ok_w:
            return g, (round(h / 2 ** (g - 1)), round(w / 2 ** (g - 1)))
    raise SystemExit(f"{h}x{w}: no valid generator depth")


def lrelu(x):
    return F.leaky_relu(x, 0.2)


class GBlock(nn.Module):
    def __init__(self, cin, cout, first):
        super().__init__()
        mid = min(cin, cout)
        self.first = first
        self.conv1, self.conv2 = SN(nn.Conv2d(cin, mid, 3, padding=1)), SN(nn.Conv2d(mid, cout, 3, padding=1))
        self.sc = SN(nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x):
        h, x = x, lrelu(x)
        if not self.first:
            x, h = F.interpolate(x, scale_factor=2.0), F.interpolate(h, scale_factor=2.0)
        return self.sc(h) + self.conv2(lrelu(self.conv1(x)))


class Generator(nn.Module):
    def __init__(self, g, noise, classes):
        super().__init__()
        chs = [32 * m for m in G_CH][-g - 1:]
        self.first = nn.ConvTranspose2d(64, chs[0], noise)
        self.body = nn.ModuleList(GBlock(chs[i], chs[i + 1], i == 0) for i in range(g))
        self.rgb = nn.ModuleList(SN(nn.Conv2d(chs[i + 1], 3, 3, padding=1)) for i in range(g))
        self.mask = nn.Conv2d(chs[-1], classes, 3, padding=1) if classes else None

    def forward(self, z):
        x, images, features = self.first(z), [], []
        for block, rgb in zip(self.body, self.rgb):
            x = block(x)
            images.append(torch.tanh(rgb(x)))
            features.append(torch.tanh(x))
        return images, features, (torch.softmax(self.mask(x), 1) if self.mask is not None else None)


class DBlock(nn.Module):
    def __init__(self, cin, cout, first=False, content=False):
        super().__init__()
        k, mid = 1 if content else 3, min(cin, cout)
        self.first, self.pool = first, not content
        self.conv1, self.conv2 = SN(nn.Conv2d(cin, mid, k, padding=k // 2)), SN(nn.Conv2d(mid, cout, k, padding=k // 2))
        self.sc = SN(nn.Conv2d(cin, cout, 1, bias=False)) if cin != cout or not content else None

    def forward(self, x):
        h = x
        x = self.conv2(lrelu(self.conv1(x if self.first else lrelu(x))))
        h = self.sc(h) if self.sc is not None else h
        if self.pool:
            x, h = F.avg_pool2d(x, 2), F.avg_pool2d(h, 2)
        return x + h


class Discriminator(nn.Module):
    def __init__(self, d, d0, classes):
        super().__init__()
        chs = [32 * m for m in D_CH][:d + 1]
        if classes:
            chs = [c * 2 if d0 + 1 <= i < d else c for i, c in enumerate(chs)]
        self.d0, self.classes = d0, classes
        self.ll = nn.ModuleList(DBlock(chs[i] + (chs[i] // 8 if i else 0), chs[i + 1], first=i == 0) for i in range(d0))
        self.rgb = nn.ModuleList(SN(nn.Conv2d(3, chs[i] // 8 if i else chs[0], 3, padding=1)) for i in range(d0))
        self.final_ll = nn.ModuleList(SN(nn.Conv2d(chs[i + 1], 1, 1)) for i in range(d0))
        ks = range(d0, d)
        self.content = nn.ModuleList(DBlock(chs[i], chs[i + 1], content=True) for i in ks)
        self.final_content = nn.ModuleList(SN(nn.Conv2d(chs[i + 1], classes + 1 if classes else 1, 1)) for i in ks)
        self.layout = nn.ModuleList(DBlock(chs[i] if i == d0 else 1, 1) for i in ks)
        self.final_layout = nn.ModuleList(SN(nn.Conv2d(1, 1, 1)) for _ in ks)

    def forward(self, images, mask, fa=None):
        y, low = self.rgb[0](images[-1]), []
        for i in range(self.d0):
            if i:
                y = torch.cat((y, self.rgb[i](images[-i - 1])), 1)
            y = self.ll[i](y)
            low.append(self.final_ll[i](y))
        if mask is not None:
            m = F.interpolate(mask, size=y.shape[2:])
            y_con = torch.cat([(m[:, c:c + 1] * y).mean((2, 3), keepdim=True) for c in range(self.classes)])
        else:
            y_con = y.mean((2, 3), keepdim=True)
        y_lay = y
        if fa is not None:  # feature augmentation of reals: channel mix/drop, rectangle swap within pairs
            keep, rect = fa
            y_con = y_con * keep
            y_lay = y * (1 - rect) + y.flip(0) * rect
        content, layout = [], []
        for block, final in zip(self.content, self.final_content):
            y_con = block(y_con)
            content.append(final(y_con))
        for block, final in zip(self.layout, self.final_layout):
            y_lay = block(y_lay)
            layout.append(final(y_lay))
        return low, content, layout


def augment(tensors, theta):
    out = []
    for x in tensors:
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out.append(F.grid_sample(x, grid, "bilinear", "reflection", align_corners=False))
    return out


def bce(x, target):
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target))


def adversarial(outputs, real, mask, classes, batch, d):
    low, content, layout = outputs
    target = 1.0 if real else 0.0
    loss = sum(bce(x, target) for x in low) / d + 0.5 * sum(bce(x, target) for x in layout) / d
    if mask is None:
        return loss + 0.5 * sum(bce(x, target) for x in content) / d
    s = mask.detach().sum((0, 2, 3))
    weights = torch.cat((torch.where(s > 0, 1 / s.clamp_min(1e-12), torch.zeros_like(s)), torch.ones(1)))
    labels = torch.arange(classes).repeat_interleave(batch) if real else torch.full((classes * batch,), classes)
    return loss + 0.5 * sum(F.cross_entropy(x.flatten(1), labels, weight=weights) for x in content) / d


def diversity(features):
    pairs = list(itertools.combinations(range(features[0].shape[0]), 2))
    total = sum((f[a] - f[b]).abs().mean() for f in features for a, b in pairs)
    return -total * 2 / (len(features) * (len(features) - 1))


def random_theta(batch):
    t = torch.rand(batch) * math.radians(16) - math.radians(8)
    r = 0.75 + 0.25 * torch.rand(batch)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = r * t.cos(), -r * t.sin(), r * t.sin(), r * t.cos()
    theta[:, :, 2] = 0.2 * torch.rand(batch, 2) - 0.1
    return theta


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("height", type=int)
    parser.add_argument("width", type=int)
    parser.add_argument("--no_masks", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--serve", action="store_true",
                        help="for bench/train_step.py --paired: after the warm-up, one step per line read from stdin")
    args = parser.parse_args()
    torch.manual_seed(0)
    batch, classes = 5, 0 if args.no_masks else 3
    g, noise = auto_config(args.height, args.width)
    d, d0 = D_TABLE[g]
    h, w = noise[0] * 2 ** (g - 1), noise[1] * 2 ** (g - 1)
    netG, netD = Generator(g, noise, classes), Discriminator(d, d0, classes)
    netEMA = copy.deepcopy(netG)
    count = lambda net: sum(p.numel() for n, p in net.named_parameters())  # noqa: E731 (weight_orig + bias)
    print(f"torch osmis {h}x{w}: G {count(netG):,} D {count(netD):,} parameters")
    optG = torch.optim.Adam(netG.parameters(), 2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(netD.parameters(), 2e-4, betas=(0.5, 0.999))
    image = torch.rand(1, 3, h, w).repeat(batch, 1, 1, 1) * 2 - 1
    mask = F.one_hot(torch.randint(0, classes, (batch, h, w)), classes).permute(0, 3, 1, 2).float() if classes else None
    low = h // 2 ** d0, w // 2 ** d0

    def discriminate(images, m, fa=None):
        augmented = augment(list(images) + ([m] if m is not None else []), random_theta(batch))
        if m is None:
            return netD(augmented, None, fa), None
        return netD(augmented[:-1], augmented[-1], fa), augmented[-1]

    def step():
        optG.zero_grad()
        images, features, m = netG(torch.randn(batch, 64, 1, 1))
        outputs, m_aug = discriminate(images[-d0:], m)
        loss = adversarial(outputs, True, m_aug, classes, batch, d) + 0.15 * diversity(features)
        loss.backward()
        optG.step()
        optD.zero_grad()
        pyramid = [image]
        for _ in range(d0 - 1):
            pyramid.insert(0, F.avg_pool2d(pyramid[0], 2))
        keep = (torch.rand(1, netD.content[0].conv1.weight_orig.shape[1], 1, 1) > 0.2).float()
        rect = torch.zeros(batch, 1, *low)
        rect[:, :, : low[0] // 2, : low[1] // 2] = 1
        outputs, m_aug = discriminate(pyramid, mask, (keep, rect))
        adversarial(outputs, True, m_aug, classes, batch, d).backward()
        with torch.no_grad():
            images, _, m = netG(torch.randn(batch, 64, 1, 1))
        outputs, m_aug = discriminate(images[-d0:], m)
        adversarial(outputs, False, m_aug, classes, batch, d).backward()
        optD.step()
        with torch.no_grad():
            for e, p in zip(netEMA.state_dict().values(), netG.state_dict().values()):
                e.copy_(e * 0.9999 + p * (1 - 0.9999))

    from train_step import median_ms, serve  # bench/, this script's folder
    if args.serve:
        serve(step)
    else:
        print("torch osmis step median ms %.1f" % median_ms(step, args.steps))


if __name__ == "__main__":
    main()
