"""Train pix2pix: ``python pix2pix/train.py [--key=value ...]`` (``--help`` lists the keys).

With no ``--dataroot`` it trains on the built-in synthetic-streets demo data. Under msrun it trains
data-parallel (sharded data, averaged gradients). Ctrl-C / SIGTERM saves a snapshot before exiting;
``--resume=true`` continues from the latest snapshot exactly.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.drivers import main  # noqa: E402
from pix2pix.src.spec import Pix2PixSpec  # noqa: E402

if __name__ == "__main__":
    main(Pix2PixSpec(), "train")
