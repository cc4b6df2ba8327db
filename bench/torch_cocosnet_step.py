"""PyTorch restatement of one CoCosNet (ADE20K, 256x256) training iteration, for a same-run speed comparison.

    python bench/torch_cocosnet_step.py SIZE [--steps 3] [--inference] [--serve]

The official code's networks at its ADE20K widths (``bench/torch_cocosnet.py``, the tests' restatement of
``microsoft/CoCosNet``: ``NoVGGCorrespondence``, ``SPADEGenerator`` with positional norm and attention, the two-scale
``MultiscaleDiscriminator``; spectral norm through ``torch.nn.utils.spectral_norm``, one power iteration per call in
training mode), a VGG19 of the official layout for the
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
import time

import torch
import torch.nn.functional as F
from torch import nn

from torch_cocosnet import MultiscaleDiscriminator, NoVGGCorrespondence, SPADEGenerator, feature_normalize

LABELS = 151  # ADE20K's 150 classes + "other"


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
    x, y = feature_normalize(x - mean).view(b, c, -1), feature_normalize(y - mean).view(b, c, -1)
    d = 1 - torch.matmul(x.permute(0, 2, 1), y)
    d_norm = d / (torch.min(d, dim=-1, keepdim=True)[0] + 1e-3)
    w = torch.exp((1 - d_norm) / h)
    a = w / torch.sum(w, dim=-1, keepdim=True)
    return -torch.log(torch.mean(torch.max(a, dim=-1)[0], dim=1))


def build(size):
    torch.manual_seed(0)
    corr, gen, vgg = NoVGGCorrespondence(LABELS), SPADEGenerator(LABELS, crop_size=size), VGG19().eval()
    disc = MultiscaleDiscriminator(3 + LABELS)  # without the decoder the official D registers and never calls
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
                warped = corr(ref, None, seg, ref_seg)["warp_out"]
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
        warp = corr(ref, real, seg, ref_seg)
        fake = gen(torch.cat((warp["warp_out"], seg), 1))
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
        loss = (gan + feat + fm + perc + ctx * 10 + warp["loss_novgg_featpair"]
                + mask_loss(warp["warp_mask"], label, ref_label) * 100)
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
