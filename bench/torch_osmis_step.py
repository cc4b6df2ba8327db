"""The official OSMIS / SIV-GAN training step in PyTorch, for a same-run speed comparison.

    python bench/torch_osmis_step.py HEIGHT WIDTH [--no_masks] [--steps 5] [--serve]

``train.py``'s iteration at the reference's settings (ch_G = ch_D = 32, batch 5, 3 mask classes or none, noise 64,
``prob_augm`` 0.7, ``prob_FA_con`` = ``prob_FA_lay`` = 0.4, lambda_DR 0.15, Bernoulli mask warm-up, EMA 0.9999),
built from the restatement ``bench/torch_osmis.py`` that the parity tests hold ours against: the G step (G with
features, the kornia augmentation pipeline on all its scales and its mask, D, the losses and the diversity term,
backward, Adam), the D step (the augmented real pyramid with feature augmentation, then a new fake batch drawn under
no_grad and augmented; one backward of the sum where the reference runs two, then Adam), the EMA of G's whole state
(spectral vectors included). The frame is random, its mask random per pixel (as ``osmis/src/utils.py:
make_bench_step`` makes ours); layers keep PyTorch's default initialisation, as the reference's do. Prints the
parameter counts and the median milliseconds per step; ``--serve``: after the warm-up, one step per line read from
stdin (``bench/train_step.py --paired``).
"""
import argparse
import copy
import random

import torch
import torch.nn.functional as F

import torch_osmis as ref  # bench/, this script's folder


def build_step(height, width, masks):
    """(a zero-argument callable running one training step, G, D, the training size (h, w))."""
    random.seed(0)
    torch.manual_seed(0)
    batch, classes = 5, 3 if masks else 0
    g, noise, d, d0 = ref.reference_config(height, width)
    h, w = noise[0] * 2 ** (g - 1), noise[1] * 2 ** (g - 1)
    netG = ref.Generator(noise, g, classes, ch_G=32)
    netD = ref.Discriminator(d, d0, classes, ch_D=32, bernoulli_warmup=15000, prob_FA_con=0.4, prob_FA_lay=0.4)
    netEMA = copy.deepcopy(netG)
    losses, augment = ref.Losses(d, masks, lambda_DR=0.15), ref.AugmentPipe(0.7)
    optG = torch.optim.Adam(netG.parameters(), 2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(netD.parameters(), 2e-4, betas=(0.5, 0.999))
    image = torch.rand(1, 3, h, w).repeat(batch, 1, 1, 1) * 2 - 1
    mask = None
    if masks:
        ids = torch.randint(0, classes, (1, h, w)).repeat(batch, 1, 1)
        mask = F.one_hot(ids, classes).permute(0, 3, 1, 2).float()
    iteration = [0]

    def step():
        it = iteration[0]
        optG.zero_grad()
        _, _, g_losses = ref.g_step_losses(netG, netD, losses, torch.randn(batch, 64, 1, 1), it, augment=augment)
        sum(g_losses.values()).backward()
        optG.step()
        optD.zero_grad()
        _, _, real, fake = ref.d_step_losses(netG, netD, losses, image, mask, torch.randn(batch, 64, 1, 1), it,
                                             augment=augment)
        (sum(real.values()) + sum(fake.values())).backward()
        optD.step()
        with torch.no_grad():
            for e, p in zip(netEMA.state_dict().values(), netG.state_dict().values()):
                e.copy_(e * 0.9999 + p * (1 - 0.9999))
        iteration[0] += 1
    return step, netG, netD, (h, w)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("height", type=int)
    parser.add_argument("width", type=int)
    parser.add_argument("--no_masks", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--serve", action="store_true",
                        help="for bench/train_step.py --paired: after the warm-up, one step per line read from stdin")
    args = parser.parse_args()
    step, netG, netD, (h, w) = build_step(args.height, args.width, masks=not args.no_masks)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731 (weight_orig + bias; u, v are buffers)
    print(f"torch osmis {h}x{w}: G {count(netG):,} D {count(netD):,} parameters")
    from train_step import median_ms, serve  # bench/, this script's folder
    if args.serve:
        serve(step)
    else:
        print("torch osmis step median ms %.1f" % median_ms(step, args.steps))


if __name__ == "__main__":
    main()
