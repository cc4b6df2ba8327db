"""msrun worker for tests/test_distributed.py: one data-parallel pix2pix step, weights saved per rank.

Convolutions take the matmul path (common/conv.py) that pix2pix uses on AVX-512 CPUs; the single-process
reference runs it at batch 2.

Usage (under msrun): dist_worker.py OUT_DIR. Rank r trains on sample r of a fixed 2-sample batch.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from common.config import load_config  # noqa: E402
from common.conv import use_conv_impl  # noqa: E402
from common.runtime import init_runtime  # noqa: E402

import mindspore as ms  # noqa: E402
from pix2pix.src.train_step import Pix2PixTrainStep  # noqa: E402
from pix2pix.src.utils import build_networks, build_optimizers  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pix2pix", "default_config.yaml")
SETTINGS = dict(netG="unet_64", ngf=8, ndf=8, crop_size=64, norm="none", use_dropout=False)


def batch():
    rng = np.random.RandomState(123)
    return [rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32) for _ in range(2)]


def run_step(rank, group_size, conv_impl):
    cfg = load_config(CONFIG, **SETTINGS)
    G, D = build_networks(cfg)
    use_conv_impl(G, conv_impl)
    use_conv_impl(D, conv_impl)
    opt_G, opt_D = build_optimizers(cfg, G, D)
    step = Pix2PixTrainStep(G, D, opt_G, opt_D)
    step.set_train()
    a, b = batch()
    per = 2 // group_size
    sl = slice(rank * per, (rank + 1) * per)
    losses = step(ms.Tensor(a[sl]), ms.Tensor(b[sl]))
    return G, D, [float(x.asnumpy()) for x in losses]


def main():
    out = sys.argv[1]
    rt = init_runtime("CPU", "graph", seed=0, cpu_conv="matmul")
    G, D, losses = run_step(rt.rank, rt.group_size, rt.conv_impl)
    arrays = {f"p{i}": p.asnumpy() for i, p in enumerate(G.trainable_params() + D.trainable_params())}
    np.savez(os.path.join(out, f"rank{rt.rank}_of{rt.group_size}.npz"), losses=np.array(losses), **arrays)


if __name__ == "__main__":
    main()
