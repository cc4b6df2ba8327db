"""predict/eval ``--backend=onnxruntime|openvino`` (common/backends.py, common.drivers.load_runners) against
MindSpore on tiny random-weight checkpoints of pix2pix and CRN: the same float outputs within 1e-4 and
the same images; the ONNX file exported once and reused; clear errors for a missing package, a file of
another model or size, and options that do not fit."""
import importlib.util
import json
import os
import sys

import cv2
import numpy as np
import pytest

import common  # noqa: F401
from common import drivers
from common.backends import BackendError, load_backend
from common.checkpoint import save_cell
from common.config import ConfigError
from crn.src.spec import CRNSpec
from pix2pix.src.spec import Pix2PixSpec

PIX2PIX, CRN = Pix2PixSpec(), CRNSpec()
# running statistics and no dropout: the graph export.py writes with export_norm=running_stats
P2P_TINY = ["--netG=unet_64", "--ngf=8", "--crop_size=64", "--eval_protocol=eval", "--export_norm=running_stats"]
CRN_TINY = ["--size=32", "--width_mult=0.0625", "--num_outputs=3", "--label_format=trainIds"]
HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
ONNX_BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not HAVE_OPENVINO, reason="openvino not installed (optional: pip install openvino)"))]


def checkpoint(spec, out, tiny, seed=0):
    """A random-weight checkpoint of ``spec``'s inference networks under ``out``/ckpt (no training)."""
    import mindspore as ms
    cfg = drivers.parse(spec, tiny + [f"--output_dir={out}"])
    drivers._runtime(cfg, cpu_conv="native")
    ms.set_seed(seed)
    nets = spec.build_inference(cfg)
    path = os.path.join(str(out), "ckpt", f"{spec.inference_components[0]}.ckpt")
    save_cell(nets[spec.inference_components[0]], path, dict(spec.arch(cfg), model=spec.name))
    return path


@pytest.fixture(scope="module")
def p2p(tmp_path_factory):
    out = tmp_path_factory.mktemp("p2p_backend")
    ckpt = checkpoint(PIX2PIX, out, P2P_TINY)
    image = (np.random.RandomState(0).rand(64, 96, 3) * 255).astype(np.uint8)  # two tiles of 64x64
    cv2.imwrite(str(out / "in.png"), image)
    return out, ckpt


def args(out, ckpt, backend, *extra):
    return P2P_TINY + [f"--output_dir={out}", f"--ckpt={ckpt}", f"--backend={backend}"] + list(extra)


def runner_outputs(spec, cfg, feeds):
    rt = drivers._backend_runtime(cfg)
    nets, _ = drivers.load_runners(spec, cfg, rt, log=lambda *_: None)
    component = spec.inference_components[0]
    return spec.runners(cfg, nets)[component](feeds)


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_pix2pix_backend_equals_mindspore(p2p, backend):
    out, ckpt = p2p
    x = np.random.RandomState(1).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    ours = runner_outputs(PIX2PIX, drivers.parse(PIX2PIX, args(out, ckpt, "mindspore")), {"input": x})[0]
    theirs = runner_outputs(PIX2PIX, drivers.parse(PIX2PIX, args(out, ckpt, backend)), {"input": x})[0]
    assert theirs.shape == ours.shape == (1, 3, 64, 64) and np.abs(ours).max() > 1e-2
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
    for name in ("mindspore", backend):
        drivers.predict(PIX2PIX, drivers.parse(PIX2PIX, args(out, ckpt, name, f"--input={out / 'in.png'}",
                                                                 f"--output_dir={out / name}")))
    a, b = (cv2.imread(str(out / name / "predict" / "in.png")).astype(int) for name in ("mindspore", backend))
    assert a.shape == (64, 96, 3) and np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3


def test_export_is_written_once_and_redone_for_a_newer_checkpoint(p2p):
    out, ckpt = p2p
    cfg = drivers.parse(PIX2PIX, args(out, ckpt, "onnxruntime", f"--output_dir={out / 'cache'}"))
    logs = []
    drivers.load_runners(PIX2PIX, cfg, drivers._backend_runtime(cfg), log=logs.append)
    onnx_path = out / "cache" / "export" / "pix2pix_G_running_stats.onnx"
    note = json.load(open(str(onnx_path)[:-5] + ".json"))
    assert note["checkpoint"] == ckpt and set(note["files"]) == {"ONNX"} and any("exporting G" in line for line in logs)
    logs.clear()
    drivers.load_runners(PIX2PIX, cfg, drivers._backend_runtime(cfg), log=logs.append)
    assert not any("exporting" in line for line in logs)
    stale = os.path.getmtime(ckpt) - 10  # the file now looks older than the checkpoint
    os.utime(onnx_path, (stale, stale))
    drivers.load_runners(PIX2PIX, cfg, drivers._backend_runtime(cfg), log=logs.append)
    assert any("exporting G" in line for line in logs) and os.path.getmtime(onnx_path) > stale


def test_pix2pix_eval_on_onnxruntime_scores_as_mindspore(p2p, demo_cache):
    out, ckpt = p2p
    scores = {}
    for backend in ("mindspore", "onnxruntime"):
        record = drivers.evaluate(PIX2PIX, drivers.parse(PIX2PIX, args(
            out, ckpt, backend, f"--output_dir={out / ('eval_' + backend)}", "--num_val=2", "--metrics=psnr",
            "--demo_size=64")))
        scores[backend] = {k: v["value"] for k, v in record["metrics"].items()}
    assert set(scores["mindspore"]) == {"psnr", "l1"}
    assert scores["onnxruntime"]["l1"] == pytest.approx(scores["mindspore"]["l1"], abs=1e-5)
    assert scores["onnxruntime"]["psnr"] == pytest.approx(scores["mindspore"]["psnr"], abs=1e-2)


def test_crn_backends_equal_mindspore(tmp_path):
    """Both ONNX backends (OpenVINO when installed) in one test: one checkpoint, one MindSpore run."""
    from crn.src.spec import example_label
    ckpt = checkpoint(CRN, tmp_path, CRN_TINY)
    ids = np.full((32, 64), 255, np.uint8)
    ids[:16] = 10
    ids[16:, :32] = 0
    cv2.imwrite(str(tmp_path / "label.png"), ids)
    label = example_label(19, 32, 64)
    base = CRN_TINY + [f"--output_dir={tmp_path}", f"--ckpt={ckpt}", f"--input={tmp_path / 'label.png'}"]
    backends = ["mindspore", "onnxruntime"] + (["openvino"] if HAVE_OPENVINO else [])
    outputs, images = {}, {}
    for name in backends:
        outputs[name] = runner_outputs(CRN, drivers.parse(CRN, base + [f"--backend={name}"]), {"label": label})[0]
        written = drivers.predict(CRN, drivers.parse(CRN, base + [f"--backend={name}", f"--output_dir={tmp_path / name}"]))
        assert [os.path.basename(p) for p in written] == ["label_k0.png", "label_k1.png", "label_k2.png", "label_grid.png"]
        images[name] = np.stack([cv2.imread(p).astype(int) for p in written[:3]])
    assert outputs["mindspore"].shape == (1, 3, 3, 32, 64) and outputs["mindspore"].std() > 1e-3
    for name in backends[1:]:
        np.testing.assert_allclose(outputs[name], outputs["mindspore"], atol=1e-4, rtol=0, err_msg=name)
        assert np.abs(images["mindspore"] - images[name]).max() <= 1


def test_openvino_bf16_is_close_to_f32(p2p):
    pytest.importorskip("openvino")
    import openvino as ov
    from common.backends import _onednn_uncapped
    with _onednn_uncapped():  # as the backend asks: the plugin's first query latches oneDNN's ISA (tests cap AVX2)
        capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        with pytest.raises(BackendError, match="no bf16 instructions.*--precision=f32"):
            runner_outputs(PIX2PIX, drivers.parse(PIX2PIX, args(*p2p, "openvino", "--precision=bf16")), {})
        return
    out, ckpt = p2p
    x = np.random.RandomState(2).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    f32 = runner_outputs(PIX2PIX, drivers.parse(PIX2PIX, args(out, ckpt, "openvino")), {"input": x})[0]
    bf16 = runner_outputs(PIX2PIX, drivers.parse(PIX2PIX, args(out, ckpt, "openvino", "--precision=bf16")),
                          {"input": x})[0]
    diff = np.abs(bf16 - f32).max()
    assert 0 < diff < 0.1  # bf16 keeps 8 mantissa bits: visibly not f32, yet the same image


def test_missing_package_names_the_pip_package(p2p, monkeypatch):
    out, ckpt = p2p
    for kind in ("onnxruntime", "openvino"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, kind, None)  # import then raises ImportError
            with pytest.raises(BackendError, match=f"--backend={kind} needs the Python package '{kind}'.*pip install {kind}"):
                load_backend(kind, str(out / "whatever.onnx"))
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendError, match="pip install openvino"):
        drivers.predict(PIX2PIX, drivers.parse(PIX2PIX, args(out, ckpt, "openvino", f"--input={out / 'in.png'}")))


def test_onnx_of_another_model_or_size_is_refused(p2p, tmp_path):
    out, ckpt = p2p
    cfg = drivers.parse(PIX2PIX, args(out, ckpt, "onnxruntime", f"--output_dir={tmp_path / 'a'}"))
    drivers.load_runners(PIX2PIX, cfg, drivers._backend_runtime(cfg), log=lambda *_: None)
    p2p_onnx = str(tmp_path / "a" / "export" / "pix2pix_G_running_stats.onnx")
    other_size = checkpoint(PIX2PIX, tmp_path / "b", ["--netG=unet_64", "--ngf=8", "--crop_size=128"])
    with pytest.raises(BackendError, match=r"pix2pix_G_running_stats\.onnx has inputs \{'input': \[1, 3, 64, 64\]\}.*"
                                           r"takes inputs \{'input': \[1, 3, 128, 128\]\}.*another model or at another size"):
        drivers.predict(PIX2PIX, drivers.parse(PIX2PIX, args(tmp_path / "b", other_size, "onnxruntime",
                                                             f"--onnx={p2p_onnx}", f"--input={out / 'in.png'}")))
    crn_ckpt = checkpoint(CRN, tmp_path / "c", CRN_TINY)
    with pytest.raises(BackendError, match=r"has inputs \{'input'.*the crn G of .* takes inputs \{'label'"):
        drivers.predict(CRN, drivers.parse(CRN, CRN_TINY + [f"--output_dir={tmp_path / 'c'}", f"--ckpt={crn_ckpt}",
                                                             "--backend=onnxruntime", f"--onnx={p2p_onnx}",
                                                             f"--input={out / 'in.png'}"]))


@pytest.mark.parametrize("extra, error, message", [
    (["--backend=mindspore", "--onnx=x.onnx"], ConfigError, r"--onnx=x\.onnx is for --backend=onnxruntime or openvino"),
    (["--precision=bf16", "--cpu_conv=native"], ConfigError, r"native convolutions run under the AVX2 cap"),
    (["--backend=onnxruntime", "--precision=bf16"], BackendError, r"--precision=bf16: onnxruntime runs f32.*openvino"),
    (["--backend=onnxruntime", "--onnx=a.onnx,b.onnx"], ConfigError, r"pix2pix runs 1 ONNX file\(s\), one per network \(G\)"),
    (["--backend=onnxruntime", "--onnx=missing.onnx"], FileNotFoundError, r"ONNX file missing\.onnx does not exist"),
])
def test_bad_backend_options_are_clear_errors(p2p, extra, error, message):
    out, ckpt = p2p
    with pytest.raises(error, match=message):
        drivers.predict(PIX2PIX, drivers.parse(PIX2PIX, P2P_TINY + [f"--output_dir={out}", f"--ckpt={ckpt}",
                                                                    f"--input={out / 'in.png'}"] + extra))


def test_eval_refuses_bf16_on_mindspore_since_the_metric_networks_would_score_in_bf16(p2p):
    out, ckpt = p2p
    with pytest.raises(ConfigError, match=r"--precision=bf16 with --backend=mindspore.*metric networks.*--precision=f32"):
        drivers.evaluate(PIX2PIX, drivers.parse(PIX2PIX, args(out, ckpt, "mindspore", "--precision=bf16")))
