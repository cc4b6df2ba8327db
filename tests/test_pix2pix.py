"""pix2pix: architecture, data checks, one-step update, learning on the demo data, resume, signals."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest

from common.checkpoint import CheckpointError, load_cell
from common.config import load_config
from common.io import write_image
from common.layers import count_params
from pix2pix.src.dataset import AlignedDataset
from pix2pix.src.model import define_D, define_G
from pix2pix.src.train_step import Pix2PixTrainStep
from pix2pix.src.utils import build_networks, build_optimizers, val_dataset, validation_l1

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "pix2pix", "default_config.yaml")
TINY = dict(netG="unet_64", ngf=8, ndf=8, crop_size=64, load_size=72, demo_size=64, demo_train=16, demo_val=4,
            num_workers=0, log_every=1000)


def tiny_cfg(tmp_path, **kw):
    return load_config(CONFIG, output_dir=str(tmp_path / "out"), **dict(TINY, **kw))


def test_reference_parameter_counts_and_shapes():
    G, D = define_G("unet_256"), define_D("basic", 6)
    assert count_params(G) == 54_413_955
    assert count_params(D) == 2_768_705
    x = ms.Tensor(np.zeros((1, 3, 256, 256), np.float32))
    G.set_train(False)
    y = G(x)
    assert y.shape == (1, 3, 256, 256)
    assert D(ms.ops.cat((x, y), 1)).shape == (1, 1, 30, 30)


def test_unet_dropout_in_three_middle_blocks_and_bias_layout():
    G = define_G("unet_256")
    counters = [p.name for p in G.get_parameters() if p.name.endswith("counter")]
    assert len(counters) == 3
    biases = [p.name for p in G.trainable_params() if p.name.endswith(".bias")]
    assert len(biases) == 1  # only the outermost up-convolution, as in the reference


def test_init_statistics():
    G = define_G("unet_256", init_gain=0.02)
    w = [p.asnumpy() for p in G.trainable_params() if p.name.endswith("weight") and p.ndim == 4]
    allw = np.concatenate([a.ravel() for a in w])
    assert abs(allw.mean()) < 1e-3 and abs(allw.std() - 0.02) < 1e-3
    gammas = np.concatenate([p.asnumpy() for p in G.trainable_params() if p.name.endswith("gamma")])
    assert abs(gammas.mean() - 1.0) < 5e-3 and 0.01 < gammas.std() < 0.03


def write_ab(path, w, h):
    write_image(str(path), np.random.RandomState(0).randint(0, 255, (h, w, 3), dtype=np.uint8))


def test_bad_ab_width_names_the_file(tmp_path):
    (tmp_path / "train").mkdir()
    write_ab(tmp_path / "train" / "1.png", 300, 256)
    ds = AlignedDataset(str(tmp_path), "train", load_size=64, crop_size=64, validate=False)
    with pytest.raises(ValueError, match=r"1\.png is 300x256.*twice as wide"):
        ds.get(0, np.random.RandomState(0))


def test_unreadable_image_named(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "7.jpg").write_bytes(b"not a jpeg")
    ds = AlignedDataset(str(tmp_path), "train", load_size=64, crop_size=64, validate=False)
    with pytest.raises(ValueError, match=r"cannot decode image file .*7\.jpg"):
        ds.get(0, np.random.RandomState(0))


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AlignedDataset(str(tmp_path / "nowhere"), "train")
    from pix2pix.src.spec import Pix2PixSpec
    with pytest.raises(FileNotFoundError, match="--dataroot"):
        Pix2PixSpec().dataroot(tiny_cfg(tmp_path, dataroot=str(tmp_path / "nowhere")))


def test_unet_rejects_sizes_it_cannot_take(tmp_path):
    with pytest.raises(ValueError, match=r"crop_size=200 does not work with netG=unet_256: it needs a multiple of "
                                         r"256.*set --crop_size"):
        build_networks(tiny_cfg(tmp_path, netG="unet_256", crop_size=200))


def test_paired_augmentation_is_shared(tmp_path):
    (tmp_path / "train").mkdir()
    half = np.random.RandomState(1).randint(0, 255, (64, 64, 3), dtype=np.uint8)
    write_image(str(tmp_path / "train" / "1.png"), np.concatenate([half, half], 1))
    ds = AlignedDataset(str(tmp_path), "train", "AtoB", load_size=80, crop_size=64)
    for seed in range(5):
        a, b = ds.get(0, np.random.RandomState(seed))
        assert a.shape == (3, 64, 64) and np.array_equal(a, b)
        assert a.min() >= -1 and a.max() <= 1


def test_checkpoint_of_another_size_is_refused(tmp_path):
    from common.checkpoint import save_cell
    small = define_G("unet_64", ngf=8)
    save_cell(small, str(tmp_path / "G.ckpt"), {"model": "pix2pix", "netG": "unet_64", "ngf": 8})
    with pytest.raises(CheckpointError, match="ngf=8"):
        load_cell(define_G("unet_64", ngf=16), str(tmp_path / "G.ckpt"), {"model": "pix2pix", "ngf": 16})
    with pytest.raises(CheckpointError, match="shape"):
        load_cell(define_G("unet_64", ngf=16), str(tmp_path / "G.ckpt"))
    with pytest.raises(CheckpointError, match=r"holds a pix2pix network, not crn; use it with pix2pix/eval.py"):
        load_cell(small, str(tmp_path / "G.ckpt"), {"model": "crn"})


def test_one_step_changes_every_parameter(tmp_path):
    cfg = tiny_cfg(tmp_path)
    G, D = build_networks(cfg)
    opt_G, opt_D = build_optimizers(cfg, G, D)
    step = Pix2PixTrainStep(G, D, opt_G, opt_D)
    step.set_train()
    params = G.trainable_params() + D.trainable_params()
    before = [p.asnumpy().copy() for p in params]
    rng = np.random.RandomState(0)
    a, b = (ms.Tensor(rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)) for _ in range(2))
    losses = [float(x.asnumpy()) for x in step(a, b)]
    assert all(np.isfinite(losses))
    unchanged = [p.name for p, b in zip(params, before) if np.array_equal(b, p.asnumpy())]
    assert not unchanged


def train(cfg):
    from common.drivers import train as train_driver
    from pix2pix.src.spec import Pix2PixSpec
    return train_driver(Pix2PixSpec(), cfg)


def test_demo_training_cuts_validation_l1(tmp_path, demo_cache):
    """7 epochs (112 steps): the validation L1 is at 0.51x its untrained value, past the 0.7x bound from epoch 2 on
    (0.59x after the 14 epochs this test once ran; 2026-12-07)."""
    from pix2pix.src.spec import Pix2PixSpec
    cfg = tiny_cfg(tmp_path, max_steps=0, demo_epochs=7, demo_epochs_decay=0, save_epoch_freq=100, lr=5e-4)
    G, _ = build_networks(cfg)
    val = val_dataset(cfg, Pix2PixSpec().dataroot(cfg)[0])
    ms.set_seed(cfg.seed)
    l1_before = validation_l1(define_G(cfg.netG, 3, 3, cfg.ngf, cfg.norm, True), val)
    state = train(cfg)
    assert state["step"] == 7 * 16
    G = define_G(cfg.netG, 3, 3, cfg.ngf, cfg.norm, True)
    load_cell(G, os.path.join(cfg.output_dir, "ckpt", "epoch_0007_step_00000112", "G.ckpt"))
    l1_after = validation_l1(G, val)
    assert l1_after <= 0.7 * l1_before, (l1_before, l1_after)
    out = cfg.output_dir
    assert os.path.isfile(os.path.join(out, "loss_curve.png"))
    assert os.path.isfile(os.path.join(out, "samples", "epoch_0007.png"))
    log = open(os.path.join(out, "train.log")).read()
    assert "epoch: 1 step: 1, d_loss" in log and "g_loss" in log and "ms/step" in log


def test_resume_reproduces_uninterrupted_run(tmp_path, demo_cache):
    """In PyNative: three runs without a graph compile (27 against 42 s on 2 cores); OSMIS's resume test compiles.
    4 demo pairs (4 steps per epoch; 27 -> 16 s alone): the interrupted run stops one step into its second epoch.
    The loss history (losses.json) is written at that stop too, and continues from it; a fresh run restarts it. A
    resume with nothing left to train says so (and compiles nothing)."""
    small = dict(demo_train=4, mode="pynative", log_every=1)
    straight = train(tiny_cfg(tmp_path / "a", max_steps=6, **small))
    train(tiny_cfg(tmp_path / "b", max_steps=5, **small))

    def history(run):
        with open(tmp_path / run / "out" / "losses.json") as f:
            return json.load(f)
    assert history("b")["step"] == [1, 2, 3, 4, 5] and (tmp_path / "b" / "out" / "loss_curve.png").is_file()
    resumed = train(tiny_cfg(tmp_path / "b", max_steps=6, resume=True, **small))
    assert resumed["step"] == 6 and resumed["epoch"] == 1 and resumed["step_in_epoch"] == 2
    for k, v in straight["losses"].items():
        assert resumed["losses"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert history("b")["step"] == history("a")["step"] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(history("b")["g_loss"], history("a")["g_loss"], rtol=1e-5)
    assert train(tiny_cfg(tmp_path / "b", max_steps=6, resume=True, **small))["step"] == 6
    assert "nothing left to train: the resumed run is at epoch 1 of 4, step 6" in (tmp_path / "b" / "out" /
                                                                                  "train.log").read_text()
    train(tiny_cfg(tmp_path / "b", max_steps=2, **small))
    assert history("b")["step"] == [1, 2]


def test_checkpoint_records_its_dataroot_for_eval_and_resumes_on_moved_data(tmp_path, demo_cache):
    """A run on a --dataroot stores its absolute path and direction; eval/predict/export with --dataroot left empty
    take both (and say so) instead of the demo data, an explicit --dataroot wins; once the data has moved, they say so
    and the demo stands in, and a resume from the data's new place works (the path is not compared on restore)."""
    from common import drivers
    from common.checkpoint import CheckpointManager
    from pix2pix.src.spec import Pix2PixSpec
    spec, small = Pix2PixSpec(), dict(demo_train=4, mode="pynative")
    data = tmp_path / "data"
    shutil.copytree(spec.demo_dataroot(tiny_cfg(tmp_path, **small)), data)
    cfg = tiny_cfg(tmp_path, max_steps=1, dataroot=os.path.relpath(data), direction="AtoB", **small)
    train(cfg)
    manager = CheckpointManager(os.path.join(cfg.output_dir, "ckpt"))
    assert manager.read_state()["meta"]["dataroot"] == str(data)
    logs = []
    for given, want in (("", (str(data), "AtoB")), (str(tmp_path), (str(tmp_path), "BtoA"))):
        cfg = tiny_cfg(tmp_path, dataroot=given)
        drivers.load_inference(spec, cfg, log=logs.append)
        assert (cfg.dataroot, cfg.direction) == want
    assert logs == [f"[pix2pix] dataroot={data} (direction=AtoB), the data the checkpoint {manager.latest()}/G.ckpt "
                    f"was trained on (pass --dataroot for other data)"]
    moved = tmp_path / "moved"
    data.rename(moved)
    cfg = tiny_cfg(tmp_path, dataroot="")
    drivers.load_inference(spec, cfg, log=logs.append)
    assert cfg.dataroot == "" and logs[-1].endswith(f"was trained on {data}, which is not there now: the demo data "
                                                    f"stands in; pass --dataroot=<the data's new place> to evaluate on it")
    assert train(tiny_cfg(tmp_path, max_steps=2, resume=True, dataroot=str(moved), **small))["step"] == 2


def test_eval_of_a_demo_run_takes_its_demo_data(tmp_path, demo_cache):
    """A demo run records its demo_size/demo_train/demo_val; eval/predict/export left at the defaults use that demo
    set (they generated the default 256-pixel set and evaluated on it instead)."""
    from common import drivers
    from pix2pix.src.spec import Pix2PixSpec
    train(tiny_cfg(tmp_path, max_steps=1, demo_train=4, mode="pynative"))
    cfg, logs = load_config(CONFIG, output_dir=str(tmp_path / "out")), []
    _, path = drivers.load_inference(Pix2PixSpec(), cfg, log=logs.append)
    assert (cfg.dataroot, cfg.demo_size, cfg.demo_train, cfg.demo_val) == ("", 64, 4, 4)
    assert logs == [f"[pix2pix] the demo data (demo_size=64, demo_train=4, demo_val=4), the data the checkpoint {path} "
                    f"was trained on (pass --dataroot for other data)"]


def test_eval_scores_only_the_images_of_its_own_run(tmp_path, demo_cache):
    """A second eval into the same folder replaces the first: its score equals a fresh folder's (the images an
    earlier eval left in eval/fake_B were scored with the new ones)."""
    from common import drivers
    from pix2pix.src.spec import Pix2PixSpec
    spec = Pix2PixSpec()
    cfg = tiny_cfg(tmp_path, max_steps=1, mode="pynative")
    train(cfg)
    args = [f"--{k}={v}" for k, v in TINY.items()] + ["--mode=pynative", "--metrics=psnr", "--eval_protocol=eval"]
    drivers.evaluate(spec, drivers.parse(spec, args + [f"--output_dir={cfg.output_dir}", "--num_val=4"]))
    again = drivers.evaluate(spec, drivers.parse(spec, args + [f"--output_dir={cfg.output_dir}", "--num_val=1"]))
    fresh = drivers.evaluate(spec, drivers.parse(spec, args + [f"--output_dir={tmp_path / 'fresh'}", "--num_val=1",
                                                               f"--ckpt={os.path.join(cfg.output_dir, 'ckpt')}"]))
    assert again["metrics"]["psnr"] == fresh["metrics"]["psnr"] and again["images"] == 1
    assert os.listdir(os.path.join(cfg.output_dir, "eval", "fake_B")) == ["1.png"]


def test_sigint_saves_a_snapshot(tmp_path, demo_cache):
    out = tmp_path / "out"
    args = [f"--{k}={v}" for k, v in TINY.items()] + [f"--output_dir={out}", "--log_every=1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "pix2pix", "train.py")] + args,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 240
    for line in proc.stdout:
        if "epoch: 1 step: 3," in line or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal signals the whole process group
    rest = proc.communicate(timeout=120)[0]
    # 130 and "SIGINT" as a rule; a Ctrl-C that lands while MindSpore's runtime holds the signal (it re-takes it
    # during some graph launches and raises SIGTERM instead: common.train.StopSignal) stops the same way as 143.
    # Seen once under a loaded two-worker test run (2026-12-02); the snapshot is saved either way.
    assert (proc.returncode, "stopped by SIGINT" in rest) in ((130, True), (143, False)), rest[-2000:]
    assert "stopped by SIG" in rest and "resume with --resume=true" in rest
    latest = (out / "ckpt" / "latest").read_text().strip()
    assert (out / "ckpt" / latest / "G.ckpt").is_file() and (out / "ckpt" / latest / "opt_D.ckpt").is_file()


def test_leaky_relu_matches_the_reference_function_and_gradient():
    from common.layers import LeakyReLU
    x = np.random.RandomState(0).randn(2, 3, 5, 7).astype(np.float32)
    f = LeakyReLU(0.2)
    y = f(ms.Tensor(x)).asnumpy()
    np.testing.assert_array_equal(y, np.where(x > 0, x, np.float32(0.2) * x))
    weight = ms.Tensor(x)

    def weighted_sum(t):
        return (f(t) * weight).sum()
    grad = ms.grad(weighted_sum)(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(grad, np.where(x > 0, 1.0, 0.2) * x, rtol=1e-6)
