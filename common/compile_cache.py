"""MindSpore's frontend compile cache for the train step, in a folder per configuration.

With ``MS_COMPILER_CACHE_ENABLE=1`` MindSpore saves each graph it compiles after the frontend passes (parse,
autodiff, graph optimisation) as MindIR, and a later process that compiles its graphs in the same order loads
them instead, running only the backend (kernel selection and build). MindSpore checks nothing but a hash of
the entry script's local imports, and it fixes the folder once per process; so this module keys the folder
on everything that shapes the graph: MindSpore's version, the sources of ``common/`` and of the model folder,
the configuration (less the keys of :data:`RUN_KEYS`), the runtime (device, mode, convolution path,
precision, oneDNN cap) and every parameter's name, shape and dtype. CoCosNet at 256x256 on CPU, rerun:
about 4 minutes -> 55 s to the first step, peak memory 12.4 -> 9.7 GB (``cocosnet/README.md``).
"""
import hashlib
import json
import os

import mindspore as ms

from common.io import cache_root

RUN_KEYS = ("output_dir", "resume", "max_steps", "save_epoch_freq", "keep_ckpt", "log_every", "num_workers",
            "compile_cache")
SOURCE_SUFFIXES = (".py", ".cc", ".h", ".yaml")
_COMMON = os.path.dirname(os.path.abspath(__file__))
_active_folder = None


def _source_files(folders):
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(SOURCE_SUFFIXES):
                    yield os.path.join(root, name)


def cache_key(model_folder, cfg, rt, networks):
    """Hex digest of what shapes the train step's graph (module docstring); ``networks``: ``{name: Cell}``."""
    digest = hashlib.sha256(ms.__version__.encode())
    for path in _source_files((_COMMON, model_folder)):
        digest.update(os.path.relpath(path, os.path.dirname(_COMMON)).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    settings = {key: value for key, value in cfg.items() if key not in RUN_KEYS}
    runtime = [rt.device_target, rt.mode, rt.group_size, rt.describe_conv]  # path, ISA cap, precision, kernel library
    digest.update(json.dumps([settings, runtime], sort_keys=True, default=str).encode())
    for name in sorted(networks):
        for param in networks[name].get_parameters():
            digest.update(f"{name}/{param.name}:{tuple(param.shape)}:{param.dtype}".encode())
    return digest.hexdigest()[:20]


def use_compile_cache(model, model_folder, cfg, rt, networks):
    """Point MindSpore's compile cache at this configuration's folder; returns one log line.

    Call before the train step's first call, and :func:`stop_caching` after it: MindSpore numbers the graphs
    of a process in compile order and fixes the folder at its first use, so only that one graph is cached, once
    per process. Data-parallel runs and PyNative keep compiling (MindSpore's cache does not cover host
    collectives), as does a process that has cached a graph before.
    """
    global _active_folder
    if rt.mode != "graph" or rt.group_size > 1:
        return "compile cache: off (it serves single-device graph mode)"
    if _active_folder is not None:
        return f"compile cache: off (this process has cached a graph in {_active_folder} already)"
    folder = cache_root("graphs", f"{model}-{cache_key(model_folder, cfg, rt, networks)}")
    _active_folder = folder
    os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
    os.environ["MS_COMPILER_CACHE_PATH"] = folder + os.sep
    if os.path.isfile(os.path.join(folder, "rank_0", "graph_cache", "compile_cache_0.mindir")):
        return f"compile cache: {folder} holds this configuration's train step: only the backend compiles"
    return f"compile cache: {folder} is empty: this run's compile fills it for the next run of this configuration"


def stop_caching():
    """After the train step's first call: later graphs of the process compile as usual."""
    if _active_folder is not None and os.environ.get("MS_COMPILER_CACHE_ENABLE") == "1":
        os.environ["MS_COMPILER_CACHE_ENABLE"] = "0"
