"""Checkpoints: atomic snapshots of every network and optimizer plus the loop state, keep-last-N, resume.

A snapshot is a folder ``<dir>/epoch_EEEE_step_SSSSSSSS/`` holding ``<name>.ckpt`` per component
(``G.ckpt``, ``D.ckpt``, ``opt_G.ckpt`` ...) and ``state.json`` (epoch, step, seed, model meta). It is
built in a temporary folder and renamed into place, so a crash never leaves a half-written snapshot.
``<dir>/latest`` names the newest snapshot. Each ``.ckpt`` carries a ``synthzoo_meta`` JSON string
(model name, architecture keys) so that loading into the wrong network fails with a clear message.
"""
import json
import os
import shutil

import common  # noqa: F401
import mindspore as ms
from mindspore import nn

from common.io import atomic_dir, atomic_file

__all__ = ["CheckpointManager", "save_cell", "load_cell", "read_meta", "resolve_checkpoint", "CheckpointError"]

META_KEY = "synthzoo_meta"


class CheckpointError(ValueError):
    """A checkpoint file is missing or does not fit the network it is loaded into."""


def _own_parameters(cell):
    """``{name relative to cell: Parameter}`` saved for ``cell``; for an optimizer only its state.

    Names come from the cell hierarchy, not ``Parameter.name``: MindSpore rewrites the latter with
    the path of whatever cell a network was compiled inside (``step_G.loss_cell.netG...``).
    """
    skip = {id(p) for p in cell.parameters} if isinstance(cell, nn.Optimizer) else set()
    own, seen = {}, set()
    for name, p in cell.parameters_and_names():
        if id(p) in skip or id(p) in seen:
            continue
        seen.add(id(p))
        own[name] = p
    return own


def save_cell(cell, path, meta=None):
    """Atomically save ``cell``'s parameters (optimizer: its state only) with a JSON ``meta`` dict.

    Raises:
        CheckpointError: ``cell`` holds convolution weights packed for inference (``common.conv.pack_weights``),
            which are not the checkpoint layout.
    """
    if any(getattr(c, "packed", False) for _, c in cell.cells_and_names()):
        raise CheckpointError(f"{type(cell).__name__} holds convolution weights packed for inference "
                              f"(common.conv.pack_weights), not in the checkpoint layout; save the network "
                              f"before packing it")
    data = [{"name": name, "data": p.data} for name, p in _own_parameters(cell).items()]
    with atomic_file(path) as tmp:
        ms.save_checkpoint(data, tmp, append_dict={META_KEY: json.dumps(meta or {}, sort_keys=True)})


def read_meta(path):
    """The ``synthzoo_meta`` dict stored in a .ckpt (empty for foreign checkpoints)."""
    raw = ms.load_checkpoint(path).get(META_KEY)
    return json.loads(raw) if isinstance(raw, str) else {}


def load_cell(cell, path, expect_meta=None, what="network"):
    """Load ``path`` into ``cell`` after checking names, shapes and ``expect_meta``.

    Raises:
        CheckpointError: the file is missing, was saved for another model/architecture (names the
            differing keys), or its parameter shapes differ (names the first mismatching parameter).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        stored = ms.load_checkpoint(path)
    except Exception as e:  # MindSpore raises ValueError/RuntimeError for corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    raw = stored.pop(META_KEY, None)
    meta = json.loads(raw) if isinstance(raw, str) else {}
    for key, want in (expect_meta or {}).items():
        if key == "model" and meta.get(key, want) != want:
            raise CheckpointError(f"checkpoint {path} holds a {meta[key]} network, not {want}; use it with "
                                  f"{meta[key]}/eval.py, predict.py or export.py (saved with {meta})")
        if key in meta and meta[key] != want:
            raise CheckpointError(f"checkpoint {path} was saved for {key}={meta[key]!r}, but the {what} being "
                                  f"loaded has {key}={want!r}; pass the matching --{key}={meta[key]} or another "
                                  f"checkpoint (saved with {meta})")
    stored = {k: v for k, v in stored.items() if hasattr(v, "shape")}
    own = _own_parameters(cell)
    missing = [n for n in own if n not in stored]
    if missing:
        raise CheckpointError(f"checkpoint {path} does not fit the {what}: {len(missing)} parameters are missing, "
                              f"e.g. {missing[:3]} (file saved with {meta or 'no synthzoo metadata'})")
    for name, p in own.items():
        if tuple(stored[name].shape) != tuple(p.shape):
            raise CheckpointError(f"checkpoint {path} does not fit the {what}: parameter {name!r} has shape "
                                  f"{tuple(stored[name].shape)} in the file but {tuple(p.shape)} in the network "
                                  f"(file saved with {meta or 'no synthzoo metadata'}); check the size/width options")
    for name, p in own.items():
        p.set_data(ms.Tensor(stored[name].asnumpy(), p.dtype))
    return meta


def resolve_checkpoint(path, component="G"):
    """``path`` may be a .ckpt file, a snapshot folder or a checkpoint folder (uses ``latest``); a folder without
    ``<component>.ckpt`` that holds another model's checkpoints is refused naming that model."""
    if os.path.isfile(path):
        return path
    if os.path.isfile(os.path.join(path, "latest")):
        with open(os.path.join(path, "latest")) as f:
            path = os.path.join(path, f.read().strip())
    candidate = os.path.join(path, f"{component}.ckpt")
    if os.path.isfile(candidate):
        return candidate
    other = _folder_model(path)
    if other:
        raise CheckpointError(f"no {component} checkpoint at {path}: it holds a {other} network's checkpoints; use "
                              f"them with {other}/eval.py, predict.py or export.py (or scripts/run_*.sh {other})")
    raise CheckpointError(f"no {component} checkpoint at {path}: pass a .ckpt file, a snapshot folder or a "
                          f"checkpoint folder holding 'latest' (train.py writes them under outputs/<model>/ckpt)")


def _folder_model(path):
    """The model whose checkpoints the folder ``path`` holds: its ``state.json``'s (a snapshot), else the first of its
    .ckpt files (smallest first) that records one; None when none does."""
    try:
        with open(os.path.join(path, "state.json")) as f:
            model = json.load(f).get("meta", {}).get("model")
        if model:
            return model
    except (OSError, ValueError, AttributeError):
        pass
    files = [os.path.join(path, f) for f in os.listdir(path) if f.endswith(".ckpt")] if os.path.isdir(path) else []
    for file in sorted(files, key=os.path.getsize):
        try:
            model = read_meta(file).get("model")
        except (ValueError, RuntimeError):  # an unreadable file names no model
            continue
        if model:
            return model
    return None


class CheckpointManager:
    """Save/restore training snapshots under ``directory`` keeping the newest ``keep``."""

    def __init__(self, directory, keep=3, meta=None):
        self.directory = directory
        self.keep = max(int(keep), 1)
        self.meta = dict(meta or {})

    def _snapshots(self):
        if not os.path.isdir(self.directory):
            return []
        return sorted(d for d in os.listdir(self.directory)
                      if d.startswith("epoch_") and os.path.isfile(os.path.join(self.directory, d, "state.json")))

    def latest(self):
        """Path of the newest complete snapshot, or None."""
        pointer = os.path.join(self.directory, "latest")
        if os.path.isfile(pointer):
            with open(pointer) as f:
                path = os.path.join(self.directory, f.read().strip())
            if os.path.isfile(os.path.join(path, "state.json")):
                return path
        snaps = self._snapshots()
        return os.path.join(self.directory, snaps[-1]) if snaps else None

    def save(self, components, state):
        """Write a snapshot of ``components`` ({name: Cell}) and ``state`` (must hold epoch and step)."""
        name = f"epoch_{int(state['epoch']):04d}_step_{int(state['step']):08d}"
        final = os.path.join(self.directory, name)
        with atomic_dir(final) as tmp:
            for key, cell in components.items():
                save_cell(cell, os.path.join(tmp, f"{key}.ckpt"), dict(self.meta, component=key))
            with open(os.path.join(tmp, "state.json"), "w") as f:
                json.dump(dict(state, meta=self.meta), f, indent=1, sort_keys=True)
        with atomic_file(os.path.join(self.directory, "latest")) as tmp:
            with open(tmp, "w") as f:
                f.write(name + "\n")
        for old in self._snapshots()[:-self.keep]:
            shutil.rmtree(os.path.join(self.directory, old), ignore_errors=True)
        return final

    def read_state(self, path=None):
        """The ``state.json`` dict of snapshot ``path`` (default: latest)."""
        path = path or self.latest()
        if path is None:
            raise CheckpointError(f"no snapshot to resume from in {self.directory}")
        with open(os.path.join(path, "state.json")) as f:
            return json.load(f)

    def restore(self, components, path=None):
        """Load ``components`` from snapshot ``path`` (default: latest); returns its state dict."""
        path = path or self.latest()
        state = self.read_state(path)
        arch = {k: v for k, v in self.meta.items() if k not in ("component", "dataroot", "data")}  # data may move
        for key, cell in components.items():
            load_cell(cell, os.path.join(path, f"{key}.ckpt"), arch, what=key)
        return state
