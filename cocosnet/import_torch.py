"""Import the official CoCosNet PyTorch checkpoints (microsoft/CoCosNet, ADE20K) into a MindSpore snapshot.

    python cocosnet/import_torch.py --torch_ckpt_dir=checkpoints/ade20k [--ckpt=outputs/cocosnet/imported]
        [--label_nc=151 --ngf=64 ...]

``--torch_ckpt_dir`` holds ``latest_net_Corr.pth`` and ``latest_net_G.pth`` (and ``latest_net_D.pth``,
imported too when present, for fine-tuning). The files are read without torch (restricted unpickler);
names are mapped to ours (``cocosnet/src/convert.py``), spectral-norm u/v kept. The snapshot folder
(``--ckpt``, default ``<output_dir>/imported``) gets ``Corr.ckpt``, ``G.ckpt`` (``D.ckpt``) and works as
``eval.py``/``predict.py``/``export.py --ckpt=<folder>``. Pass the architecture the model was trained with
(the defaults are the reference ADE20K options).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)

from common.drivers import parse, run_cli  # noqa: E402
from common.layers import count_params  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from cocosnet.src.convert import REFERENCE_FILES, import_component  # noqa: E402
from cocosnet.src.model import build_discriminator  # noqa: E402
from cocosnet.src.spec import CoCosNetSpec  # noqa: E402


def main(argv=None):
    """Convert the reference files of ``--torch_ckpt_dir``; returns the snapshot folder."""
    spec = CoCosNetSpec()
    cfg = parse(spec, sys.argv[1:] if argv is None else argv)
    if not cfg.torch_ckpt_dir:
        raise ValueError("pass --torch_ckpt_dir=<folder holding latest_net_Corr.pth and latest_net_G.pth>")
    out = cfg.ckpt or os.path.join(cfg.output_dir, "imported")
    if out.endswith(".ckpt"):
        raise ValueError(f"--ckpt={out}: import_torch.py writes a snapshot folder (Corr.ckpt, G.ckpt, D.ckpt); "
                         f"pass a folder")
    init_runtime(cfg.device_target, cfg.mode, cfg.seed, cpu_conv="native")
    nets = spec.build_inference(cfg)
    if os.path.isfile(os.path.join(cfg.torch_ckpt_dir, REFERENCE_FILES["D"])):
        nets["D"] = build_discriminator(cfg.label_nc, cfg.ndf, cfg.num_D)
    meta = dict(spec.arch(cfg), model=spec.name)
    for component, net in nets.items():
        src = os.path.join(cfg.torch_ckpt_dir, REFERENCE_FILES[component])
        import_component(src, net, os.path.join(out, f"{component}.ckpt"), dict(meta, component=component))
        print(f"imported {src} -> {out}/{component}.ckpt ({count_params(net):,} parameters)")
    return out


if __name__ == "__main__":
    run_cli(main, sys.argv[1:], usage=__doc__)
