"""msrun data-parallel training on CPU: gradients are averaged, weights stay identical across ranks."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "dist_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore launcher) not on PATH")
def test_two_worker_step_equals_single_process_batch_of_two(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    cmd = ["msrun", "--worker_num=2", "--local_worker_num=2", f"--master_port={free_port()}",
           f"--log_dir={tmp_path / 'log'}", "--join=True", "--cluster_time_out=300", WORKER, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    logs = "".join(open(os.path.join(tmp_path / "log", f)).read()[-1500:] for f in os.listdir(tmp_path / "log"))
    assert proc.returncode == 0, proc.stdout[-2000:] + logs
    single = subprocess.run([sys.executable, WORKER, str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    r0, r1 = np.load(tmp_path / "rank0_of2.npz"), np.load(tmp_path / "rank1_of2.npz")
    ref = np.load(tmp_path / "rank0_of1.npz")
    assert not np.allclose(r0["losses"], r1["losses"])  # the ranks saw different samples
    keys = [k for k in ref.files if k != "losses"]
    for k in keys:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
        np.testing.assert_allclose(r0[k], ref[k], rtol=1e-4, atol=2e-6, err_msg=k)
