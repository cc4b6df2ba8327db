"""Train a Cascaded Refinement Network.

    python crn/train.py                                   # 256p reference recipe on the demo data
    python crn/train.py --dataroot=/data/cityscapes --vgg_path=imagenet-vgg-verydeep-19.mat
    python crn/train.py --size=512 --n_epochs=20 --init_from=outputs/crn256/ckpt --output_dir=outputs/crn512
    python crn/train.py --size=32 --width_mult=0.125 --n_epochs=5   # quick CPU run

Writes <output_dir>/{train.log, losses.json, loss_curve.png, samples/epoch_NNNN.png, ckpt/}. Interrupt
with Ctrl-C: the loop saves a snapshot and exits; a rerun with ``--resume=true`` continues from it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)
from mindspore import Tensor, nn  # noqa: E402

from common.checkpoint import CheckpointManager  # noqa: E402
from common.config import load_config  # noqa: E402
from common.data import BatchLoader  # noqa: E402
from common.io import write_image  # noqa: E402
from common.layers import count_params  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from common.train import TrainLogger, TrainLoop, TrainOneStep, to_float  # noqa: E402
from crn.src.dataset import build_dataset  # noqa: E402
from crn.src.loss import CRNWithLoss, build_loss_network  # noqa: E402
from crn.src.model import build_generator  # noqa: E402
from crn.src.utils import (checkpoint_meta, init_from_lower_resolution, sample_grid,  # noqa: E402
                           trainable_parameters)

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")
SAMPLE_ROWS = 2


def main(argv=None):
    """Run training; returns the final loop state {epoch, step_in_epoch, step, losses}."""
    cfg = load_config(CONFIG, sys.argv[1:] if argv is None else argv)
    rt = init_runtime(cfg.device_target, cfg.mode, cfg.seed)
    train_set = build_dataset(cfg, "train", cfg.max_train_samples)
    val_set = build_dataset(cfg, "val", cfg.num_val)
    loader = BatchLoader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, rank=rt.rank,
                         group_size=rt.group_size, num_workers=cfg.num_workers)
    log = TrainLogger(cfg.output_dir, "crn", len(loader), cfg.log_every, rt.is_main)
    log.info(f"config {cfg.path}:\n{cfg.describe()}")

    net = build_generator(cfg, train_set.label_nc)
    perceptual = build_loss_network(cfg, log.info)
    params = trainable_parameters(net, cfg.train_last_modules)
    opt = nn.Adam(params, learning_rate=cfg.lr, beta1=0.9, beta2=0.999, eps=1e-8)
    train_step = TrainOneStep(CRNWithLoss(net, perceptual, cfg.min_weight), opt)
    train_step.set_train()
    log.info(f"{cfg.size}p CRN, k={net.num_outputs}, {len(net.refine)} modules, {count_params(net):,} parameters "
             f"({sum(p.size for p in params):,} trained); {len(train_set)} training pairs, {len(loader)} steps/epoch")

    manager = CheckpointManager(os.path.join(cfg.output_dir, "ckpt"), cfg.keep_ckpt,
                                checkpoint_meta(cfg, train_set.label_nc))
    loop = TrainLoop(manager, {"G": net, "opt_G": opt}, log, loader, cfg.n_epochs, cfg.save_epoch_freq,
                     cfg.max_steps, rt.is_main)
    if not loop.resume(cfg.resume) and cfg.init_from:
        init_from_lower_resolution(net, cfg.init_from, log.info)

    def step(label, photo):
        return {"loss": to_float(train_step(Tensor(label), Tensor(photo)))}

    def end_epoch(epoch):
        if rt.is_main:
            grid = sample_grid(net, val_set, range(min(SAMPLE_ROWS, len(val_set))))
            write_image(os.path.join(cfg.output_dir, "samples", f"epoch_{epoch + 1:04d}.png"), grid)

    return loop.run(step, lambda epoch: cfg.lr, end_epoch)


if __name__ == "__main__":
    main()
