"""Build a CoCosNet reference list for any dataset by retrieval on VGG pool5 features.

    python -m cocosnet.build_ref_list --dataroot=DATA [--data_format=folders] [--ref_split=train|val]
        [--ref_k=10] [--retrieval_size=224] [--vgg_path=vgg19_conv.pth] [--ref_out=FILE]

Each image of ``ref_split`` gets the ``ref_k`` most similar training images (cosine similarity of VGG
pool5 features, itself excluded), most similar first: the lines ``key,ref1,...,refK`` that ``train.py``
(``--ref_list``) and ``eval.py`` (``--ref_list_val``) read. The default output is the dataset's default
list (``<dataroot>/ade20k_ref.txt`` / ``ade20k_ref_test.txt`` for ADE20K, ``ref_train.txt`` /
``ref_val.txt`` for folders). Without ``--vgg_path`` the ImageNet VGG16 of ``scripts/get_pretrained.sh``
is used.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)

from common.config import load_config  # noqa: E402
from common.drivers import run_cli  # noqa: E402
from common.runtime import init_runtime  # noqa: E402
from cocosnet.src.retrieval import build_ref_list  # noqa: E402
from cocosnet.src.spec import CoCosNetSpec, default_ref_lists  # noqa: E402


def main(argv=None):
    """Write the reference list of ``--ref_split``; returns its path."""
    spec = CoCosNetSpec()
    cfg = load_config(spec.config_path, sys.argv[1:] if argv is None else argv)
    if not cfg.dataroot:
        raise ValueError("pass --dataroot=<dataset> (ADEChallengeData2016 with --data_format=ade20k, or a folder "
                         "with {train,val}/images and {train,val}/labels with --data_format=folders)")
    root, _ = spec.dataroot(cfg)
    out = cfg.ref_out or default_ref_lists(root, cfg.data_format)[cfg.ref_split == "val"]
    init_runtime(cfg.device_target, cfg.mode, cfg.seed, cpu_conv=cfg.cpu_conv)
    return build_ref_list(root, cfg.data_format, cfg.ref_split, out, k=cfg.ref_k, size=cfg.retrieval_size,
                          vgg_path=cfg.vgg_path)


if __name__ == "__main__":
    run_cli(main, sys.argv[1:], usage=__doc__)
