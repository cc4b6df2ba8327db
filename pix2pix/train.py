"""Train pix2pix: ``python pix2pix/train.py [--key=value ...]`` (see default_config.yaml).

With no ``--dataroot`` it trains on the built-in synthetic-streets demo data. Under msrun it trains
data-parallel (sharded data, averaged gradients). Ctrl-C / SIGTERM saves a snapshot before exiting;
``--resume=true`` continues from the latest snapshot exactly.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.checkpoint import CheckpointManager  # noqa: E402
from common.config import load_config  # noqa: E402
from common.data import BatchLoader  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from common.train import StopSignal, TrainLogger, linear_decay, set_lr, timer_ms, to_float  # noqa: E402
from pix2pix.src.dataset import AlignedDataset  # noqa: E402
from pix2pix.src.train_step import Pix2PixTrainStep  # noqa: E402
from pix2pix.src.utils import (build_networks, build_optimizers, model_meta, resolve_dataroot,  # noqa: E402
                               val_dataset, write_sample_grid)

import mindspore as ms  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")


def train(cfg):
    """Run training as configured; returns the final loop state (epoch, step, last losses)."""
    rt = init_runtime(cfg.device_target, cfg.mode, cfg.seed)
    netG, netD = build_networks(cfg)
    dataroot = resolve_dataroot(cfg)
    train_set = AlignedDataset(dataroot, cfg.phase, cfg.direction, cfg.load_size, cfg.crop_size, True, cfg.flip)
    val_set = val_dataset(cfg, dataroot)
    loader = BatchLoader(train_set, cfg.batch_size, True, cfg.seed, rt.rank, rt.group_size, True, cfg.num_workers)

    opt_G, opt_D = build_optimizers(cfg, netG, netD)
    step_cell = Pix2PixTrainStep(netG, netD, opt_G, opt_D, cfg.gan_mode, cfg.lambda_L1)
    step_cell.set_train()

    ckpt_dir = os.path.join(cfg.output_dir, "ckpt")
    manager = CheckpointManager(ckpt_dir, cfg.keep_ckpt, model_meta(cfg))
    components = {"G": netG, "D": netD, "opt_G": opt_G, "opt_D": opt_D}
    log = TrainLogger(cfg.output_dir, "pix2pix", len(loader), cfg.log_every, enabled=rt.is_main)
    epoch, step_in_epoch, global_step = 0, 0, 0
    if cfg.resume:
        if manager.latest() is None:
            log.info(f"resume: no snapshot in {ckpt_dir}; starting from scratch")
        else:
            state = manager.restore(components)
            epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["step"]
            log.info(f"resumed from {manager.latest()} at epoch {epoch} step {step_in_epoch} (global {global_step})")
    elif manager.latest() is not None and rt.is_main:
        log.info(f"note: {ckpt_dir} already holds snapshots; this run starts from scratch (use --resume=true to continue)")

    n_const, n_decay = (cfg.n_epochs, cfg.n_epochs_decay) if cfg.dataroot else (cfg.demo_epochs, cfg.demo_epochs_decay)
    n_epochs = n_const + n_decay
    if not cfg.dataroot:
        log.info(f"demo data: {n_const} + {n_decay} epochs (demo_epochs, demo_epochs_decay); "
                 f"pass --dataroot for your data and the paper schedule (n_epochs, n_epochs_decay)")
    log.info(f"pix2pix: {len(train_set)} training pairs from {dataroot}, {len(loader)} steps/epoch on "
             f"{rt.group_size} {cfg.device_target} device(s), {n_epochs} epochs")

    saved_at = [global_step]

    def save(ep, st):
        saved_at[0] = global_step
        if rt.is_main:
            path = manager.save(components, {"epoch": ep, "step_in_epoch": st, "step": global_step, "seed": cfg.seed})
            log.info(f"saved snapshot {path}")

    losses = {}
    with StopSignal() as stop:
        while epoch < n_epochs:
            lr = linear_decay(epoch, cfg.lr, n_const, n_decay)
            set_lr(opt_G, lr)
            set_lr(opt_D, lr)
            log.start_epoch(epoch + 1, n_epochs, step_in_epoch)
            t_epoch = time.perf_counter()
            for real_a, real_b in loader.epoch(epoch, step_in_epoch):
                t = time.perf_counter()
                loss_d, loss_g, loss_gan, loss_l1 = step_cell(ms.Tensor(real_a), ms.Tensor(real_b))
                losses = {"g_loss": to_float(loss_g), "d_loss": to_float(loss_d),
                          "g_gan": to_float(loss_gan), "g_l1": to_float(loss_l1)}
                step_in_epoch += 1
                global_step += 1
                log.step(epoch + 1, step_in_epoch, global_step, losses, timer_ms(t))
                if stop.requested or (cfg.max_steps and global_step >= cfg.max_steps):
                    break
            finished_epoch = step_in_epoch >= len(loader)
            if finished_epoch:
                log.end_epoch(epoch + 1, time.perf_counter() - t_epoch, lr)
                if rt.is_main:
                    write_sample_grid(netG, val_set, os.path.join(cfg.output_dir, "samples", f"epoch_{epoch + 1:04d}.png"),
                                      cfg.num_samples)
                epoch, step_in_epoch = epoch + 1, 0
            if stop.requested:
                save(epoch, step_in_epoch)
                log.info(f"stopped by {stop.requested}; resume with --resume=true")
                raise SystemExit(130 if stop.requested == "SIGINT" else 143)
            if cfg.max_steps and global_step >= cfg.max_steps:
                break
            if finished_epoch and (epoch % cfg.save_epoch_freq == 0 or epoch == n_epochs):
                save(epoch, step_in_epoch)
    if saved_at[0] != global_step:
        save(epoch, step_in_epoch)
    return {"epoch": epoch, "step_in_epoch": step_in_epoch, "step": global_step, "losses": losses}


def main(argv=None):
    cfg = load_config(CONFIG, sys.argv[1:] if argv is None else argv)
    train(cfg)


if __name__ == "__main__":
    main()
