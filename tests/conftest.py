"""Shared fixtures: a tiny demo dataset in a per-session cache and tiny pix2pix configs."""
import os

import pytest

# One process runs every model's tests: pin oneDNN to AVX2 (as a user setting) so that no test's
# init_runtime lifts the cap for the rest of the session, where native convolutions would crawl.
# The matmul path (common/conv.py) runs under the same cap in tests; test_pix2pix_cli checks that a
# fresh pix2pix process selects it with AVX-512.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)

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


@pytest.fixture
def pynative():
    """The test runs in PyNative mode (``common.runtime.eager``), then the session is back in graph mode:
    one-off forwards and gradients without a graph compile each (their compiled use is tested elsewhere)."""
    from common.runtime import eager
    with eager():
        yield


@pytest.fixture(autouse=True)
def cpu_graph_mode():
    """Every test starts in graph mode on CPU: a driver call with ``--mode=pynative`` (``init_runtime``) in an
    earlier test of the same worker would otherwise leave the process in PyNative, and which tests follow it
    depends on pytest-xdist's distribution of the files."""
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
