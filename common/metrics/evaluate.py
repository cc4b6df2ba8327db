"""Evaluate a folder of generated images against the real images of the same names, in batches.

Writes ``metrics.json`` in the format :mod:`common.report` collects: a flat ``{metric: number}`` plus
``protocol`` (metric -> description), ``model`` and ``checkpoint``.
"""
import json

import numpy as np
from tqdm import tqdm

from common.io import atomic_file, read_image
from common.metrics.image import PSNR, SSIM
from common.metrics.segmentation import match_by_name

__all__ = ["build_metrics", "evaluate_folders", "write_metrics_json", "needs_networks"]


def build_metrics(names, inception_weights=None, conv_impl="native"):
    """Metric objects for ``names`` from: psnr, ssim, lpips_alexnet, lpips_vgg16, fid (adds kid, is).

    ``conv_impl``: CPU convolution path of the metric networks (the process's ``Runtime.conv_impl``)."""
    out = []
    for name in names:
        if name == "psnr":
            out.append(PSNR())
        elif name == "ssim":
            out.append(SSIM())
        elif name.startswith("lpips"):
            from common.metrics.lpips import LPIPSMetric
            out.append(LPIPSMetric(name.split("_", 1)[1] if "_" in name else "alexnet", conv_impl=conv_impl))
        elif name == "fid":
            from common.metrics.fid import InceptionMetrics
            out.append(InceptionMetrics(inception_weights, conv_impl=conv_impl))
        else:
            raise ValueError(f"unknown metric {name!r}; choose psnr, ssim, lpips_alexnet, lpips_vgg16, fid")
    return out


def needs_networks(names):
    """True when a metric in ``names`` (as for :func:`build_metrics`) runs a network (LPIPS, InceptionV3)."""
    return any(name.startswith("lpips") or name == "fid" for name in names)


def _protocol(metric, result):
    if isinstance(metric.protocol, dict):
        return {k: metric.protocol.get(k, metric.protocol.get(k.rsplit("_", 1)[0], "")) for k in result}
    return {k: metric.protocol for k in result}


def evaluate_folders(fake_dir, real_dir, metrics, batch_size=16, real_pattern=r"."):
    """Run ``metrics`` (objects of the :mod:`common.metrics` state protocol) over name-matched pairs.

    Returns ``{metric: value, "protocol": {metric: text}, "images": N}``.
    """
    pairs = match_by_name(fake_dir, real_dir, label_pattern=real_pattern)
    for m in metrics:
        m.reset()
    for i in tqdm(range(0, len(pairs), batch_size), desc="evaluate", unit="batch"):
        batch = pairs[i:i + batch_size]
        fakes, reals = [read_image(f) for _, f, _ in batch], [read_image(r) for _, _, r in batch]
        shapes = {a.shape for a in fakes + reals}
        if len(shapes) > 1:
            raise ValueError(f"images of different sizes {sorted(shapes)} in {fake_dir} / {real_dir} (frames "
                             f"{batch[0][0]}..{batch[-1][0]}); resize the generated images to the real size")
        fakes, reals = np.stack(fakes), np.stack(reals)
        for m in metrics:
            m.update(fakes, reals)
    result, protocol = {}, {}
    for m in metrics:
        values = m.compute()
        result.update(values)
        protocol.update(_protocol(m, values))
    result["images"] = len(pairs)
    result["protocol"] = protocol
    return result


def write_metrics_json(path, result, model, checkpoint):
    """Write ``outputs/<model>/eval/metrics.json`` (atomic)."""
    record = dict(result, model=model, checkpoint=checkpoint)
    with atomic_file(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
    return record
