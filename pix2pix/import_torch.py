"""Import a reference PyTorch pix2pix generator (junyanz/pytorch-CycleGAN-and-pix2pix) into a MindSpore checkpoint.

    python pix2pix/import_torch.py --torch_ckpt=checkpoints/facades_label2photo/latest_net_G.pth \\
        [--ckpt=outputs/pix2pix/imported/G.ckpt] [--netG=unet_256 --ngf=64 --norm=batch]

The ``.pth`` is read without torch (``common.weights.read_torch_state_dict``); ``module.`` prefixes are
stripped. Pass the options the model was trained with; a mismatch is reported with the offending key.
The MindSpore checkpoint goes to ``--ckpt`` (a ``.ckpt`` path; default ``<output_dir>/imported/G.ckpt``)
and loads wherever a G checkpoint is accepted: ``eval.py``/``predict.py``/``export.py --ckpt=<it>``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)

from common.config import load_config  # noqa: E402
from common.drivers import imported_checkpoint_path, run_cli  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from common.layers import count_params  # noqa: E402
from pix2pix.src.convert import import_torch_generator  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_config.yaml")


def main(argv=None):
    """Convert ``--torch_ckpt`` into a MindSpore G checkpoint; returns its path."""
    cfg = load_config(CONFIG, sys.argv[1:] if argv is None else argv)
    if not cfg.torch_ckpt:
        raise ValueError("no PyTorch checkpoint given: pass --torch_ckpt=<path>/latest_net_G.pth")
    out = imported_checkpoint_path(cfg, "import_torch.py")
    init_runtime(cfg.device_target, cfg.mode, cfg.seed, cpu_conv="native")
    net = import_torch_generator(cfg.torch_ckpt, out, cfg.netG, cfg.ngf, cfg.norm, cfg.input_nc, cfg.output_nc)
    print(f"imported {cfg.torch_ckpt} -> {out} ({cfg.netG}, ngf={cfg.ngf}, norm={cfg.norm}, "
          f"{count_params(net):,} parameters)")
    return out


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
