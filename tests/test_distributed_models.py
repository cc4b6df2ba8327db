"""CoCosNet and OSMIS under msrun on CPU (2 workers, 2 compiled steps each) through the shared driver: both ranks
keep identical weights and train on disjoint samples. (Their own file, so that pytest-xdist's --dist loadfile
runs it beside test_distributed.py.)"""
import os

import numpy as np
import pytest

import common  # noqa: F401

from common import drivers
from tests.msrun_launch import COCOSNET, OSMIS, argv, finish, free_port, launch_env, msrun, needs_msrun, worker_module


@pytest.fixture(scope="module")
def env(demo_cache):
    """Environment of the launched processes (each test writes its model's demo set before the ranks start)."""
    return launch_env(demo_cache)


def check_ranks_agree(record):
    """After the launch: both ranks hold the same trained weights and trained on disjoint samples."""
    r0, r1 = np.load(os.path.join(record, "rank0_of2.npz")), np.load(os.path.join(record, "rank1_of2.npz"))
    assert len(r0["indices"]) == len(r1["indices"]) > 0 and not set(r0["indices"]) & set(r1["indices"])
    names = [k for k in r0.files if "/" in k and not k.startswith("init:")]
    assert names and sorted(names) == sorted(k for k in r1.files if "/" in k and not k.startswith("init:"))
    for k in names:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    assert max(float(np.abs(r0[k] - r0["init:" + k]).max()) for k in names) > 1e-4  # the steps did train


@needs_msrun
@pytest.mark.parametrize("model, settings", [("cocosnet", COCOSNET), ("osmis", OSMIS)])
def test_two_workers_keep_equal_weights_on_disjoint_samples(tmp_path, env, model, settings):
    """CoCosNet and OSMIS through the shared driver under msrun (2 CPU workers, 2 steps)."""
    spec = worker_module().spec_class(model)()
    spec.demo_dataroot(drivers.parse(spec, argv(settings)))  # the demo set exists before any rank starts
    proc = msrun(env, model, tmp_path / "rec", tmp_path / "log", argv(settings, max_steps=2, output_dir=tmp_path / "out"),
                 free_port())
    finish(proc, tmp_path / "log")
    check_ranks_agree(str(tmp_path / "rec"))
    assert "on 2 CPU device(s)" in open(tmp_path / "out" / "train.log").read()
