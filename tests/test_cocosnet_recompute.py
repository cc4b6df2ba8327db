"""CoCosNet's recomputing train step (``recompute=true``) against the single-pass step: one iteration of each from
the same weights and batch gives the same losses, the same parameter updates and the same spectral-norm vectors.
Then the recomputing step again in a process with ``cocosnet/train.py``'s settings (``common.drivers.configure_process``:
no copies of Parameter reads, ``CoCosNetSpec.parameter_read_copies = False``): after two iterations every weight,
spectral vector and Adam moment equals this process's, bit for bit. (Snapshots held as ``u * 1`` instead of
Assigns into Parameters of their own once made the image encoder's weights differ after one iteration.)

Tiny widths at 64x64, graph mode (the steps' own form). The spectral norms' power iteration runs on MindSpore's
operators here (no ``common.conv.use_conv_impl``): the single-pass step then computes ``sigma`` with the same
operators as the recomputing step's stored-vector form, so G and D agree bit for bit. (With the compiled
kernel, which sums in double, ``sigma`` differs in the last float32 bit, and the correlation's softmax at
temperature 0.01 magnifies that into gradient differences of up to about 2 % on a few layers.)
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import Tensor

from common import drivers
from common.config import load_config
from common.runtime import READ_COPIES_ENV, parameter_read_copies_dropped
from common.train import GANTrainStep
from cocosnet.src.spec import CoCosNetSpec
from cocosnet.src.train_step import RecomputingStep, VGGFeatures, _gradient_sources

SPEC = CoCosNetSpec()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L = 7
# lr 1000, eps_G 100: G's first Adam update is about 1.6 x its gradient (beta1 0), far above float32 resolution
TINY = ["--size=64", "--ngf=4", "--corr_channels=8", "--spade_hidden=8", "--ndf=8", "--num_D=1", f"--label_nc={L}",
        "--lr=1000", "--eps_G=100"]


def trainer(recompute):
    ms.set_seed(0)
    cfg = load_config(SPEC.config_path, TINY, recompute=recompute)
    built = SPEC.build_training(cfg, VGGFeatures("vgg16", "torch"), [])
    built.step.set_train()
    return built


NETWORKS = ("Corr", "G", "D")


def parameters(built, names=NETWORKS):
    return [p for name in names for p in built.networks[name].get_parameters()]


def equal_trainers():
    """The single-pass and the recomputing trainer, the latter holding the former's initial weights."""
    single, recomputing = trainer(False), trainer(True)
    for mine, theirs in zip(parameters(recomputing) + list(recomputing.frozen["VGG"].get_parameters()),
                            parameters(single) + list(single.frozen["VGG"].get_parameters())):
        assert (mine.name, mine.shape) == (theirs.name, theirs.shape)  # same checkpoint names either way
        mine.set_data(Tensor(theirs.asnumpy()))
    return single, recomputing


def example_batch():
    """``(seg, ref, ref_seg, real, self_ref)`` at 64x64, batch 2, from a fixed seed."""
    rng = np.random.default_rng(0)

    def one_hot():
        return Tensor(np.eye(L, dtype=np.float32)[rng.integers(0, L, (2, 64, 64))].transpose(0, 3, 1, 2).copy())
    return (one_hot(), Tensor(rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)), one_hot(),
            Tensor(rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)), Tensor(np.array([1.0, 0.0], np.float32)))


def step_state(step):
    """Every Parameter the step holds (weights, spectral vectors, Adam moments): ``{"names": ..., "0": ...}``."""
    params = list(step.get_parameters())
    state = {str(i): p.asnumpy() for i, p in enumerate(params)}
    state["names"] = np.array([p.name for p in params])
    return state


def train_without_copies(path):
    """In a fresh process (``python -c``): the train command's process settings, two recomputing iterations,
    the step's Parameters saved to ``path`` (npz)."""
    cfg = load_config(SPEC.config_path, TINY, recompute=True)
    drivers.configure_process(SPEC, cfg, "graph")
    assert parameter_read_copies_dropped()
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    _, recomputing = equal_trainers()
    batch = example_batch()
    for _ in range(2):
        recomputing.step(*batch)
    np.savez(path, **step_state(recomputing.step))


def test_recomputing_step_equals_the_single_pass_step_and_gives_the_same_bits_without_copies(tmp_path):
    assert not parameter_read_copies_dropped(), "the test process keeps MindSpore's copies of Parameter reads"
    without, log = tmp_path / "without_copies.npz", tmp_path / "child.log"
    env = {k: v for k, v in os.environ.items() if k != READ_COPIES_ENV}
    with open(log, "w") as out:  # the child compiles while this process does
        child = subprocess.Popen([sys.executable, "-c", "import sys; from tests.test_cocosnet_recompute import "
                                  "train_without_copies; train_without_copies(sys.argv[1])", str(without)],
                                 cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        compare_in_process(child, without, log)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def compare_in_process(child, without, log):
    """One single-pass and one recomputing iteration here (losses, updates, spectral vectors), then a second
    recomputing iteration against the ``child``'s two (its npz ``without``, its output ``log``)."""
    single, recomputing = equal_trainers()
    assert type(single.step) is GANTrainStep and type(recomputing.step) is RecomputingStep
    assert "train step: single pass" in single.notes[-1] and "train step: recompute" in recomputing.notes[-1]
    start = {id(p): p.asnumpy().copy() for p in parameters(single)}
    batch = example_batch()

    want = [float(t.asnumpy()) for t in single.step(*batch)]
    got = [float(t.asnumpy()) for t in recomputing.step(*batch)]
    np.testing.assert_allclose(got, want, rtol=1e-6)

    for name in NETWORKS:
        updates_mine, updates_theirs, vectors = [], [], 0
        for mine, theirs in zip(parameters(recomputing, [name]), parameters(single, [name])):
            if theirs.name.rsplit(".", 1)[-1] in ("weight_u", "weight_v"):  # the image encoder's iterate twice
                vectors += 1
                np.testing.assert_array_equal(mine.asnumpy(), theirs.asnumpy(), err_msg=theirs.name)
            else:
                updates_mine.append((mine.asnumpy() - start[id(theirs)]).ravel())
                updates_theirs.append((theirs.asnumpy() - start[id(theirs)]).ravel())
        assert vectors > 0, name
        updates_mine, updates_theirs = np.concatenate(updates_mine), np.concatenate(updates_theirs)
        # Corr: the image encoder's gradient is the sum of two pullbacks here, one in the single pass (rounding)
        assert np.linalg.norm(updates_mine - updates_theirs) <= 1e-6 * np.linalg.norm(updates_theirs), name

    recomputing.step(*batch)
    assert child.wait(timeout=900) == 0, log.read_text()[-3000:]
    theirs, mine = np.load(without), step_state(recomputing.step)
    assert list(theirs["names"]) == list(mine["names"])
    assert {p.name for p in parameters(recomputing)} < set(mine["names"])  # the weights, and the Adam moments too
    for i, name in enumerate(mine["names"]):
        np.testing.assert_array_equal(theirs[str(i)], mine[str(i)], err_msg=name)


def test_gradient_sources_pair_each_parameter_with_its_pullbacks():
    a, b, c = (ms.Parameter(Tensor(np.zeros(1, np.float32)), name=n) for n in "abc")
    # b's gradient comes from two pullbacks (the image encoder on the exemplar and on the real image)
    assert _gradient_sources((a, b, c), ((c,), (b,), (a, b))) == ((2, 0, -1, -1), (1, 0, 2, 1), (0, 0, -1, -1))
    with pytest.raises(ValueError, match="c: in 0 recomputed parts"):
        _gradient_sources((a, c), ((a,),))
    with pytest.raises(ValueError, match="a: in 3 recomputed parts"):
        _gradient_sources((a,), ((a,), (a,), (a,)))
