"""Train CoCosNet: ``python cocosnet/train.py [--key=value ...]`` (``--help`` lists the keys).

With no ``--dataroot`` it trains on the built-in styled synthetic-streets demo data at 64x64 with narrow
networks. ``--dataroot=ADEChallengeData2016`` (with ``ade20k_ref.txt`` beside it, or ``--ref_list``)
trains the reference ADE20K configuration. Ctrl-C / SIGTERM saves a snapshot; ``--resume=true`` continues.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("cocosnet.src.spec.CoCosNetSpec", "train")
