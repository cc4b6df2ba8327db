"""The demo's model handling, free of any UI: label maps in, images out, latency measured.

* :func:`colors_to_ids` reads an uploaded colour label map strictly (unknown colours are an error that
  names them); :func:`painting_to_ids` reads a painted canvas, whose antialiased stroke edges are snapped
  to the nearest palette colour.
* :func:`flood_fill` is the canvas's bucket fill: the connected region of one class at a point.
* :class:`DemoModel` loads a model once (``common.drivers.load_inference``, or the newest ONNX export)
  and runs it per request.
* :func:`ensure_checkpoint` trains the built-in demo model when a model has no checkpoint yet.
"""
import glob
import json
import os
import time

import cv2
import numpy as np

from common.backends import load_backend
from common.checkpoint import CheckpointError, resolve_checkpoint
from common.drivers import load_inference, parse, train
from common.runtime import init_runtime
from demo.adapters import IGNORE, adapter_for

__all__ = ["colors_to_ids", "painting_to_ids", "flood_fill", "check_size", "read_exemplar", "find_onnx",
           "ensure_checkpoint", "model_config", "DemoModel"]

MAX_LISTED = 6


def _hex(rgb):
    return "#%02x%02x%02x" % tuple(int(c) for c in rgb)


def colors_to_ids(rgb, palette, source="label map"):
    """``[H, W, 3]`` uint8 colour label map -> ``[H, W]`` ids by exact match (last palette row = void = IGNORE).

    Raises:
        ValueError: a colour is not in ``palette``; names the colours, their pixel counts and the fix.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{source}: image of shape {rgb.shape}; expected an RGB colour label map")
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = (palette[:, 0].astype(np.int64) << 16) | (palette[:, 1].astype(np.int64) << 8) | palette[:, 2]
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys[order], code), 0, len(keys) - 1)
    known = keys[order][pos] == code
    if not known.all():
        values, counts = np.unique(code[~known], return_counts=True)
        top = np.argsort(-counts)[:MAX_LISTED]
        listed = ", ".join(f"{_hex(((v >> 16) & 255, (v >> 8) & 255, v & 255))} ({c} px)"
                           for v, c in zip(values[top], counts[top]))
        raise ValueError(f"{source}: {int((~known).sum())} pixels have colours outside the model's palette "
                         f"({len(values)} colours: {listed}); save the label map as PNG (no JPEG blur, no "
                         f"antialiasing) with the palette colours shown on the page, or paint it on the canvas")
    ids = order[pos].astype(np.int64)
    return np.where(ids == len(palette) - 1, IGNORE, ids)


def painting_to_ids(rgba, palette, size, background=IGNORE):
    """A painted canvas ``[h, w, 4]`` (or 3) uint8 -> ``[H, W]`` ids at ``size`` = (H, W).

    Pixels are snapped to the nearest palette colour (brush edges are antialiased), fully transparent
    pixels take ``background``, and the map is resized with nearest-neighbour sampling.
    """
    img = np.asarray(rgba)
    rgb = img[..., :3].astype(np.int32)
    dist = ((rgb[:, :, None, :] - palette[None, None].astype(np.int32)) ** 2).sum(-1)
    ids = np.argmin(dist, axis=-1)
    ids = np.where(ids == len(palette) - 1, IGNORE, ids)
    if img.shape[2] == 4:
        ids = np.where(img[..., 3] == 0, background, ids)
    height, width = size
    if ids.shape != (height, width):
        ids = cv2.resize(ids.astype(np.uint16), (width, height), interpolation=cv2.INTER_NEAREST)
    return ids.astype(np.int64)


def flood_fill(ids, point, value):
    """Bucket fill: ``[H, W]`` ids -> a copy whose 4-connected region of equal ids holding ``point`` = (y, x)
    is set to ``value`` (void fills as any class does).

    Raises:
        ValueError: ``point`` outside the map.
    """
    from scipy import ndimage
    ids = np.asarray(ids)
    y, x = (int(v) for v in point)
    if not (0 <= y < ids.shape[0] and 0 <= x < ids.shape[1]):
        raise ValueError(f"fill point (x={x}, y={y}) is outside the {ids.shape[1]}x{ids.shape[0]} label map")
    regions, _ = ndimage.label(ids == ids[y, x])  # the default structure: 4-connectivity
    out = ids.copy()
    out[regions == regions[y, x]] = value
    return out


def check_size(shape, size, source="label map"):
    """Raise a ValueError naming ``source`` unless ``shape[:2]`` is ``size`` = (H, W)."""
    if tuple(shape[:2]) != tuple(size):
        raise ValueError(f"{source} is {shape[1]}x{shape[0]} (WxH) but the loaded model takes {size[1]}x{size[0]}; "
                         f"resize it with nearest-neighbour sampling, or paint on the canvas")


def read_exemplar(adapter, path):
    """The uploaded exemplar at ``path`` as ``[H, W, 3]`` uint8 RGB (None for a model without exemplars).

    Raises:
        ValueError: no upload, or a file that is not an image (names the file and the fix).
    """
    from common.io import read_image
    if not adapter.needs_exemplar:
        return None
    if not path:
        raise ValueError(f"{adapter.name} translates with an exemplar photo: upload one")
    try:
        return read_image(path)
    except ValueError as e:
        raise ValueError(f"exemplar {os.path.basename(path)} is not an image ({e}); upload a PNG or JPEG photo") from None


def find_onnx(output_dir, name, part=""):
    """The newest ``<output_dir>/export/*<part>.onnx`` whose JSON note says it is a ``name`` graph, or None."""
    found = []
    for path in glob.glob(os.path.join(output_dir, "export", f"*{part}.onnx")):
        note = os.path.splitext(path)[0] + ".json"
        try:
            with open(note) as f:
                if json.load(f).get("model") == name:
                    found.append(path)
        except (OSError, ValueError):
            continue
    return max(found, key=os.path.getmtime) if found else None


def model_config(name, outputs, argv=(), ckpt=""):
    """The config of model ``name`` as ``predict.py`` would see it (output_dir ``<outputs>/<name>``)."""
    adapter = adapter_for(name)
    return parse(adapter.spec(), list(argv), output_dir=os.path.join(outputs, name), ckpt=ckpt)


def has_checkpoint(adapter, cfg):
    try:
        resolve_checkpoint(cfg.ckpt or os.path.join(cfg.output_dir, "ckpt"), adapter.spec().inference_components[0])
        return True
    except CheckpointError:
        return False


def ensure_checkpoint(name, cfg, log=print):
    """Train the built-in demo model of ``name`` into ``cfg.output_dir`` when it has no checkpoint yet.

    An explicit ``cfg.ckpt`` is never replaced: a missing one is the caller's error (raised by loading).
    Returns True when it trained.
    """
    adapter = adapter_for(name)
    if cfg.ckpt or has_checkpoint(adapter, cfg):
        return False
    log(f"[demo] no {name} checkpoint under {cfg.output_dir}/ckpt: training the built-in demo model first "
        f"(as bash scripts/run_train.sh {name} CPU; progress below, snapshots in {cfg.output_dir}/ckpt) ...")
    train(adapter.spec(), cfg)
    log(f"[demo] {name} demo model trained; starting the page")
    return True


class DemoModel:
    """One model loaded once: its config, runners (MindSpore networks or ONNX files), palette and canvas size.

    Args:
        name: spec name (a key of ``demo.adapters.ADAPTERS``).
        cfg: the model's config (:func:`model_config`); ``cfg.ckpt`` empty = newest snapshot.
        backend: ``mindspore`` or ``onnx`` (the newest ``export.py`` ONNX file(s) of the model: the
            adapter's ``onnx_parts``, one export's files).
    """

    def __init__(self, name, cfg, backend="mindspore", log=print):
        self.name, self.cfg, self.backend = name, cfg, backend
        self.adapter = adapter_for(name)
        if backend not in ("mindspore", "onnx"):
            raise ValueError(f"backend '{backend}' is not mindspore or onnx")
        self.onnx_path = None
        if backend == "onnx":
            nets = self._load_onnx(cfg)
        else:
            rt = init_runtime(cfg.device_target, cfg.mode, cfg.seed, cpu_conv=cfg.cpu_conv)
            nets, self.checkpoint = load_inference(self.adapter.spec(), cfg, rt.conv_impl, log=log)
        self.runners = self.adapter.spec().runners(cfg, nets)  # as predict.py runs them (modes set)
        self.palette = self.adapter.palette(cfg)
        self.size = self.adapter.size(cfg)
        if not self.adapter.takes_label_map:  # graph compilation off the first request
            self.warm_up_ms = self.sample(1, 0)[2]
        else:
            exemplar = np.full(self.size + (3,), 128, np.uint8) if self.adapter.needs_exemplar else None
            self.warm_up_ms = self.run(np.full(self.size, IGNORE, np.int64), exemplar)[1]

    def _load_onnx(self, cfg):
        """``cfg.ckpt`` if it is an .onnx file (of a multi-file export: any of its parts), else the newest
        export -> ``{component: GraphRunner}`` (onnxruntime), the adapter's ``onnx_parts`` in the order of the
        spec's inference components; the first part's JSON note's architecture keys replace the config's."""
        spec = self.adapter.spec()
        parts = self.adapter.onnx_parts
        files = " + ".join(f"*{part}.onnx" for part in parts)
        if cfg.ckpt.endswith(".onnx"):
            stem = next((cfg.ckpt[:-len(part + ".onnx")] for part in parts if cfg.ckpt.endswith(part + ".onnx")), None)
            if stem is None:
                raise ValueError(f"{cfg.ckpt}: the {self.name} ONNX backend runs the files {files} of one export; "
                                 f"give one of those")
        else:
            path = find_onnx(cfg.output_dir, self.name, parts[0])
            if path is None:
                raise FileNotFoundError(f"no ONNX export of {self.name} ({files}) under {cfg.output_dir}/export; run "
                                        f"bash scripts/run_export.sh {self.name} ONNX, or choose the MindSpore backend")
            stem = path[:-len(parts[0] + ".onnx")]
        paths = {part: f"{stem}{part}.onnx" for part in parts}
        for path in paths.values():
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} is missing (the {self.name} ONNX backend runs {files} of one "
                                        f"export); export them with bash scripts/run_export.sh {self.name} ONNX")
        path = paths[parts[0]]
        note_path = os.path.splitext(path)[0] + ".json"
        if not os.path.isfile(note_path):
            raise FileNotFoundError(f"{path} has no {os.path.basename(note_path)} beside it (export.py writes one); "
                                    f"export it with bash scripts/run_export.sh {self.name} ONNX")
        with open(note_path) as f:
            note = json.load(f)
        if note.get("model") != self.name:
            raise CheckpointError(f"{path} holds a {note.get('model')} graph, not {self.name}; choose that model")
        for key in spec.arch_keys:
            if key in note:
                cfg[key] = note[key]
        self.checkpoint = note.get("checkpoint", "?")
        self.onnx_path = path if len(parts) == 1 else stem + "{" + ",".join(parts) + "}.onnx"
        return {component: load_backend("onnxruntime", paths[part])
                for component, part in zip(spec.inference_components, parts)}

    def describe(self):
        """One line: model, backend and file, label set, canvas size."""
        source = f"ONNX {self.onnx_path}" if self.onnx_path else f"MindSpore {self.checkpoint}"
        return (f"{self.name} ({source}); {self.adapter.label_set(self.cfg)}; label maps of "
                f"{self.size[1]}x{self.size[0]} pixels")

    def run(self, ids, exemplar=None):
        """``[H, W]`` ids -> (list of ``[H, W, 3]`` uint8 images, milliseconds of the model call)."""
        check_size(ids.shape, self.size)
        start = time.perf_counter()
        images = self.adapter.generate(self.cfg, self.runners, ids, exemplar)
        return images, 1000.0 * (time.perf_counter() - start)

    def sample(self, n, seed):
        """A model without label maps: ``n`` samples of noise ``seed`` -> (images, captions, milliseconds)."""
        start = time.perf_counter()
        images, captions = self.adapter.sample(self.cfg, self.runners, n, seed)
        return images, captions, 1000.0 * (time.perf_counter() - start)
