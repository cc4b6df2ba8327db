"""Export OSMIS / SIV-GAN (``--help`` lists the keys); see osmis/README.md."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("osmis.src.spec.OSMISSpec", "export")
