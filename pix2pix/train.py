"""Train pix2pix: ``python pix2pix/train.py [--key=value ...]`` (see default_config.yaml).

With no ``--dataroot`` it trains on the built-in synthetic-streets demo data. Under msrun it trains
data-parallel (sharded data, averaged gradients). Ctrl-C / SIGTERM saves a snapshot before exiting;
``--resume=true`` continues from the latest snapshot exactly.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.checkpoint import CheckpointManager  # noqa: E402
from common.config import load_config  # noqa: E402
from common.data import BatchLoader  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from common.train import TrainLogger, TrainLoop, linear_decay, set_lr, to_float  # noqa: E402
from pix2pix.src.dataset import AlignedDataset  # noqa: E402
from pix2pix.src.train_step import Pix2PixTrainStep  # noqa: E402
from pix2pix.src.utils import (build_networks, build_optimizers, model_meta, resolve_dataroot,  # noqa: E402
                               val_dataset, write_sample_grid)

import mindspore as ms  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")


def train(cfg):
    """Run training as configured; returns the final loop state (epoch, step, last losses)."""
    rt = init_runtime(cfg.device_target, cfg.mode, cfg.seed, cpu_conv=cfg.cpu_conv)
    netG, netD = build_networks(cfg)
    dataroot = resolve_dataroot(cfg)
    train_set = AlignedDataset(dataroot, cfg.phase, cfg.direction, cfg.load_size, cfg.crop_size,
                               train=True, flip=cfg.flip)
    val_set = val_dataset(cfg, dataroot)
    loader = BatchLoader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, rank=rt.rank, group_size=rt.group_size,
                         drop_last=True, num_workers=cfg.num_workers)

    opt_G, opt_D = build_optimizers(cfg, netG, netD)
    step_cell = Pix2PixTrainStep(netG, netD, opt_G, opt_D, cfg.gan_mode, cfg.lambda_L1)
    step_cell.set_train()

    manager = CheckpointManager(os.path.join(cfg.output_dir, "ckpt"), cfg.keep_ckpt, model_meta(cfg))
    log = TrainLogger(cfg.output_dir, "pix2pix", len(loader), cfg.log_every, enabled=rt.is_main)
    n_const, n_decay = (cfg.n_epochs, cfg.n_epochs_decay) if cfg.dataroot else (cfg.demo_epochs, cfg.demo_epochs_decay)
    loop = TrainLoop(manager, {"G": netG, "D": netD, "opt_G": opt_G, "opt_D": opt_D}, log, loader,
                     n_const + n_decay, cfg.save_epoch_freq, cfg.max_steps, rt.is_main)
    loop.resume(cfg.resume)
    if not cfg.dataroot:
        log.info(f"demo data: {n_const} + {n_decay} epochs (demo_epochs, demo_epochs_decay); "
                 f"pass --dataroot for your data and the paper schedule (n_epochs, n_epochs_decay)")
    log.info(f"pix2pix: {len(train_set)} training pairs from {dataroot}, {len(loader)} steps/epoch on "
             f"{rt.group_size} {cfg.device_target} device(s), {n_const + n_decay} epochs; {rt.describe_conv}")

    def step(real_a, real_b):
        loss_d, loss_g, loss_gan, loss_l1 = step_cell(ms.Tensor(real_a), ms.Tensor(real_b))
        return {"g_loss": to_float(loss_g), "d_loss": to_float(loss_d), "g_gan": to_float(loss_gan),
                "g_l1": to_float(loss_l1)}

    def start_epoch(epoch):
        lr = linear_decay(epoch, cfg.lr, n_const, n_decay)
        set_lr(opt_G, lr)
        set_lr(opt_D, lr)
        return lr

    def end_epoch(epoch):
        if rt.is_main:
            write_sample_grid(netG, val_set, os.path.join(cfg.output_dir, "samples", f"epoch_{epoch + 1:04d}.png"),
                              cfg.num_samples)

    return loop.run(step, start_epoch, end_epoch)


def main(argv=None):
    cfg = load_config(CONFIG, sys.argv[1:] if argv is None else argv)
    train(cfg)


if __name__ == "__main__":
    main()
