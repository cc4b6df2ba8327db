"""The project's compiled CPU kernels: ``common/kernels/im2col.cc`` (Im2Col and Col2Im) as a shared library.

:func:`library` compiles the source once per machine with the system's C++ compiler (``g++ -O3 -pthread``,
a second or two) into ``$SYNTHZOO_CACHE/kernels`` (default ``~/.cache/synthzoo/kernels``), named by a hash of
the source and the flags, and returns its path; :class:`common.conv.Im2Col` / :class:`common.conv.Col2Im`
call it through ``ops.Custom(func_type="aot")`` on the matmul and Winograd convolution paths. Where it cannot
be used, they keep MindSpore's own ``Im2Col`` / ``Col2Im`` (same values, 2-6x slower), and :func:`status`
says why: not Linux, no compiler (install ``g++``), the compiler failed, ``MS_CUSTOM_AOT_WHITE_LIST`` set to
a folder that does not hold the cache, or ``SYNTHZOO_CPU_KERNELS=0`` in the environment (the switch for
comparisons: ``SYNTHZOO_CPU_KERNELS=0 python bench/train_step.py ...``).
"""
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

from common.io import cache_root

__all__ = ["library", "status", "SOURCE"]

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "im2col.cc")
FLAGS = ("-O3", "-pthread", "-fPIC", "-shared", "-std=c++14")


@functools.lru_cache(maxsize=None)
def _build():
    """``(path or None, reason)``; the compile runs at most once per process and machine."""
    if os.environ.get("SYNTHZOO_CPU_KERNELS", "1") == "0":
        return None, "SYNTHZOO_CPU_KERNELS=0"
    if platform.system() != "Linux":
        return None, f"MindSpore's aot custom operators need Linux, not {platform.system()}"
    with open(SOURCE, "rb") as f:
        source = f.read()
    digest = hashlib.sha1(source + " ".join(FLAGS).encode()).hexdigest()[:12]
    path = cache_root("kernels", f"im2col-{digest}.so")
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
        done = subprocess.run([compiler, *FLAGS, SOURCE, "-o", tmp], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return None, f"{compiler} failed on {SOURCE}: {done.stderr.strip().splitlines()[-1:]}"
        os.replace(tmp, path)  # atomic: concurrent processes (msrun workers) each write their own tmp
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{compiler} failed on {SOURCE}: {e}"
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path, f"compiled kernels {path}"


def library():
    """Path of the compiled Im2Col / Col2Im library, or None where it cannot be used (:func:`status`)."""
    return _build()[0]


def status():
    """One line for logs: the library in use, or why MindSpore's own kernels run instead."""
    path, reason = _build()
    return f"Im2Col/Col2Im: {reason}" if path else f"Im2Col/Col2Im: MindSpore's kernels ({reason})"
