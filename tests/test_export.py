"""common.export: ONNX files pass onnx.checker and match MindSpore in onnxruntime; MINDIR files reload.

Generators are narrow (ngf=8) so that the reference layer trees compile in seconds.
"""
import os

import numpy as np
import onnx
import pytest

import common  # noqa: F401
import mindspore as ms
from mindspore import nn

from common.conv import use_conv_impl
from common.export import (ExportError, ReflectionPad2d, check_mindir_parity, check_onnx_parity, compose_onnx,
                           export_mindir, export_onnx, prepare_for_export)
from pix2pix.src.model import define_G

NGF = 8


def generator(netG, use_dropout=True, seed=0):
    """A generator with seeded weights and BN running statistics far from any batch's statistics."""
    net = define_G(netG, ngf=NGF, use_dropout=use_dropout)
    rng = np.random.default_rng(seed)
    ranges = {"moving_mean": (-0.5, 0.5), "moving_variance": (0.5, 2.0), "gamma": (0.5, 1.5), "beta": (-0.5, 0.5)}
    for p in net.get_parameters():
        kind = p.name.rpartition(".")[2]
        if kind in ranges:
            p.set_data(ms.Tensor(rng.uniform(*ranges[kind], p.shape).astype(np.float32)))
        elif kind in ("weight", "bias"):
            p.set_data(ms.Tensor(rng.normal(0.0, 0.05, p.shape).astype(np.float32)))
    return net


def image(size, seed=1):
    return ms.Tensor(np.random.default_rng(seed).uniform(-1, 1, (1, 3, size, size)).astype(np.float32))


@pytest.mark.parametrize("netG, size, norm", [("unet_128", 128, "running_stats"), ("unet_128", 128, "batch_stats"),
                                              ("unet_256", 256, "batch_stats")])
def test_onnx_passes_checker_and_matches_mindspore(tmp_path, netG, size, norm):
    net = generator(netG)
    levels = {"unet_128": 7, "unet_256": 8}[netG]
    assert use_conv_impl(net, "matmul") == 2 * levels  # a generator of a matmul-path process exports native ops
    net = prepare_for_export(net, norm)
    x, path = image(size), str(tmp_path / "G.onnx")
    fixes = export_onnx(net, x, path, ["input"], ["output"])
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    deconvs = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert len(fixes) == len(deconvs) == levels
    assert len([n for n in model.graph.node if n.op_type == "Conv"]) == levels
    assert not any(n.op_type in ("MatMul", "Gemm", "Col2Im", "Custom") for n in model.graph.node)
    assert not any(a.name == "output_shape" for n in deconvs for a in n.attribute)
    has_bn = any(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert has_bn == (norm == "running_stats")
    assert check_onnx_parity(net, x, path, atol=1e-4) <= 1e-4


def test_batch_stats_file_holds_the_paper_test_protocol(tmp_path):
    """The batch_stats ONNX file computes G in training-mode BN (dropout off), not the running-stats G."""
    x = image(128)
    protocol = generator("unet_128", use_dropout=False)
    protocol.set_train(True)
    want = protocol(x).asnumpy()
    paths = {}
    for norm in ("batch_stats", "running_stats"):
        paths[norm] = str(tmp_path / f"G_{norm}.onnx")
        export_onnx(prepare_for_export(generator("unet_128"), norm), x, paths[norm])
    import onnxruntime as ort
    run = {k: ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"input": x.asnumpy()})[0]
           for k, p in paths.items()}
    assert np.abs(run["batch_stats"] - want).max() <= 1e-4
    assert np.abs(run["running_stats"] - want).max() > 1e-2


def test_mindir_reloads_with_the_same_outputs(tmp_path):
    net = prepare_for_export(generator("unet_128"), "batch_stats")
    x, path = image(128), str(tmp_path / "G.mindir")
    assert export_mindir(net, x, path) == path
    assert check_mindir_parity(net, x, path) <= 1e-5


def test_parity_check_refuses_a_file_from_other_weights(tmp_path):
    net = prepare_for_export(generator("unet_128"), "running_stats")
    x, path = image(128), str(tmp_path / "G.onnx")
    export_onnx(net, x, path)
    w = net.parameters_dict()["model.model.0.weight"]
    w.set_data(w + 0.1)
    with pytest.raises(ExportError, match=r"G\.onnx differs from the MindSpore network by max \|diff\| = .* > atol"):
        check_onnx_parity(net, x, path)


def test_reflection_padding_and_output_padding_export(tmp_path):
    """ResNet generators' layers: reflect nn.Pad (MirrorPad has no ONNX exporter) and a deconv with output_padding."""
    pad = ((0, 0), (0, 0), (3, 2), (1, 3))
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(ReflectionPad2d(pad)(ms.Tensor(x)).asnumpy(), np.pad(x, pad, mode="reflect"))

    net = nn.SequentialCell([nn.Pad(pad, mode="REFLECT"), nn.Conv2d(2, 4, 3, has_bias=True),
                             nn.Conv2dTranspose(4, 3, 3, 2, pad_mode="pad", padding=1, output_padding=1, has_bias=True)])
    prepare_for_export(net)
    assert isinstance(net[0], ReflectionPad2d)
    path = str(tmp_path / "pad.onnx")
    export_onnx(net, ms.Tensor(x), path, ["x"], ["y"])
    assert check_onnx_parity(net, ms.Tensor(x), path) <= 1e-5


def _onnx_part(path, nodes, inputs, outputs, initializers=()):
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node(*n) for n in nodes], "part",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs],
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in outputs],
                              [helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.ravel()) for k, v in initializers])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), path)
    return path


def test_composed_onnx_runs_the_parts_in_turn_and_drops_what_no_output_needs(tmp_path):
    """Part a: y = x * w, z = x + 1 (unused); part b: out = Relu(s). Glue: s = Concat(a/y, x2); the joined
    graph equals numpy's restatement, keeps neither z nor its constant, and names the parts' tensors apart
    (both parts call their input "x")."""
    import onnxruntime as ort
    w, one = np.float32([[[[2.0]], [[-3.0]]]]), np.ones((1, 1, 1, 1), np.float32)
    a = _onnx_part(str(tmp_path / "a.onnx"), [("Mul", ["x", "w"], ["y"]), ("Add", ["x", "one"], ["z"])],
                   [("x", [1, 2, 2, 2])], [("y", [1, 2, 2, 2]), ("z", [1, 2, 2, 2])], [("w", w), ("one", one)])
    b = _onnx_part(str(tmp_path / "b.onnx"), [("Relu", ["x"], ["out"])], [("x", [1, 3, 2, 2])], [("out", [1, 3, 2, 2])])
    inputs, outputs = {"x1": (1, 2, 2, 2), "x2": (1, 1, 2, 2)}, {"result": (1, 3, 2, 2)}
    feed_a, join, out = ("Identity", ["x1"], ["a/x"], {}), ("Concat", ["a/y", "x2"], ["b/x"], {"axis": 1}), \
        ("Identity", ["b/out"], ["result"], {})
    path = str(tmp_path / "ab.onnx")
    compose_onnx(path, {"a": a, "b": b}, (feed_a, join, out), inputs, outputs)
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == ["x1", "x2"] and [o.name for o in model.graph.output] == ["result"]
    assert [t.name for t in model.graph.initializer] == ["a/w"] and "Add" not in [n.op_type for n in model.graph.node]
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(1, 2, 2, 2)).astype(np.float32), rng.normal(size=(1, 1, 2, 2)).astype(np.float32)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x1": x1, "x2": x2})[0]
    np.testing.assert_array_equal(got, np.maximum(np.concatenate([x1 * w, x2], 1), 0))
    with pytest.raises(ExportError, match=r"bad.onnx joined from .* is invalid: .*glue_2_Identity.*"
                                          r"differ in dimension 1: \(3\) vs \(4\)"):
        compose_onnx(str(tmp_path / "bad.onnx"), {"a": a, "b": b}, (feed_a, join, out), inputs, {"result": (1, 4, 2, 2)})
    assert not os.path.exists(tmp_path / "bad.onnx")
    with pytest.raises(ExportError, match="glue makes a cycle: 5 nodes cannot be ordered"):  # a's input from b's output
        compose_onnx(str(tmp_path / "cycle.onnx"), {"a": a, "b": b}, (("Identity", ["b/out"], ["a/x"], {}), join, out),
                     {"x2": (1, 1, 2, 2)}, outputs)


def test_bad_arguments_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        prepare_for_export(generator("unet_128"), "eval")
    with pytest.raises(ValueError, match=r"must end in \.mindir"):
        export_mindir(generator("unet_128"), image(128), str(tmp_path / "G.onnx"))


@pytest.mark.parametrize("args, message", [([], "Usage"), (["nomodel"], "not a model with export.py"),
                                           (["crn", "PNG"], "format 'PNG'"),
                                           (["crn", "ONNX", "/no/such.ckpt"], "'/no/such.ckpt' does not exist")])
def test_run_export_sh_refuses_wrong_arguments(args, message):
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run(["bash", os.path.join(root, "scripts", "run_export.sh"), *args], capture_output=True, text=True)
    assert res.returncode == 2 and message in res.stderr and "Usage: bash scripts/run_export.sh MODEL" in res.stderr


def test_pix2pix_export_script_writes_checked_files_and_a_note(tmp_path):
    import json
    from common.checkpoint import CheckpointError, save_cell
    from common import drivers
    from pix2pix.src.spec import Pix2PixSpec
    spec = Pix2PixSpec()

    def export(args):
        return drivers.export(spec, drivers.parse(spec, args))
    save_cell(generator("unet_64"), str(tmp_path / "G.ckpt"),
              {"model": "pix2pix", "netG": "unet_64", "ngf": NGF, "norm": "batch", "input_nc": 3, "output_nc": 3})
    args = [f"--ckpt={tmp_path / 'G.ckpt'}", "--netG=unet_64", f"--ngf={NGF}", "--image_size=64",
            f"--output_dir={tmp_path}", "--file_name=G"]
    done = export(args)
    assert set(done) == {"MINDIR", "ONNX"} and all(diff <= 1e-4 for _, diff in done.values())
    note = json.loads((tmp_path / "export" / "G_batch_stats.json").read_text())
    assert note["export_norm"] == "batch_stats" and note["inputs"] == [{"name": "input", "shape": [1, 3, 64, 64],
                                                                         "dtype": "float32"}]
    assert note["outputs"][0]["shape"] == [1, 3, 64, 64] and note["netG"] == "unet_64"
    assert sorted(note["files"]) == ["MINDIR", "ONNX"]
    adopted = export(args[:1] + ["--image_size=64", "--export_format=ONNX", f"--output_dir={tmp_path}"])
    assert adopted["ONNX"][1] <= 1e-4  # netG/ngf come from the checkpoint's metadata
    save_cell(generator("unet_64"), str(tmp_path / "C.ckpt"), {"model": "crn"})
    with pytest.raises(CheckpointError, match="holds a crn network"):
        export([f"--ckpt={tmp_path / 'C.ckpt'}", f"--output_dir={tmp_path}"])
