"""Evaluate a folder of generated images against the real images of the same names, in batches; choose
the metrics that can run here; write ``metrics.json`` in the one schema every model and the report use.

``metrics.json`` (:data:`SCHEMA`, standard JSON: no ``NaN``/``Infinity`` literals)::

    {"schema": "synthzoo.metrics/1", "model": "pix2pix", "checkpoint": "G_200.ckpt", "images": 500,
     "metrics": {"psnr": {"value": 21.3, "protocol": "PSNR dB, ..."}, ...},
     "settings": {"eval_protocol": "paper", "num_val": 500},
     "not_computed": {"fid": "not computed: pass --inception_path=pt_inception-2015-12-05-6726825d.pth"}}

A non-finite value (e.g. the PSNR of identical images) is stored as ``null`` and its protocol says why.
"""
import json
import math
import numbers
import os

import numpy as np
from tqdm import tqdm

from common.io import atomic_file, read_image
from common.metrics.image import PSNR, SSIM
from common.metrics.segmentation import match_by_name

__all__ = ["SCHEMA", "METRIC_NAMES", "FID_WEIGHTS", "build_metrics", "needs_networks", "select_metrics",
           "lpips_weights_cached", "match_folders", "evaluate_folders", "metrics_record", "write_metrics_json"]

SCHEMA = "synthzoo.metrics/1"
METRIC_NAMES = ("psnr", "ssim", "lpips_alexnet", "lpips_vgg16", "fid")
FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
_INCEPTION_FIX = f"pass --inception_path={FID_WEIGHTS}"
_LPIPS_FIX = "run bash scripts/get_pretrained.sh"
_ALIASES = {"kid": "fid", "is": "fid", "lpips": "lpips_alexnet"}


def build_metrics(names, inception_weights=None, conv_impl="native"):
    """Metric objects for ``names`` from: psnr, ssim, lpips_alexnet, lpips_vgg16, fid (adds kid, is).

    ``conv_impl`` is the convolution path of the metric networks (LPIPS, InceptionV3).
    """
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
            raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRIC_NAMES)}")
    return out


def needs_networks(names):
    """True when a metric in ``names`` (as for :func:`build_metrics`) runs a network (LPIPS, InceptionV3)."""
    return any(name.startswith("lpips") or name == "fid" for name in names)


def lpips_weights_cached(net="alexnet"):
    """True when the LPIPS trunk and heads for ``net`` are in the weights cache (scripts/get_pretrained.sh)."""
    from common.pretrained import pretrained_path
    try:
        pretrained_path(net)
        pretrained_path(f"lpips_{net}")
    except FileNotFoundError:
        return False
    return True


def select_metrics(requested, *, inception_path="", lpips_available=None):
    """The metrics to compute, and the ones left out with the flag that would enable them.

    Args:
        requested: ``"auto"`` or a comma list of :data:`METRIC_NAMES` (``kid``/``is`` mean ``fid``,
            ``lpips`` means ``lpips_alexnet``). ``auto`` = psnr, ssim, lpips_alexnet when its weights are
            cached, fid (with kid, is) when ``inception_path`` is given. A given ``inception_path``
            adds fid to an explicit list too.
        inception_path: the FID InceptionV3 weights (:data:`FID_WEIGHTS`), or empty.
        lpips_available: whether the LPIPS weights exist; ``None`` checks the cache.

    Returns:
        ``(names, not_computed)``: names for :func:`build_metrics`, and ``{metric: "not computed: <fix>"}``
        for the metrics ``auto`` leaves out.

    Raises:
        ValueError: an unknown metric, or an explicitly requested metric that cannot run here (the
            message names the fix); FileNotFoundError: ``inception_path`` does not exist.
    """
    if inception_path and not os.path.isfile(inception_path):
        raise FileNotFoundError(f"--inception_path={inception_path} does not exist; pass the FID InceptionV3 "
                                f"weights ({FID_WEIGHTS}) or leave it empty to skip FID/KID/IS")

    def available(net):
        return lpips_weights_cached(net) if lpips_available is None else bool(lpips_available)
    items = [m.strip().lower() for m in str(requested).split(",") if m.strip()]
    if not items:
        raise ValueError(f"no metrics requested ({requested!r}); pass auto or a comma list of {', '.join(METRIC_NAMES)}")
    not_computed = {}
    if items == ["auto"]:
        names = ["psnr", "ssim"]
        if available("alexnet"):
            names.append("lpips_alexnet")
        else:
            not_computed["lpips_alexnet"] = f"not computed: {_LPIPS_FIX}"
        if not inception_path:
            not_computed.update({m: f"not computed: {_INCEPTION_FIX}" for m in ("fid", "kid", "is")})
    else:
        names = []
        for item in items:
            name = _ALIASES.get(item, item)
            if name not in METRIC_NAMES:
                raise ValueError(f"unknown metric {item!r} in {requested!r}; choose auto or from "
                                 f"{', '.join(METRIC_NAMES)} (fid also gives kid and is)")
            if name.startswith("lpips") and not available(name.split("_", 1)[1]):
                raise ValueError(f"metric {name} needs the LPIPS weights, which are not cached: {_LPIPS_FIX} "
                                 f"(or drop {item} from the metric list)")
            if name == "fid" and not inception_path:
                raise ValueError(f"metric {item} needs the FID InceptionV3 weights: {_INCEPTION_FIX} "
                                 f"(or drop {item} from the metric list)")
            if name not in names:
                names.append(name)
    if inception_path and "fid" not in names:
        names.append("fid")
    return names, not_computed


def _protocol(metric, result):
    if isinstance(metric.protocol, dict):
        return {k: metric.protocol.get(k, metric.protocol.get(k.rsplit("_", 1)[0], "")) for k in result}
    return {k: metric.protocol for k in result}


def match_folders(fake_dir, real_dir, real_pattern=r"."):
    """Name-matched ``(frame id, generated path, real path)`` pairs; errors name the folder and the
    unmatched names (a partial set is never scored)."""
    for folder, what in ((fake_dir, "generated-image"), (real_dir, "real-image")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{what} folder {folder} does not exist")
    return match_by_name(fake_dir, real_dir, label_pattern=real_pattern)


def evaluate_folders(fake_dir, real_dir, metrics, batch_size=16, real_pattern=r"."):
    """Run ``metrics`` (objects of the :mod:`common.metrics` state protocol) over name-matched pairs.

    Pairs of one size are batched; a generated image whose size differs from its real image is an error
    naming both files. Returns ``{metric: value, "protocol": {metric: text}, "images": N}``.
    """
    pairs = match_folders(fake_dir, real_dir, real_pattern)
    for m in metrics:
        m.reset()
    for i in tqdm(range(0, len(pairs), batch_size), desc="evaluate", unit="batch"):
        batch = pairs[i:i + batch_size]
        fakes, reals = [read_image(f) for _, f, _ in batch], [read_image(r) for _, _, r in batch]
        for (_, fake_path, real_path), fake, real in zip(batch, fakes, reals):
            if fake.shape != real.shape:
                raise ValueError(f"{fake_path} is {fake.shape[1]}x{fake.shape[0]} but its real image {real_path} "
                                 f"is {real.shape[1]}x{real.shape[0]} (WxH); resize the generated images to the "
                                 f"real size first")
        for shape in dict.fromkeys(a.shape for a in fakes):  # one update per image size, in order
            keep = [j for j, a in enumerate(fakes) if a.shape == shape]
            for m in metrics:
                m.update(np.stack([fakes[j] for j in keep]), np.stack([reals[j] for j in keep]))
    result, protocol = {}, {}
    for m in metrics:
        values = m.compute()
        result.update(values)
        protocol.update(_protocol(m, values))
    result["images"] = len(pairs)
    result["protocol"] = protocol
    return result


def _plain(value, what):
    """A settings value as standard JSON (NumPy scalars unwrapped); error naming ``what`` otherwise."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} is {value}, which standard JSON cannot hold; pass it as text")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise ValueError(f"{what} is a {type(value).__name__} ({value!r}); settings hold numbers, text, "
                     f"booleans or lists of them")


def metrics_record(*, model, checkpoint, metrics, protocol, settings=None, not_computed=None, images=None):
    """The :data:`SCHEMA` record (see the module docstring) for :func:`write_metrics_json`, validated.

    Every metric needs a protocol text; a non-finite value becomes ``null`` with the reason appended to
    its protocol; settings are not metrics (a name in both is an error), nor are not-computed metrics.
    """
    settings, not_computed = dict(settings or {}), dict(not_computed or {})
    record_metrics = {}
    for name, value in metrics.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"metric {name} is {value!r}; metric values are numbers (put settings such as "
                             f"k or num_val in settings=)")
        if not protocol.get(name):
            raise ValueError(f"metric {name} has no protocol text; every number is stored with how it was measured")
        value, text = float(value), str(protocol[name])
        if not math.isfinite(value):
            why = " (identical images)" if name == "psnr" and value > 0 else ""
            value, text = None, f"{text}; value null: it was {value}{why}, which standard JSON cannot hold"
        record_metrics[name] = {"value": value, "protocol": text}
    for name, reason in not_computed.items():
        if name in record_metrics:
            raise ValueError(f"metric {name} is both computed and listed in not_computed")
        if not str(reason).startswith("not computed"):
            raise ValueError(f"not_computed[{name!r}] = {reason!r}; write 'not computed: <the flag that enables it>'")
    both = sorted(set(settings) & set(record_metrics))
    if both:
        raise ValueError(f"{both} given both as metrics and as settings; settings are eval options, not results")
    if images is not None and (isinstance(images, bool) or not isinstance(images, numbers.Integral)):
        raise ValueError(f"images={images!r}; expected the number of evaluated images")
    return {"schema": SCHEMA, "model": str(model), "checkpoint": None if checkpoint is None else str(checkpoint),
            "images": None if images is None else int(images), "metrics": record_metrics,
            "settings": {str(k): _plain(v, f"setting {k}") for k, v in settings.items()},
            "not_computed": {str(k): str(v) for k, v in not_computed.items()}}


def write_metrics_json(path, *, model, checkpoint, metrics, protocol, settings=None, not_computed=None,
                       images=None):
    """Write ``metrics.json`` (e.g. ``outputs/<model>/eval/metrics.json``) atomically in :data:`SCHEMA`.

    Args:
        path: the file to write (parent folders are created).
        model: model name (``"pix2pix"``, ``"crn"``; ``"folders"`` for ``python -m common.metrics``).
        checkpoint: the evaluated checkpoint path, or ``None``.
        metrics: ``{name: number}``.
        protocol: ``{name: text}`` -- how each metric was measured (required for every metric).
        settings: ``{key: value}`` eval options (eval_protocol, k, num_val, ...), not metrics.
        not_computed: ``{metric: "not computed: <flag that enables it>"}`` (see :func:`select_metrics`).
        images: number of evaluated images.

    Returns the record written (a dict in :data:`SCHEMA`).
    """
    record = metrics_record(model=model, checkpoint=checkpoint, metrics=metrics, protocol=protocol,
                            settings=settings, not_computed=not_computed, images=images)
    with atomic_file(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1, allow_nan=False)
            f.write("\n")
    return record
