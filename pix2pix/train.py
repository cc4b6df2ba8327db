"""Train pix2pix: ``python pix2pix/train.py [--key=value ...]`` (``--help`` lists the keys).

With no ``--dataroot`` it trains on the built-in synthetic-streets demo data. Under msrun it trains
data-parallel (sharded data, averaged gradients). Ctrl-C / SIGTERM saves a snapshot before exiting;
``--resume=true`` continues from the latest snapshot exactly.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("pix2pix.src.spec.Pix2PixSpec", "train")
