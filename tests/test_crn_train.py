"""CRN end to end on tiny configs (32x64, narrow channels): the VGG19 .mat loss network, a demo run whose
loss falls, diverse outputs, resume, fine-tuning, eval/predict/export, and bad-input errors."""
import json
import os
import re
import subprocess

import cv2
import numpy as np
import pytest
import scipy.io

import common  # noqa: F401
import mindspore as ms

from common import cityscapes as cs
from common.config import load_config
from common.demo_data import ensure_demo_dataset
from common.metrics.fcn import build_fcn8s, segment
from common.metrics.train_fcn import main as train_fcn_main
from common.vgg import vgg_layer_names
from common import drivers
from crn.src.dataset import CRNDataset
from crn.src.loss import build_loss_network
from crn.src.model import CascadedRefinementNetwork
from crn.src.spec import CRNSpec
from crn.src.utils import generate, init_from_lower_resolution, trainable_parameters

SPEC = CRNSpec()


def crn_train(args):
    return drivers.train(SPEC, drivers.parse(SPEC, args))

CONFIG = CRNSpec.config_path
VGG19_LAYERS = vgg_layer_names("vgg19")[:vgg_layer_names("vgg19").index("relu5_2") + 1]


def write_matconvnet_vgg19(path, layers, seed=0):
    """A MatConvNet simplenn .mat (beta16+ layout) with random He-scaled convs for ``layers``.

    Returns {conv name: filters [kh, kw, cin, cout]} as written.
    """
    rng = np.random.RandomState(seed)
    channels = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
    cell = np.empty((1, len(layers)), dtype=object)
    written, cin = {}, 3
    fields = [("name", object), ("type", object), ("weights", object), ("pad", object)]
    for i, name in enumerate(layers):
        s = np.zeros((1, 1), dtype=fields)
        s["name"][0, 0] = name
        s["type"][0, 0] = {"con": "conv", "rel": "relu", "poo": "pool"}[name[:3]]
        weights = np.empty((1, 0), dtype=object)
        if name.startswith("conv"):
            cout = channels[int(name[4])]
            filters = (rng.randn(3, 3, cin, cout) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)
            weights = np.empty((1, 2), dtype=object)
            weights[0, 0], weights[0, 1] = filters, np.zeros((cout, 1), np.float32)
            written[name], cin = filters, cout
        s["weights"][0, 0] = weights
        s["pad"][0, 0] = np.ones((1, 4))
        cell[0, i] = s
    scipy.io.savemat(path, {"layers": cell, "meta": {"normalization": {
        "averageImage": np.array([[123.68, 116.779, 103.939]])}}})
    return written


@pytest.fixture(scope="module")
def vgg19_mat(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vgg") / "imagenet-vgg-verydeep-19.mat")
    return path, write_matconvnet_vgg19(path, VGG19_LAYERS)


def tiny_args(out_dir, vgg_path, **extra):
    args = {"size": 32, "width_mult": 0.0625, "num_outputs": 3, "max_train_samples": 4, "num_val": 2,
            "n_epochs": 2, "log_every": 1, "num_workers": 0, "save_epoch_freq": 1, "vgg_path": vgg_path,
            "output_dir": str(out_dir)}
    args.update(extra)
    return [f"--{k}={v}" for k, v in args.items()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vgg19_mat):
    out = tmp_path_factory.mktemp("crn_run")
    state = crn_train(tiny_args(out, vgg19_mat[0]))
    return out, state


def test_vgg19_mat_loads_into_the_loss_network(vgg19_mat):
    path, written = vgg19_mat
    logged = []
    loss = build_loss_network(load_config(CONFIG, [f"--vgg_path={path}", "--size=32"]), logged.append)
    convs = loss.vgg.conv_layers()
    assert sorted(convs) == sorted(written)
    for name in ("conv1_1", "conv3_4", "conv5_2"):
        np.testing.assert_array_equal(convs[name].weight.asnumpy(), written[name].transpose(3, 2, 0, 1))
    assert loss.vgg.pool == "avg" and loss.layers[0] == "pixel" and loss.vgg.taps[-1] == "relu5_2"
    assert path in logged[0] and "VGG19" in logged[0]


def test_vgg_file_without_the_loss_layers_is_rejected(tmp_path):
    path = str(tmp_path / "truncated.mat")
    write_matconvnet_vgg19(path, VGG19_LAYERS[:VGG19_LAYERS.index("relu4_2") + 1])
    expected = r"truncated\.mat: layer conv4_3 is missing; the vgg19 trunk expects weight \(512, 512, 3, 3\)"
    with pytest.raises(KeyError, match=expected):
        build_loss_network(load_config(CONFIG, [f"--vgg_path={path}", "--size=32"]))


def test_demo_run_loss_falls(trained):
    out, state = trained
    assert (state["epoch"], state["step_in_epoch"], state["step"]) == (2, 0, 8)
    with open(out / "losses.json") as f:
        losses = json.load(f)["loss"]
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert (out / "samples" / "epoch_0002.png").is_file()
    assert "VGG19 from" in (out / "train.log").read_text()


def test_k_outputs_differ(trained, vgg19_mat):
    out, _ = trained
    cfg = drivers.parse(SPEC, [f"--output_dir={out}"])  # the architecture comes from the checkpoint
    nets, _ = drivers.load_inference(SPEC, cfg)
    net = nets["G"]
    assert (cfg.size, cfg.width_mult, cfg.num_outputs) == (32, 0.0625, 3)
    label, _ = CRNDataset(SPEC.dataroot(cfg)[0], "val", 32).get(0)
    images = generate(net, label[None])[0].astype(np.float32)
    assert images.shape == (3, 32, 64, 3)
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(images[i] - images[j]).mean() > 1.0, (i, j)


def test_resume_repeats_the_uninterrupted_run(tmp_path, vgg19_mat):
    """In PyNative (three runs without a graph compile: 41 against 62 s for two compiled ones on 2 cores), on
    2 samples (2 steps per epoch; 4 before): 49 -> 26 s alone on 2 cores."""
    run, whole = tmp_path / "run", tmp_path / "whole"
    small = dict(max_train_samples=2, num_val=1, mode="pynative")
    crn_train(tiny_args(whole, vgg19_mat[0], **small))
    crn_train(tiny_args(run, vgg19_mat[0], n_epochs=1, **small))
    state = crn_train(tiny_args(run, vgg19_mat[0], n_epochs=2, resume="true", **small))
    assert state["step"] == 4
    assert "resumed from" in (run / "train.log").read_text()
    assert "compiles the train step graph" not in (run / "train.log").read_text()  # PyNative compiles no step graph
    fresh = crn_train(tiny_args(run, vgg19_mat[0], n_epochs=0, **small))
    assert (fresh["epoch"], fresh["step"]) == (0, 0)
    assert "already holds snapshots; this run starts from scratch" in (run / "train.log").read_text()
    a = ms.load_checkpoint(str(whole / "ckpt" / "epoch_0002_step_00000004" / "G.ckpt"))
    b = ms.load_checkpoint(str(run / "ckpt" / "epoch_0002_step_00000004" / "G.ckpt"))
    for name in ("refine.0.conv1.weight", "refine.3.norm2.gamma", "to_rgb.weight"):
        np.testing.assert_allclose(a[name].asnumpy(), b[name].asnumpy(), rtol=1e-5, atol=1e-6)


def test_fine_tune_from_a_lower_resolution(trained):
    out, _ = trained
    net = CascadedRefinementNetwork(64, 20, 1, width_mult=0.0625)
    loaded = init_from_lower_resolution(net, str(out / "ckpt"), log=lambda _: None)
    stored = ms.load_checkpoint(str(out / "ckpt" / "epoch_0002_step_00000008" / "G.ckpt"))
    assert {n.split(".")[1] for n in loaded} == {"0", "1", "2", "3"}
    np.testing.assert_array_equal(net.refine[3].conv2.weight.asnumpy(), stored["refine.3.conv2.weight"].asnumpy())
    names = {".".join(p.name.split(".")[:2]) for p in trainable_parameters(net, 2)}
    assert names == {"refine.3", "refine.4", "to_rgb.weight", "to_rgb.bias"}


def test_a_missing_init_from_is_refused_before_the_output_folder_is_written(tmp_path, vgg19_mat):
    from common.config import ConfigError
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"--init_from=/no/such/run: no G checkpoint at /no/such/run"):
        crn_train(tiny_args(out, vgg19_mat[0], init_from="/no/such/run"))
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_fcn_scorer(tmp_path_factory):
    """A narrow FCN-8s trained for one epoch on the demo val split (32x64) by common.metrics.train_fcn."""
    path = str(tmp_path_factory.mktemp("fcn") / "fcn8s.ckpt")
    train_fcn_main(["--data", os.path.join(ensure_demo_dataset(), "cityscapes"), "--split", "val", "--out", path,
                    "--height", "32", "--width", "64", "--epochs", "1", "--batch-size", "8", "--tiny"])
    return path


def test_eval_predict_export_from_the_checkpoint_alone(trained, tiny_fcn_scorer):
    out, _ = trained
    args = [f"--output_dir={out}", "--num_val=2"]  # no training flag: size, width, k come from the checkpoint
    record = drivers.evaluate(SPEC, drivers.parse(SPEC, args + [f"--fcn_ckpt={tiny_fcn_scorer}"]))
    with open(out / "eval" / "metrics.json") as f:
        assert json.load(f) == record
    metrics = {k: v["value"] for k, v in record["metrics"].items()}
    assert record["model"] == "crn" and record["settings"]["k"] == 3 and record["images"] == 2
    assert metrics["lpips_diversity_alexnet"] > 0 and "pairs of the k=3" in record["metrics"]["lpips_diversity_alexnet"]["protocol"]
    assert {"psnr", "ssim", "lpips_alexnet"} <= set(metrics) and "k" not in metrics
    assert (out / "eval" / "grids").is_dir() and len(os.listdir(out / "eval" / "images")) == 6

    # FCN-score: output 0 of each of the 2 evaluated label maps, scored against its own labelIds file
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(out / "eval" / "fake"))
    fcn = out / "eval" / "fcn"
    assert sorted(os.listdir(fcn / "results")) == [f"{n}_leftImg8bit.png" for n in names]
    assert sorted(os.listdir(fcn / "labels")) == [f"{n}_gtFine_labelIds.png" for n in names]
    scorer, correct, valid = build_fcn8s(tiny_fcn_scorer), 0, 0
    for name in names:
        k0 = out / "eval" / "images" / f"{name}_k0.png"
        assert (fcn / "results" / f"{name}_leftImg8bit.png").read_bytes() == k0.read_bytes()
        train_ids = cs.label_ids_to_train_ids(cv2.imread(str(fcn / "labels" / f"{name}_gtFine_labelIds.png"), 0))
        rgb = cv2.resize(cv2.imread(str(k0))[..., ::-1], train_ids.shape[::-1], interpolation=cv2.INTER_LINEAR)
        pred = segment(scorer, rgb)
        correct += np.sum((pred == train_ids) & (train_ids != cs.IGNORE))
        valid += np.sum(train_ids != cs.IGNORE)
    assert metrics["fcn_pixel_acc"] == pytest.approx(correct / valid)
    assert 0 <= metrics["fcn_mean_iou"] <= metrics["fcn_mean_class_acc"] <= 1
    assert (out / "eval" / "fcn_per_class.md").read_text().startswith("| class | accuracy | IoU |")
    wrong = drivers.parse(SPEC, args + [f"--fcn_label_dir={out / 'samples'}"])
    with pytest.raises(FileNotFoundError, match=r"fcn_label_dir=.*samples: no <frame id>_gtFine_labelIds\.png for 2 of "
                                                r"the 2 evaluated label maps.*--fcn_label_dir"):
        SPEC.fcn_pairs(wrong, SPEC.dataroot(wrong)[0], str(out / "eval"), names)

    label_file = out / "label.png"
    ids = np.full((64, 128), 255, np.uint8)
    ids[:32] = 10
    ids[32:, :64] = 0
    cv2.imwrite(str(label_file), ids)
    predict_args = [f"--output_dir={out}", f"--input={label_file}", "--label_format=trainIds"]
    written = drivers.predict(SPEC, drivers.parse(SPEC, predict_args))
    assert [os.path.basename(p) for p in written] == ["label_k0.png", "label_k1.png", "label_k2.png",
                                                      "label_grid.png"]  # the grid too: predict's count names all
    cv2.imwrite(str(label_file), ids[:, :96])
    with pytest.raises(ValueError, match=r"label\.png is 96x64 .* makes 64x32 images"):
        drivers.predict(SPEC, drivers.parse(SPEC, predict_args))

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "run_export.sh")
    res = subprocess.run(["bash", script, "crn", "ALL", str(out / "ckpt")], capture_output=True,
                         text=True, env=dict(os.environ, SYNTHZOO_OUTPUTS=str(out / "scripts")))
    assert res.returncode == 0, res.stderr[-2000:]
    diffs = dict(re.findall(r"^(MINDIR|ONNX): .* max \|diff\| vs MindSpore = (\S+)$", res.stdout, re.M))
    assert float(diffs["ONNX"]) <= 1e-4 and float(diffs["MINDIR"]) <= 1e-5, res.stdout
    assert sorted(os.listdir(out / "scripts" / "crn" / "export")) == ["crn_32p.json", "crn_32p.mindir", "crn_32p.onnx"]


def test_exportable_upsampling_matches_interpolate():
    rng = np.random.RandomState(4)
    net = CascadedRefinementNetwork(16, 5, 2, width_mult=1 / 64)
    label = ms.Tensor(rng.rand(1, 5, 16, 32).astype(np.float32))
    before = net(label).asnumpy()
    np.testing.assert_allclose(net.prepare_export()(label).asnumpy(), before, rtol=1e-5, atol=1e-3)


def test_export_form_of_the_upsampling_equals_interpolate_at_odd_sizes():
    from crn.src.model import BilinearUpsample
    x = ms.Tensor(np.random.RandomState(5).randn(2, 3, 3, 5).astype(np.float32))
    up = BilinearUpsample((3, 5), (7, 12))
    before = up(x).asnumpy()
    up.export_form = True
    np.testing.assert_allclose(up(x).asnumpy(), before, rtol=0, atol=1e-6)


def test_label_and_photo_of_different_sizes_are_rejected(tmp_path):
    for sub in ("images", "labels"):
        (tmp_path / "train" / sub).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "train" / "images" / "a.png"), np.zeros((32, 64, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "train" / "labels" / "a.png"), np.zeros((16, 64), np.uint8))
    ds = CRNDataset(str(tmp_path), "train", 32, data_format="folders", label_format="trainIds", validate=False)
    with pytest.raises(ValueError, match=r"labels/a\.png is 64x16 but its photo is 64x32"):
        ds.get(0)
    cv2.imwrite(str(tmp_path / "train" / "labels" / "a.png"), np.zeros((32, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"labels/a\.png has 3 channels"):
        ds.get(0)
    cv2.imwrite(str(tmp_path / "train" / "labels" / "a.png"), np.full((32, 64), 40, np.uint8))
    with pytest.raises(ValueError, match=r"label ids \[40\] are outside 0\.\.18"):
        ds.get(0)


def test_eval_reads_the_recorded_dataroot_in_its_recorded_format(tmp_path, vgg19_mat):
    """eval/predict/export with --dataroot left empty read the checkpoint's data as training did: a run on folders of
    trainIds maps records data_format and label_format beside the dataroot (eval read it as Cityscapes and failed);
    an option given on the command line wins."""
    data = tmp_path / "data"
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (data / split / sub).mkdir(parents=True)
        cv2.imwrite(str(data / split / "images" / "a.png"), np.zeros((32, 64, 3), np.uint8))
        cv2.imwrite(str(data / split / "labels" / "a.png"), np.full((32, 64), 3, np.uint8))
    out = tmp_path / "run"
    try:
        crn_train(tiny_args(out, vgg19_mat[0], dataroot=data, data_format="folders", label_format="trainIds",
                            max_steps=1, mode="pynative"))
        args, logs = [f"--output_dir={out}", "--mode=pynative"], []
        cfg = drivers.parse(SPEC, args)
        drivers.load_inference(SPEC, cfg, log=logs.append)
        assert (cfg.dataroot, cfg.data_format, cfg.label_format) == (str(data), "folders", "trainIds")
        assert logs[0].startswith(f"[crn] dataroot={data} (data_format=folders, label_format=trainIds), the data")
        assert len(SPEC.datasets(cfg, drivers._runtime(cfg)).val) == 1
        cfg = drivers.parse(SPEC, args + ["--label_format=color"])
        drivers.load_inference(SPEC, cfg, log=logs.append)
        assert (cfg.data_format, cfg.label_format) == ("folders", "color")
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_demo_picks_a_demo_sized_model_and_a_config_that_does_not_fit_is_refused(tmp_path, monkeypatch):
    from common.config import ConfigError
    from common.runtime import Runtime
    import crn.src.spec as crn_spec
    monkeypatch.setattr(crn_spec, "total_memory_gb", lambda: 24.0)
    rt = Runtime(device_target="CPU", mode="graph")
    demo = drivers.parse(SPEC, [f"--output_dir={tmp_path}"])
    notes = SPEC.check(demo, rt, True)
    assert (demo.size, demo.width_mult, demo.n_epochs) == (64, 0.125, 3) and "demo_size" in notes[0]
    chosen = drivers.parse(SPEC, ["--size=32"])
    SPEC.check(chosen, rt, True)
    assert chosen.size == 32 and chosen.width_mult == 0.125  # a size the user set is kept
    full = drivers.parse(SPEC, ["--dataroot=/data/cityscapes"])
    SPEC.check(full, rt, False)  # 256p, k = 9, graph mode: 8.34 GB measured on a 24 GB machine
    monkeypatch.setattr(crn_spec, "total_memory_gb", lambda: 9.0)
    with pytest.raises(ConfigError, match=r"a 256p CRN train step \(k=9.* needs about 8 GB on CPU, and this machine "
                                          r"has 9 GB: use a GPU, a smaller --size or --width_mult$"):
        SPEC.check(full, rt, False)
    pynative = drivers.parse(SPEC, ["--dataroot=/data/cityscapes", "--mode=pynative"])
    with pytest.raises(ConfigError, match=r"needs about 10 GB.*--mode=graph needs less"):
        SPEC.check(pynative, rt, False)
    assert not tmp_path.joinpath("ckpt").exists()
