"""The project's compiled CPU kernels as one shared library: ``common/kernels/im2col.cc`` (Im2Col and Col2Im)
and ``common/kernels/winograd.cc`` (Winograd's tile transforms and their adjoints).

:func:`library` compiles the sources once per machine with the system's C++ compiler (``g++ -O3 -march=native``,
a few seconds) into ``$SYNTHZOO_CACHE/kernels`` (default ``~/.cache/synthzoo/kernels``), named by a hash of
the sources, the flags and the CPU's features, and returns its path; :class:`common.conv.Im2Col` /
:class:`common.conv.Col2Im` and the Winograd layers (``common.conv._WinogradMatMul``) call it through
``ops.Custom(func_type="aot")`` on the matmul and Winograd convolution paths. Where it cannot be used, they
keep MindSpore's own ``Im2Col`` / ``Col2Im`` and MatMuls (same values, slower), and :func:`status` says why:
not Linux, no compiler (install ``g++``), the compiler failed, ``MS_CUSTOM_AOT_WHITE_LIST`` set to a folder
that does not hold the cache, or ``SYNTHZOO_CPU_KERNELS=0`` in the environment (the switch for comparisons:
``SYNTHZOO_CPU_KERNELS=0 python bench/train_step.py ...``).
"""
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

from common.io import cache_root

__all__ = ["library", "status", "SOURCES"]

SOURCES = tuple(os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", name)
                for name in ("im2col.cc", "winograd.cc"))
FLAGS = ("-O3", "-march=native", "-pthread", "-fPIC", "-shared", "-std=c++14")


def _cpu_features():
    """The CPU's feature list from /proc/cpuinfo (``-march=native`` code runs only where it was built: the
    library's name includes it, so a cache shared between machines holds one library per CPU kind)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), platform.machine())
    except OSError:
        return platform.machine()


@functools.lru_cache(maxsize=None)
def _build():
    """``(path or None, reason)``; the compile runs at most once per process and machine."""
    if os.environ.get("SYNTHZOO_CPU_KERNELS", "1") == "0":
        return None, "SYNTHZOO_CPU_KERNELS=0"
    if platform.system() != "Linux":
        return None, f"MindSpore's aot custom operators need Linux, not {platform.system()}"
    digest = hashlib.sha1((" ".join(FLAGS) + _cpu_features()).encode())
    for source in SOURCES:
        with open(source, "rb") as f:
            digest.update(f.read())
    path = cache_root("kernels", f"synthzoo-{digest.hexdigest()[:12]}.so")
    allowed = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    if allowed and os.path.commonpath([os.path.realpath(path), os.path.realpath(allowed)]) != os.path.realpath(allowed):
        return None, (f"MS_CUSTOM_AOT_WHITE_LIST={allowed} does not hold {path}; add its folder or set "
                      f"SYNTHZOO_CACHE under it")
    if os.path.isfile(path):
        return path, f"compiled kernels {path}"
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        return None, "no C++ compiler (install g++)"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, *SOURCES, "-o", tmp], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return None, f"{compiler} failed on {' '.join(SOURCES)}: {done.stderr.strip().splitlines()[-1:]}"
        os.replace(tmp, path)  # atomic: concurrent processes (msrun workers) each write their own tmp
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{compiler} failed on {' '.join(SOURCES)}: {e}"
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path, f"compiled kernels {path}"


def library():
    """Path of the compiled kernels' library, or None where it cannot be used (:func:`status`)."""
    return _build()[0]


def status():
    """One line for logs: the library in use, or why MindSpore's own kernels run instead."""
    path, reason = _build()
    return f"CPU kernels: {reason}" if path else f"CPU kernels: MindSpore's own ({reason})"
