"""The CUDA 11 runtime of MindSpore's GPU plugin: which libraries it needs, where the pip wheels put them.

The ``mindspore`` wheel's GPU plugin (``mindspore/lib/plugin/libmindspore_gpu.so.11.6``) links against
CUDA 11 libraries that the wheel does not carry. ``requirements-gpu.txt`` installs them as the
``nvidia-*-cu11`` wheels, each under ``site-packages/nvidia/<name>/lib``; the scripts put those folders
on ``LD_LIBRARY_PATH`` when ``DEVICE=GPU`` (they must be there before the process starts: the dynamic
loader reads the variable once). ``libcuda.so.1`` comes with the NVIDIA driver, not from pip.

    python -m common.gpu_runtime ld_path   # the wheel library folders, ':'-joined (for LD_LIBRARY_PATH)
    python -m common.gpu_runtime check     # which libraries the plugin cannot load, and their packages

``check`` exits 1 when a library is missing and prints one line per library with the fix.
"""
import glob
import os
import re
import subprocess
import sys

__all__ = ["LIBRARY_PACKAGES", "DRIVER_LIBRARY", "pinned_requirements", "wheel_library_dirs", "plugin_path", "unresolved_libraries",
           "diagnose"]

# soname -> the pip package (pinned in requirements-gpu.txt) that provides it
LIBRARY_PACKAGES = {
    "libcudart.so.11.0": "nvidia-cuda-runtime-cu11",
    "libcublas.so.11": "nvidia-cublas-cu11",
    "libcublasLt.so.11": "nvidia-cublas-cu11",
    "libcudnn.so.8": "nvidia-cudnn-cu11",
    "libcurand.so.10": "nvidia-curand-cu11",
    "libcusolver.so.11": "nvidia-cusolver-cu11",
    "libcufft.so.10": "nvidia-cufft-cu11",
    "libcusparse.so.11": "nvidia-cusparse-cu11",
    "libnvrtc.so.11.2": "nvidia-cuda-nvrtc-cu11",
}
DRIVER_LIBRARY = "libcuda.so.1"
REQUIREMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements-gpu.txt")


def pinned_requirements(path=REQUIREMENTS):
    """``{package: "package==version"}`` from requirements-gpu.txt (empty when the file is absent)."""
    pins = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                req = line.split("#")[0].strip()
                if req:
                    pins[re.split(r"[=<>~!]", req)[0].strip()] = req
    return pins


def _site_packages():
    import site
    return [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]


def wheel_library_dirs(roots=None):
    """The ``nvidia/*/lib`` folders of installed ``nvidia-*`` wheels under ``roots`` (default: site-packages)."""
    dirs = []
    for root in roots if roots is not None else _site_packages():
        dirs.extend(sorted(d for d in glob.glob(os.path.join(root, "nvidia", "*", "lib")) if os.path.isdir(d)))
    return dirs


def plugin_path():
    """MindSpore's CUDA 11 GPU plugin library (None when this MindSpore build has none)."""
    import importlib.util
    spec = importlib.util.find_spec("mindspore")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "lib", "plugin",
                                          "libmindspore_gpu.so.11*")))
    return found[-1] if found else None


def unresolved_libraries(library, extra_dirs=()):
    """Sonames that ``library``'s dependencies leave unresolved (``ldd``), with ``extra_dirs`` searched first."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(list(extra_dirs) + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p])
    out = subprocess.run(["ldd", library], env=env, capture_output=True, text=True, check=False).stdout
    return [m.group(1) for m in re.finditer(r"^\s*(\S+) => not found", out, re.MULTILINE)]


def diagnose(plugin=None, extra_dirs=None):
    """``(ok, lines)``: whether the GPU plugin's libraries all resolve, and a report naming each missing one."""
    plugin = plugin or plugin_path()
    if plugin is None:
        return False, ["this MindSpore build has no CUDA 11 GPU plugin (mindspore/lib/plugin/libmindspore_gpu.so.11*); "
                       "install the mindspore wheel for Linux x86_64 (requirements.txt)"]
    dirs = wheel_library_dirs() if extra_dirs is None else list(extra_dirs)
    missing = unresolved_libraries(plugin, dirs)
    lines = [f"GPU plugin: {plugin}",
             f"searched: the nvidia wheel folders ({len(dirs)} found), LD_LIBRARY_PATH, the system's loader cache"]
    if not missing:
        return True, lines + ["every CUDA library of the GPU plugin resolves"]
    pins = pinned_requirements()
    for name in missing:
        if name in LIBRARY_PACKAGES:
            package = LIBRARY_PACKAGES[name]
            lines.append(f"missing {name}: provided by the wheel {pins.get(package, package)} (pip install "
                         f"'{pins.get(package, package)}')")
        elif name == DRIVER_LIBRARY:
            lines.append(f"missing {name}: the NVIDIA driver's library (install a driver for CUDA 11, >= 450.80; "
                         f"in a container, run it with the GPU runtime, e.g. docker --gpus all)")
        else:
            lines.append(f"missing {name}: not a CUDA 11 library of requirements-gpu.txt; install the package that "
                         f"provides it")
    wheels = sorted({LIBRARY_PACKAGES[n] for n in missing if n in LIBRARY_PACKAGES})
    if wheels:
        lines.append(f"fix: pip install -r {REQUIREMENTS}, then run through scripts/*.sh with DEVICE=GPU (they set "
                     f"LD_LIBRARY_PATH) or export LD_LIBRARY_PATH=$(python -m common.gpu_runtime ld_path):$LD_LIBRARY_PATH")
    return False, lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["ld_path"]:
        print(os.pathsep.join(wheel_library_dirs()))
        return 0
    if argv == ["check"]:
        ok, lines = diagnose()
        print("\n".join(lines))
        return 0 if ok else 1
    if argv in (["--help"], ["-h"]):
        print(__doc__)
        return 0
    print(__doc__.split("\n\n")[2], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
