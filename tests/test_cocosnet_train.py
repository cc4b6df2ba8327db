"""CoCosNet end to end on the styled demo data (64x64, tiny widths): a short training run (the demo's single-pass
step) with finite losses and a complete snapshot, then eval and predict from the checkpoint alone (architecture from
its metadata), and bad-input errors of the command line. (The recomputing step, with and without MindSpore's copies
of Parameter reads: test_cocosnet_recompute.py.)"""
import json
import os

import cv2
import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms

from common import drivers
from common.demo_data import STYLED_LABEL_NC
from cocosnet.src.spec import CoCosNetSpec
from cocosnet.src.train_step import LOSS_NAMES

SPEC = CoCosNetSpec()
DEMO = {"demo_train": 4, "demo_val": 2, "num_val": 2}
TINY = {"demo_ngf": 4, "demo_corr_channels": 8, "demo_spade_hidden": 8, "demo_ndf": 8, "num_D": 1}


def args(**kw):
    return [f"--{k}={v}" for k, v in kw.items()]


RUN = dict(max_steps=4, log_every=1, num_workers=0, num_samples=1, cpu_conv="native", separate_compile="false",
           **DEMO, **TINY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_cache):
    out = str(tmp_path_factory.mktemp("cocosnet"))
    state = drivers.train(SPEC, drivers.parse(SPEC, args(output_dir=out, **RUN)))
    return out, state, demo_cache


def test_demo_run_has_finite_losses_and_a_complete_snapshot(trained):
    out, state, _ = trained
    assert state["step"] == 4
    history = json.load(open(os.path.join(out, "losses.json")))
    assert set(LOSS_NAMES) <= set(history)
    for name in LOSS_NAMES:
        assert np.all(np.isfinite(history[name])), name
    assert history["g_mask"][0] > 0 and history["d_loss"][0] > 0
    snap = open(os.path.join(out, "ckpt", "latest")).read().strip()
    files = sorted(os.listdir(os.path.join(out, "ckpt", snap)))
    assert files == ["Corr.ckpt", "D.ckpt", "G.ckpt", "opt_D.ckpt", "opt_G.ckpt", "state.json"]
    assert os.path.isfile(os.path.join(out, "samples", "epoch_0001.png"))
    log = open(os.path.join(out, "train.log")).read()
    assert "label_nc=8" in log and "stands in for the reference VGG19" in log and "train step: single pass" in log
    assert "the first step compiles the train step graph" in log  # graph mode: says why step 1 takes minutes
    assert "peak resident memory of this process" in log


def test_eval_and_predict_from_the_checkpoint_alone(trained):
    out, _, cache = trained
    base = dict(output_dir=out, mode="pynative", cpu_conv="native", **DEMO)
    record = drivers.evaluate(SPEC, drivers.parse(SPEC, args(metrics="psnr,ssim", **base)))
    assert record["images"] == 2
    metrics = record["metrics"]
    assert 0 < metrics["psnr"]["value"] < 60 and -1 <= metrics["ssim"]["value"] <= 1
    assert 0 < metrics["warped_exemplar_l1"]["value"] < 255
    assert metrics["style_palette_to_exemplar"]["value"] >= 0 and metrics["style_palette_to_target"]["value"] >= 0
    for sub in ("fake", "real", "exemplar", "warped", "label"):
        assert len(os.listdir(os.path.join(out, "eval", sub))) == 2
    page = open(os.path.join(out, "eval", "index.html")).read()  # each exemplar captioned with its training image
    assert page.count("exemplar: train_") == 2 and page.count("<img") == 10
    demo = SPEC.demo_dataroot(drivers.parse(SPEC, args(**DEMO)))
    label = os.path.join(demo, "val", "labels", "val_0000.png")
    exemplar = os.path.join(demo, "train", "images", "train_0001.png")
    written = drivers.predict(SPEC, drivers.parse(SPEC, args(input=label, exemplar=exemplar, exemplar_label=os.path.join(
        demo, "train", "labels", "train_0001.png"), **base)))
    assert [os.path.basename(p) for p in written] == ["val_0000.png", "val_0000_warped.png"]
    for path in written:
        assert cv2.imread(path).shape == (64, 64, 3)


def test_eval_scores_at_the_targets_own_size_by_default(trained, tmp_path):
    """OpenVINO's protocol (the published ADE20K figures): each output resized to its target photo's size and
    scored against the photo as stored."""
    from skimage.metrics import peak_signal_noise_ratio
    out = trained[0]
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    for split in ("train", "val"):
        for i in range(2):
            for sub, array in (("images", rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)),
                               ("labels", rng.integers(0, STYLED_LABEL_NC, (80, 96), dtype=np.uint8))):
                os.makedirs(root / split / sub, exist_ok=True)
                cv2.imwrite(str(root / split / sub / f"{split}{i}.png"), array)
    (root / "ref_train.txt").write_text("train0,train1\ntrain1,train0\n")
    (root / "ref_val.txt").write_text("val0,train0\nval1,train1\n")
    snapshot = os.path.join(out, "ckpt", open(os.path.join(out, "ckpt", "latest")).read().strip())
    record = drivers.evaluate(SPEC, drivers.parse(SPEC, args(
        ckpt=snapshot, output_dir=tmp_path / "out", mode="pynative", cpu_conv="native", dataroot=root,
        data_format="folders", metrics="psnr")))
    assert record["settings"]["eval_size"] == "original"
    psnr = []
    for i in range(2):
        fake, real = (cv2.imread(str(tmp_path / "out" / "eval" / sub / f"val{i}.png")) for sub in ("fake", "real"))
        np.testing.assert_array_equal(real, cv2.imread(str(root / "val" / "images" / f"val{i}.png")))
        assert fake.shape == (80, 96, 3)
        assert cv2.imread(str(tmp_path / "out" / "eval" / "warped" / f"val{i}.png")).shape == (64, 64, 3)
        psnr.append(peak_signal_noise_ratio(real, fake, data_range=255))
    assert record["metrics"]["psnr"]["value"] == pytest.approx(np.mean(psnr), abs=1e-9)


def cli_error(command, capsys, *argv):
    """Run an entry point in-process; returns its one-line error (exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        drivers.main(SPEC, command, list(argv))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_pynative_training_is_refused_with_the_reason(tmp_path, capsys):
    try:
        err = cli_error("train", capsys, f"--output_dir={tmp_path}", "--mode=pynative", *args(**DEMO, **TINY))
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    assert "--mode=pynative: MindSpore 2.10's PyNative cannot differentiate CoCosNet's train step" in err
    assert "train with --mode=graph" in err and not os.path.exists(tmp_path / "train.log")


def test_cli_errors_name_the_fix(trained, tmp_path, capsys):
    out = trained[0]
    err = cli_error("predict", capsys, f"--output_dir={out}", "--input=" + os.path.join(out, "samples"))
    assert "pass --exemplar=" in err
    bad = str(tmp_path / "bad.png")
    cv2.imwrite(bad, np.full((64, 64), STYLED_LABEL_NC, np.uint8))
    err = cli_error("predict", capsys, f"--output_dir={out}", f"--input={bad}", f"--exemplar={bad}", "--mode=pynative")
    assert f"bad.png holds class ids [{STYLED_LABEL_NC}]" in err
    err = cli_error("train", capsys, f"--output_dir={tmp_path}", f"--dataroot={tmp_path}", "--data_format=folders")
    assert "train/images does not exist" in err
    err = cli_error("train", capsys, f"--output_dir={tmp_path}", "--trim_heap=-1", *args(**DEMO, **TINY))
    assert "--trim_heap=-1.0: the seconds between two trims" in err  # checked after the demo keys replace it


def test_another_models_checkpoint_folder_is_named(tmp_path, capsys):
    """A CRN checkpoint folder (no Corr.ckpt) given to eval/predict/export: the error names CRN and its scripts."""
    from mindspore import nn
    from common.checkpoint import save_cell
    snap = tmp_path / "ckpt" / "epoch_0001_step_00000001"
    snap.mkdir(parents=True)
    save_cell(nn.Dense(2, 2), str(snap / "G.ckpt"), {"model": "crn"})
    (tmp_path / "ckpt" / "latest").write_text(snap.name)
    label = str(tmp_path / "label.png")
    cv2.imwrite(label, np.zeros((64, 64), np.uint8))
    for command in ("eval", "predict", "export"):
        err = cli_error(command, capsys, f"--ckpt={tmp_path / 'ckpt'}", f"--output_dir={tmp_path}", f"--input={label}")
        assert f"no Corr checkpoint at {snap}: it holds a crn network's checkpoints; use them with crn/eval.py" in err
