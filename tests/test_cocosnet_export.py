"""CoCosNet export from a checkpoint alone: the published two-network ONNX form (names, shapes), spectral
norm folded, parity with MindSpore (checked by the driver), and chaining correspondence -> translation in
onnxruntime equals the composite network."""
import json
import os

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import Tensor

from common import drivers
from common.checkpoint import CheckpointManager
from common.layers import init_weights
from common.runtime import eager
from cocosnet.src.model import CoCosNet
from cocosnet.src.spec import CoCosNetSpec

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SPEC = CoCosNetSpec()
L, S = 6, 64
ARCH = {"label_nc": L, "size": S, "ngf": 4, "corr_channels": 8, "spade_hidden": 8, "ndf": 8, "num_D": 1}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A snapshot of untrained networks (Xavier init, attention switched on, spectral-norm vectors moved off
    their initial values), exported."""
    out = str(tmp_path_factory.mktemp("cocosnet_export"))
    cfg = drivers.parse(SPEC, [f"--{k}={v}" for k, v in ARCH.items()])
    ms.set_seed(0)
    nets = SPEC.build_inference(cfg)
    rng = np.random.default_rng(0)
    for net in nets.values():
        init_weights(net, "xavier", 1.0)
        for p in net.get_parameters():
            if p.name.endswith("gamma"):
                p.set_data(Tensor(np.float32(0.5)))
            elif p.name.endswith(("weight_u", "weight_v")):
                v = rng.normal(size=p.shape)
                p.set_data(Tensor((v / np.linalg.norm(v)).astype(np.float32)))
    CheckpointManager(os.path.join(out, "ckpt"), meta=dict(ARCH, model="cocosnet")).save(nets, {"epoch": 0, "step": 0})
    done = drivers.export(SPEC, drivers.parse(SPEC, [f"--output_dir={out}", "--export_format=ONNX", "--mode=pynative",
                                                     "--file_name=coco"]))
    return out, done


def io_spec(path):
    model = onnx.load(path)
    onnx.checker.check_model(model)
    dims = {}
    for v in list(model.graph.input) + list(model.graph.output):
        dims[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    return [i.name for i in model.graph.input], [o.name for o in model.graph.output], dims, model


def test_two_network_form_names_and_shapes(exported):
    out, done = exported
    assert sorted(done) == ["coco_composite", "coco_correspondence", "coco_translation"]
    for stem, formats in done.items():
        assert list(formats) == ["ONNX"] and formats["ONNX"][1] <= 1e-4
    inputs, outputs, dims, model = io_spec(os.path.join(out, "export", "coco_correspondence.onnx"))
    assert inputs == ["input.1", "input.70", "ref_seg_map"] and outputs == ["warped_exemplar", "warped_mask"]
    assert dims == {"input.1": [1, L, S, S], "input.70": [1, 3, S, S], "ref_seg_map": [1, L, S, S],
                    "warped_exemplar": [1, 3, S, S], "warped_mask": [1, L, S // 4, S // 4]}
    assert not [t.name for t in model.graph.initializer if "weight_u" in t.name or "weight_v" in t.name]
    inputs, outputs, dims, _ = io_spec(os.path.join(out, "export", "coco_translation.onnx"))
    assert (inputs, outputs) == (["seg"], ["exemplar_based_output"])
    assert dims == {"seg": [1, 3 + L, S, S], "exemplar_based_output": [1, 3, S, S]}
    inputs, outputs, dims, _ = io_spec(os.path.join(out, "export", "coco_composite.onnx"))
    assert inputs == ["input_seg_map", "ref_image", "ref_seg_map"] and outputs == ["exemplar_based_output"]
    note = json.load(open(os.path.join(out, "export", "coco_correspondence.json")))
    assert note["label_nc"] == L and note["outputs"][1] == {"name": "warped_mask", "shape": [1, L, 16, 16],
                                                            "dtype": "float32"}
    sources = {stem: json.load(open(os.path.join(out, "export", stem + ".json")))["checkpoint"] for stem in done}
    corr, gen = sources["coco_correspondence"], sources["coco_translation"]
    assert os.path.basename(corr) == "Corr.ckpt" and gen == os.path.join(os.path.dirname(corr), "G.ckpt")
    assert sources["coco_composite"] == {"Corr": corr, "G": gen}


def test_chained_networks_equal_the_composite_and_the_checkpoint(exported):
    out, _ = exported
    rng = np.random.default_rng(5)
    eye = np.eye(L, dtype=np.float32)
    seg = eye[np.kron(rng.integers(0, L, (4, 4)), np.ones((16, 16), np.int64))].transpose(2, 0, 1)[None]
    ref_seg = eye[np.kron(rng.integers(0, L, (4, 4)), np.ones((16, 16), np.int64))].transpose(2, 0, 1)[None]
    ref = rng.uniform(-1, 1, (1, 3, S, S)).astype(np.float32)

    def session(name):
        return ort.InferenceSession(os.path.join(out, "export", f"coco_{name}.onnx"), providers=["CPUExecutionProvider"])
    warped, mask = session("correspondence").run(None, {"input.1": seg, "input.70": ref, "ref_seg_map": ref_seg})
    image = session("translation").run(None, {"seg": np.concatenate([warped, seg], 1)})[0]
    composite = session("composite").run(None, {"input_seg_map": seg, "ref_image": ref, "ref_seg_map": ref_seg})[0]
    np.testing.assert_allclose(image, composite, atol=1e-5)
    np.testing.assert_allclose(mask.sum(axis=1), 1, atol=1e-4)
    assert image.std() > 1e-3  # not a constant output
    cfg = drivers.parse(SPEC, [f"--output_dir={out}"])
    with eager():
        nets, _ = drivers.load_inference(SPEC, cfg, log=lambda *_: None)
        want = CoCosNet(nets["Corr"], nets["G"])(Tensor(seg), Tensor(ref), Tensor(ref_seg)).asnumpy()
    # The correlation softmax (temperature 0.01) multiplies feature differences by 100: where two exemplar
    # positions nearly tie, float32 differences between onnxruntime's and MindSpore's convolutions move a
    # few output pixels by up to ~0.02 (0.26 % of them here); everywhere else the two agree to 5e-3.
    diff = np.abs(composite - want)
    assert diff.max() < 0.05 and (diff > 5e-3).mean() < 0.01, (diff.max(), (diff > 5e-3).mean())


def test_demo_onnx_backend_answers_as_its_mindspore_backend(exported):
    """The web demo's ONNX backend (this export's correspondence + translation pair, found by its notes)
    gives the output and the warped exemplar of the demo's MindSpore backend for the same request."""
    from demo.core import DemoModel
    out, _ = exported
    rng = np.random.default_rng(6)
    ids = np.kron(rng.integers(0, L, (4, 4)), np.ones((16, 16), np.int64))
    exemplar = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    onnx_model = DemoModel("cocosnet", drivers.parse(SPEC, [f"--output_dir={out}"]), "onnx", log=lambda *_: None)
    assert "coco{_correspondence,_translation}.onnx" in onnx_model.describe()
    mine, _ = onnx_model.run(ids, exemplar)
    try:
        ms_model = DemoModel("cocosnet", drivers.parse(SPEC, [f"--output_dir={out}", "--mode=pynative"]),
                             log=lambda *_: None)
        ref, _ = ms_model.run(ids, exemplar)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    assert len(mine) == len(ref) == 2
    for a, b in zip(mine, ref):  # float outputs within 5e-3 (test above) = 0.64 of a uint8 step
        diff = np.abs(a.astype(int) - b.astype(int))
        assert a.shape == b.shape == (S, S, 3) and b.std() > 0 and diff.max() <= 1 and (diff > 0).mean() < 0.05


def test_eval_takes_the_data_the_checkpoint_was_trained_on(tmp_path):
    """eval/predict/export with --dataroot left empty read the checkpoint's data as training did: its data_format
    and validation pair list beside the dataroot, or after a demo run the same demo set (demo_size, demo_train,
    demo_val); a --dataroot given on the command line takes nothing."""
    data = tmp_path / "data"
    data.mkdir()
    cfg = drivers.parse(SPEC, [f"--{k}={v}" for k, v in ARCH.items()])
    nets = SPEC.build_inference(cfg)
    for name, meta in (("folders", {"dataroot": str(data), "data": {"data_format": "folders",
                                                                     "ref_list_val": "pairs.txt"}}),
                       ("demo", {"dataroot": "", "data": {"data_format": "folders", "ref_list_val": "",
                                                          "demo_size": 96, "demo_train": 6, "demo_val": 3}})):
        out = tmp_path / name
        CheckpointManager(str(out / "ckpt"), meta=dict(ARCH, model="cocosnet", **meta)).save(nets, {"epoch": 0,
                                                                                                   "step": 0})
        cfg, logs = drivers.parse(SPEC, [f"--output_dir={out}"]), []
        drivers.load_inference(SPEC, cfg, log=logs.append)
        if name == "folders":
            assert (cfg.dataroot, cfg.data_format, cfg.ref_list_val) == (str(data), "folders", "pairs.txt")
            assert logs[0].startswith(f"[cocosnet] dataroot={data} (data_format=folders, ref_list_val=pairs.txt)")
        else:
            assert (cfg.dataroot, cfg.demo_size, cfg.demo_train, cfg.demo_val) == ("", 96, 6, 3)
    cfg = drivers.parse(SPEC, [f"--output_dir={tmp_path / 'folders'}", f"--dataroot={tmp_path}"])
    drivers.load_inference(SPEC, cfg, log=lambda *_: None)
    assert (cfg.dataroot, cfg.data_format, cfg.ref_list_val) == (str(tmp_path), "ade20k", "")
