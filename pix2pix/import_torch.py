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

from common.drivers import import_checkpoint, parse, run_cli  # noqa: E402
from common.layers import count_params  # noqa: E402
from pix2pix.src.convert import import_torch_generator  # noqa: E402
from pix2pix.src.spec import Pix2PixSpec  # noqa: E402


def convert(cfg, source, out):
    net = import_torch_generator(source, out, cfg.netG, cfg.ngf, cfg.norm, cfg.input_nc, cfg.output_nc)
    print(f"imported {source} -> {out} ({cfg.netG}, ngf={cfg.ngf}, norm={cfg.norm}, {count_params(net):,} parameters)")


def main(argv=None):
    """Convert ``--torch_ckpt`` into a MindSpore G checkpoint; returns its path."""
    cfg = parse(Pix2PixSpec(), sys.argv[1:] if argv is None else argv)
    return import_checkpoint(cfg, "torch_ckpt", "import_torch.py", convert)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:], usage=__doc__)
