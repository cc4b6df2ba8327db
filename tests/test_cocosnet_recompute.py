"""CoCosNet's recomputing train step (``recompute=true``) against the single-pass step: one iteration of each from
the same weights and batch gives the same losses, the same parameter updates and the same spectral-norm vectors.

Tiny widths at 64x64, graph mode (the steps' own form). The spectral norms' power iteration runs on MindSpore's
operators here (no ``common.conv.use_conv_impl``): the single-pass step then computes ``sigma`` with the same
operators as the recomputing step's stored-vector form, so G and D agree bit for bit. (With the compiled
kernel, which sums in double, ``sigma`` differs in the last float32 bit, and the correlation's softmax at
temperature 0.01 magnifies that into gradient differences of up to about 2 % on a few layers.)
"""
import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import Tensor

from common.config import load_config
from common.train import GANTrainStep
from cocosnet.src.spec import CoCosNetSpec
from cocosnet.src.train_step import RecomputingStep, VGGFeatures, _gradient_sources

SPEC = CoCosNetSpec()
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


def test_recomputing_step_equals_the_single_pass_step():
    single, recomputing = trainer(False), trainer(True)
    assert type(single.step) is GANTrainStep and type(recomputing.step) is RecomputingStep
    assert "train step: single pass" in single.notes[-1] and "train step: recompute" in recomputing.notes[-1]
    for mine, theirs in zip(parameters(recomputing) + list(recomputing.frozen["VGG"].get_parameters()),
                            parameters(single) + list(single.frozen["VGG"].get_parameters())):
        assert (mine.name, mine.shape) == (theirs.name, theirs.shape)  # same checkpoint names either way
        mine.set_data(Tensor(theirs.asnumpy()))
    start = {id(p): p.asnumpy().copy() for p in parameters(single)}
    rng = np.random.default_rng(0)

    def one_hot():
        return Tensor(np.eye(L, dtype=np.float32)[rng.integers(0, L, (2, 64, 64))].transpose(0, 3, 1, 2).copy())
    batch = (one_hot(), Tensor(rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)), one_hot(),
             Tensor(rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)), Tensor(np.array([1.0, 0.0], np.float32)))

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


def test_gradient_sources_pair_each_parameter_with_its_pullbacks():
    a, b, c = (ms.Parameter(Tensor(np.zeros(1, np.float32)), name=n) for n in "abc")
    # b's gradient comes from two pullbacks (the image encoder on the exemplar and on the real image)
    assert _gradient_sources((a, b, c), ((c,), (b,), (a, b))) == ((2, 0, -1, -1), (1, 0, 2, 1), (0, 0, -1, -1))
    with pytest.raises(ValueError, match="c: in 0 recomputed parts"):
        _gradient_sources((a, c), ((a,),))
    with pytest.raises(ValueError, match="a: in 3 recomputed parts"):
        _gradient_sources((a,), ((a,), (a,), (a,)))
