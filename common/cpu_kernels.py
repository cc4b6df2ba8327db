"""The project's compiled CPU kernels as one shared library: ``common/kernels/im2col.cc`` (Im2Col and Col2Im),
``common/kernels/winograd.cc`` (Winograd's tile transforms and their adjoints), ``common/kernels/activations.cc``
(LeakyReLU and its gradient, the last-axis softmax's gradient), ``common/kernels/resize.cc`` (nearest upsampling,
average pooling and their gradients), ``common/kernels/spectral_norm.cc`` (spectral normalisation's power iteration,
the output-scaled form's scale and bias, and their gradients), ``common/kernels/grid_sample.cc`` (affine warps by
bilinear sampling and their adjoint), ``common/kernels/pairwise.cc`` (mean absolute differences between a batch's
samples and their gradient) and ``common/kernels/onednn_conv.cc`` (oneDNN's own convolution kernels, called directly:
the ``onednn`` convolution path; linked against the ``libdnnl.so.3`` that MindSpore ships).

:func:`library` compiles the sources once per machine with the system's C++ compiler (``g++ -O3 -march=native``, a few
seconds; without ``-march=native`` where the compiler refuses it) into ``$SYNTHZOO_CACHE/kernels`` (default
``~/.cache/synthzoo/kernels``), named by a hash of the sources, the flags and the CPU's features, and returns its
path; :class:`common.conv.Im2Col` / :class:`common.conv.Col2Im` and the Winograd layers
(``common.conv._WinogradMatMul``) call it through ``ops.Custom(func_type="aot")`` on the matmul and Winograd
convolution paths (and the oneDNN convolutions on the ``onednn`` path), :class:`common.layers.LeakyReLU`,
:class:`common.layers.Softmax` (its backward), :class:`common.layers.NearestUpsample`,
:class:`common.layers.AvgPool2d`, :class:`common.layers.AffineResample`, :class:`common.layers.PairwiseMeanAbs`,
:class:`common.layers.PowerIteration` and :class:`common.conv.ScaledBiasAdd` (spectral norms) on every path
(``common.conv.use_conv_impl`` hands the path out). Where it cannot be used, they keep MindSpore's own ``Im2Col`` /
``Col2Im``, MatMuls and elementwise operators (same values, slower; the ``onednn`` path takes the matmul form), and
:func:`status` says why: not Linux, no compiler (install ``g++``), the compiler failed, ``MS_CUSTOM_AOT_WHITE_LIST``
set to a folder that does not hold the cache, or ``SYNTHZOO_CPU_KERNELS=0`` in the environment (the switch for
comparisons: ``SYNTHZOO_CPU_KERNELS=0 python bench/train_step.py ...``)."""
import functools
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import tempfile

from common.io import cache_root

__all__ = ["library", "status", "SOURCES"]

KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
SOURCES = tuple(os.path.join(KERNELS, name) for name in ("im2col.cc", "winograd.cc", "activations.cc", "resize.cc",
                                                          "spectral_norm.cc", "grid_sample.cc", "pairwise.cc",
                                                          "onednn_conv.cc"))
HEADERS = tuple(os.path.join(KERNELS, name) for name in ("parallel.h", "onednn_api.h"))  # part of the hash


def _mindspore_lib():
    """MindSpore's ``lib`` folder (holds ``libdnnl.so.3``), found without importing MindSpore."""
    spec = importlib.util.find_spec("mindspore")
    folders = list(spec.submodule_search_locations or []) if spec else []
    return os.path.join(folders[0], "lib") if folders else "."


FLAGS = ("-O3", "-pthread", "-fPIC", "-shared", "-std=c++14", f"-L{_mindspore_lib()}", "-l:libdnnl.so.3",
         f"-Wl,-rpath,{_mindspore_lib()}")
TUNED = ("-march=native",)  # dropped (a portable build) where the compiler refuses it


def _cpu_features():
    """The CPU's feature list from /proc/cpuinfo (``-march=native`` code runs only where it was built: the
    library's name includes it, so a cache shared between machines holds one library per CPU kind)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), platform.machine())
    except OSError:
        return platform.machine()


def _library_path(flags):
    """The cached library built from SOURCES (which include HEADERS) with ``flags``, named by a hash of all of them
    (and of the CPU for tuned builds)."""
    digest = hashlib.sha1((" ".join(flags) + (_cpu_features() if TUNED[0] in flags else "")).encode())
    for source in SOURCES + HEADERS:
        with open(source, "rb") as f:
            digest.update(f.read())
    return cache_root("kernels", f"synthzoo-{digest.hexdigest()[:12]}.so")


def _compile(compiler, flags, path):
    """Build ``path``; None when done, else the compiler's last error line."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    try:
        done = subprocess.run([compiler, *SOURCES, *flags, "-o", tmp], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return " ".join(done.stderr.strip().splitlines()[-1:]) or f"exit status {done.returncode}"
        os.replace(tmp, path)  # atomic: concurrent processes (msrun workers) each write their own tmp
        return None
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@functools.lru_cache(maxsize=None)
def _build():
    """``(path or None, reason)``; the compile runs at most once per process and machine: tuned for this CPU, or
    portable where the compiler refuses ``-march=native``."""
    if os.environ.get("SYNTHZOO_CPU_KERNELS", "1") == "0":
        return None, "SYNTHZOO_CPU_KERNELS=0"
    if platform.system() != "Linux":
        return None, f"MindSpore's aot custom operators need Linux, not {platform.system()}"
    builds = [(FLAGS + TUNED, _library_path(FLAGS + TUNED)), (FLAGS, _library_path(FLAGS))]
    allowed = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    folder = os.path.dirname(builds[0][1])
    if allowed and os.path.commonpath([os.path.realpath(folder), os.path.realpath(allowed)]) != \
            os.path.realpath(allowed):
        return None, (f"MS_CUSTOM_AOT_WHITE_LIST={allowed} does not hold {builds[0][1]}; add its folder or set "
                      f"SYNTHZOO_CACHE under it")
    for _, path in builds:
        if os.path.isfile(path):
            return path, f"compiled kernels {path}"
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        return None, "no C++ compiler (install g++)"
    tuned_error = _compile(compiler, *builds[0])
    if tuned_error is None:
        return builds[0][1], f"compiled kernels {builds[0][1]}"
    error = _compile(compiler, *builds[1])
    if error is None:
        return builds[1][1], f"compiled kernels {builds[1][1]} (portable: {TUNED[0]} failed: {tuned_error})"
    return None, f"{compiler} failed on {' '.join(SOURCES)}: {error}"


def library():
    """Path of the compiled kernels' library, or None where it cannot be used (:func:`status`)."""
    return _build()[0]


def status():
    """One line for logs: the library in use, or why MindSpore's own kernels run instead."""
    path, reason = _build()
    return f"CPU kernels: {reason}" if path else f"CPU kernels: MindSpore's own ({reason})"
