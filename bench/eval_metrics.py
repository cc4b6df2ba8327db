"""Benchmark: FID-feature evaluation of N generated + N real images at 256x256, in batches.

Random-init InceptionV3 (FID layout) is enough for timing. Prints images/s (generated + real images
through the network, plus the Fréchet distance / KID / IS at the end).

    python bench/eval_metrics.py [--n 500] [--batch 50] [--mode graph|pynative] [--device CPU]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402,F401
from tqdm import tqdm  # noqa: E402

from common.metrics.fid import InceptionMetrics  # noqa: E402
from common.runtime import init_runtime  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--mode", default="graph", choices=("graph", "pynative"))
    parser.add_argument("--device", default="CPU")
    args = parser.parse_args()
    init_runtime(args.device, args.mode)
    rng = np.random.RandomState(0)
    metric = InceptionMetrics(kid_subsets=100)
    warm = rng.randint(0, 256, (args.batch, args.size, args.size, 3)).astype(np.uint8)
    metric.features(warm)  # compile / warm up at the batch shape
    start = time.perf_counter()
    for i in tqdm(range(0, args.n, args.batch), desc="fid features", unit="batch"):
        b = min(args.batch, args.n - i)
        fake = rng.randint(0, 256, (b, args.size, args.size, 3)).astype(np.uint8)
        real = rng.randint(0, 256, (b, args.size, args.size, 3)).astype(np.uint8)
        metric.update(fake, real)
    t_feat = time.perf_counter() - start
    t0 = time.perf_counter()
    result = metric.compute()
    t_stats = time.perf_counter() - t0
    images = 2 * args.n
    print(f"{images} images ({args.n} generated + {args.n} real) at {args.size}^2, batch {args.batch}, "
          f"{args.device} {args.mode}: features {t_feat:.1f} s = {images / t_feat:.2f} images/s; "
          f"FID/KID/IS statistics {t_stats:.1f} s; total {images / (t_feat + t_stats):.2f} images/s "
          f"(fid={result['fid']:.3f}, random weights)")


if __name__ == "__main__":
    main()
