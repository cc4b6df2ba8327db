"""MindSpore's frontend compile cache for the train step, in a folder per configuration.

With ``MS_COMPILER_CACHE_ENABLE=1`` MindSpore saves each graph it compiles after the frontend passes (parse,
autodiff, graph optimisation) as MindIR, and a later process that compiles its graphs in the same order loads
them instead, running only the backend (kernel selection and build). MindSpore checks nothing but a hash of
the entry script's local imports, and it fixes the folder once per process; so this module keys the folder
on everything that shapes the graph: MindSpore's version, the sources of ``common/`` and of the model folder,
the configuration (less the keys of :data:`RUN_KEYS`), the runtime (device, mode, convolution path,
precision, oneDNN cap, whether Parameter reads are copied) and every parameter's name, shape and dtype.
CoCosNet at 256x256 on CPU, rerun: about 4 minutes -> 55 s to the first step, peak memory 12.4 -> 9.7 GB
(``cocosnet/README.md``).

The same mechanism serves ``separate_compile`` (``common.drivers.train``): a child process compiles the step
(:func:`compile_only`) into the folder and exits, so the compiler's working memory goes back to the system
before the training process allocates its activations; that process then loads the step as a rerun would.
"""
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import mindspore as ms

from common.io import cache_root
from common.runtime import READ_COPIES_ENV

RUN_KEYS = ("output_dir", "resume", "max_steps", "save_epoch_freq", "keep_ckpt", "log_every", "num_workers",
            "compile_cache", "separate_compile", "trim_heap")
SOURCE_SUFFIXES = (".py", ".cc", ".h", ".yaml")
_COMMON = os.path.dirname(os.path.abspath(__file__))
_active_folder = None
_temporary = False


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
    # path, ISA cap, precision, kernel library; the copies of Parameter reads are inserted by the frontend
    runtime = [rt.device_target, rt.mode, rt.group_size, rt.describe_conv, os.environ.get(READ_COPIES_ENV, "")]
    digest.update(json.dumps([settings, runtime], sort_keys=True, default=str).encode())
    for name in sorted(networks):
        for param in networks[name].get_parameters():
            digest.update(f"{name}/{param.name}:{tuple(param.shape)}:{param.dtype}".encode())
    return digest.hexdigest()[:20]


def use_compile_cache(model, model_folder, cfg, rt, networks, *, temporary=False):
    """Point MindSpore's compile cache at this configuration's folder (``temporary``: a new folder that
    :func:`stop_caching` removes, for ``separate_compile`` without ``compile_cache``); returns one log line.

    Call before the train step's first call, and :func:`stop_caching` after it: MindSpore numbers the graphs
    of a process in compile order and fixes the folder at its first use, so only that one graph is cached, once
    per process. Data-parallel runs and PyNative keep compiling (MindSpore's cache does not cover host
    collectives), as does a process that has cached a graph before or runs no script file (``python -c``,
    pytest-xdist's workers: MindSpore would fail reading ``sys.argv[0]``).
    """
    global _active_folder, _temporary
    if rt.mode != "graph" or rt.group_size > 1:
        return "compile cache: off (it serves single-device graph mode)"
    if _active_folder is not None:
        return f"compile cache: off (this process has cached a graph in {_active_folder} already)"
    if sys.argv and sys.argv[0] and not os.path.isfile(sys.argv[0]):
        return (f"compile cache: off (MindSpore's cache hashes the entry script's imports, and this process has no "
                f"script: sys.argv[0] = {sys.argv[0]!r})")
    if temporary:
        folder = tempfile.mkdtemp(prefix=f"synthzoo-{model}-graph-")
    else:
        folder = cache_root("graphs", f"{model}-{cache_key(model_folder, cfg, rt, networks)}")
    _active_folder, _temporary = folder, temporary
    os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
    os.environ["MS_COMPILER_CACHE_PATH"] = folder + os.sep
    if temporary:
        return f"compile cache: {folder}, for this run only (compile_cache=false)"
    if holds_train_step(folder):
        return f"compile cache: {folder} holds this configuration's train step: only the backend compiles"
    return f"compile cache: {folder} is empty: this run's compile fills it for the next run of this configuration"


def caching_folder():
    """The folder that the process's next compile reads or fills: the one :func:`use_compile_cache` chose,
    until :func:`stop_caching` (None: the cache is off)."""
    if _active_folder is not None and os.environ.get("MS_COMPILER_CACHE_ENABLE") == "1":
        return _active_folder
    return None


def holds_train_step(folder):
    """Whether ``folder`` holds a compiled train step (MindSpore's first graph of a process)."""
    return os.path.isfile(os.path.join(folder, "rank_0", "graph_cache", "compile_cache_0.mindir"))


def forget_train_step(folder):
    """Remove what a compile left in ``folder`` (a failed separate compile may leave part of it)."""
    shutil.rmtree(os.path.join(folder, "rank_0"), ignore_errors=True)


def compile_only(cell, inputs):
    """Compile ``cell`` for ``inputs`` as its first call would (the same graph, so the same cache entry),
    without running it: no activation memory is allocated."""
    cell.check_names_and_refresh_name()  # what Cell.__call__ does before it compiles
    cell.compile(*inputs)


def compile_apart(task, *args):
    """``task(*args)`` in a fresh process (spawned: nothing of this one's memory) that compiles a train step into
    the active compile-cache folder and returns its peak memory in GB; returns ``(seconds, peak GB or None, error
    text or None)``."""
    start = time.perf_counter()
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            peak, error = pool.submit(task, *args).result(), None
    except Exception as e:  # the child's own failure, re-raised here, or its death (BrokenProcessPool)
        peak, error = None, f"{type(e).__name__}: {e}"
    return time.perf_counter() - start, peak, error


class BoundStep:
    """A train step bound to one batch (``<model>/src/utils.py: make_bench_step``): calling it runs the step and
    returns its outputs as arrays (so the call waits for them); :meth:`compile` only compiles it
    (``bench/train_step.py --separate_compile``)."""

    def __init__(self, step, inputs):
        self.step, self.inputs = step, list(inputs)

    def __call__(self):
        outputs = self.step(*self.inputs)
        return [o.asnumpy() for o in (outputs if isinstance(outputs, (tuple, list)) else (outputs,))]

    def compile(self):
        compile_only(self.step, self.inputs)


def stop_caching():
    """After the train step's first call: later graphs of the process compile as usual; a temporary folder
    is removed."""
    if _active_folder is not None and os.environ.get("MS_COMPILER_CACHE_ENABLE") == "1":
        os.environ["MS_COMPILER_CACHE_ENABLE"] = "0"
        if _temporary:
            shutil.rmtree(_active_folder, ignore_errors=True)
