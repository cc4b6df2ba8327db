"""Shared fixtures: a tiny demo dataset in a per-session cache and tiny pix2pix configs."""
import os

import pytest

import common  # noqa: F401  (oneDNN ISA before mindspore)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A private SYNTHZOO_CACHE for demo data, sharing the user's pretrained weights and downloads (if any)."""
    path = tmp_path_factory.mktemp("synthzoo_cache")
    old = os.environ.get("SYNTHZOO_CACHE")
    user_cache = old or os.path.join(os.path.expanduser("~"), ".cache", "synthzoo")
    for shared in ("weights", "downloads"):
        if os.path.isdir(os.path.join(user_cache, shared)):
            os.symlink(os.path.join(user_cache, shared), os.path.join(str(path), shared))
    os.environ["SYNTHZOO_CACHE"] = str(path)
    yield str(path)
    if old is None:
        os.environ.pop("SYNTHZOO_CACHE", None)
    else:
        os.environ["SYNTHZOO_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def cpu_graph_mode():
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
