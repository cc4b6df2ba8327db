"""Shared fixtures: a tiny demo dataset in a per-session cache, a train script run in its own process and a
bit-for-bit comparison of two runs' snapshots."""
import os
import subprocess
import sys

import pytest

# One process runs every model's tests: pin oneDNN to AVX2 (as a user setting) so that no test's
# init_runtime lifts the cap for the rest of the session, where native convolutions would crawl.
# The matmul path (common/conv.py) runs under the same cap in tests; test_pix2pix_cli checks that a
# fresh pix2pix process selects it with AVX-512.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import common  # noqa: E402,F401  (oneDNN ISA before mindspore)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(REPO, "bench"))  # the benchmarks and PyTorch restatements tests import by module name


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


@pytest.fixture
def train_script():
    """``run(model, argv, out)``: ``<model>/train.py ARGV`` in a fresh process, with the process settings its model
    chooses (``common.drivers.configure_process``: MindSpore's variable for copies of Parameter reads removed from the
    environment first); fails the test on a non-zero exit and returns the text of ``out/train.log``."""
    from common.runtime import READ_COPIES_ENV

    def run(model, argv, out):
        env = {k: v for k, v in os.environ.items() if k != READ_COPIES_ENV}
        proc = subprocess.run([sys.executable, f"{model}/train.py"] + list(argv), cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        with open(os.path.join(str(out), "train.log")) as f:
            return f.read()
    return run


@pytest.fixture
def assert_same_snapshots():
    """``check(want, got, components)``: every Parameter of each ``<component>.ckpt`` in snapshot folder ``got``
    equals, bit for bit, the one in ``want``, and both files hold the same names."""
    import mindspore as ms
    import numpy as np

    def check(want, got, components):
        for component in components:
            a = ms.load_checkpoint(os.path.join(str(want), f"{component}.ckpt"))
            b = ms.load_checkpoint(os.path.join(str(got), f"{component}.ckpt"))
            assert set(a) == set(b)
            for name, value in a.items():
                if isinstance(value, ms.Parameter):
                    np.testing.assert_array_equal(b[name].asnumpy(), value.asnumpy(), err_msg=f"{component}: {name}")
    return check
