"""Eval OSMIS / SIV-GAN (``--help`` lists the keys); see osmis/README.md."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.drivers import main  # noqa: E402
from osmis.src.spec import OSMISSpec  # noqa: E402

if __name__ == "__main__":
    main(OSMISSpec(), "eval")
