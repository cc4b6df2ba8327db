"""common.onnx_winograd: 3x3 ``Conv`` nodes rewritten as Winograd F(4x4, 3x3) or F(6x6, 3x3) in standard ONNX
operators give the outputs of the original graph in onnxruntime (odd sizes, asymmetric padding, batch 2, with and
without bias), leave the layers it cannot or should not rewrite alone, and are what ``load_backend("onnxruntime",
...)`` runs."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from common.backends import load_backend  # noqa: E402
from common import onnx_winograd  # noqa: E402
from common.onnx_winograd import MIN_CHANNELS, MIN_TILES, layer_tile, winograd_convolutions  # noqa: E402


@pytest.fixture
def few_channels(monkeypatch):
    """Layers from 16 channels rewritten (the default threshold is for speed, not correctness), so the graphs stay
    small."""
    monkeypatch.setattr(onnx_winograd, "MIN_CHANNELS", 16)


def conv_model(batch, cin, cout, h, w, *, pads=(1, 1, 1, 1), kernel=3, stride=1, group=1, bias=True,
               dynamic_batch=False, auto_pad=None):
    """One ``Conv`` (random weights, seed 0) followed by a ``Relu``: x [B, C, H, W] -> z."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((cout, cin // group, kernel, kernel)).astype(np.float32) / np.sqrt(kernel ** 2 * cin)
    inits = [numpy_helper.from_array(weight, "W")]
    inputs = ["x", "W"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "B"))
        inputs.append("B")
    padding = dict(auto_pad=auto_pad) if auto_pad else dict(pads=list(pads))
    conv = helper.make_node("Conv", inputs, ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                            group=group, name="conv", **padding)
    if auto_pad:  # SAME_* keeps the size at stride 1 (one row/column on every side for 3x3)
        pads = (kernel // 2,) * 4
    out_h = (h + pads[0] + pads[2] - kernel) // stride + 1
    out_w = (w + pads[1] + pads[3] - kernel) // stride + 1
    graph = helper.make_graph(
        [conv, helper.make_node("Relu", ["y"], ["z"])], "one_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch" if dynamic_batch else batch, cin, h, w])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, cout, out_h, out_w])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("tile", [4, 6])
@pytest.mark.parametrize("batch,cin,cout,h,w,pads,bias", [
    (1, 16, 24, 33, 29, (1, 1, 1, 1), True),    # output sides not multiples of 4: last tiles cropped
    (2, 32, 24, 40, 36, (0, 2, 1, 0), False),   # batch 2, asymmetric padding
    (1, 24, 40, 32, 64, (1, 1, 1, 1), True),    # whole tiles
    (1, 16, 16, 38, 38, (0, 0, 0, 0), True),    # valid convolution
    (1, 16, 16, 30, 34, "SAME_UPPER", True),    # as mindspore.onnx.export writes pad_mode "same"
])
def test_rewritten_graph_equals_the_original(few_channels, batch, cin, cout, h, w, pads, bias, tile):
    padding = dict(auto_pad=pads) if isinstance(pads, str) else dict(pads=pads)
    model = conv_model(batch, cin, cout, h, w, bias=bias, **padding)
    x = np.random.default_rng(1).standard_normal((batch, cin, h, w)).astype(np.float32)
    want = run(model, x)
    assert winograd_convolutions(model, tile=tile) == (1, 1, {tile: 1})
    onnx.checker.check_model(model)
    assert [n.input[1] for n in model.graph.node if n.op_type == "Conv"] == ["conv/winograd/const/k_in"]
    assert "W" not in {t.name for t in model.graph.initializer}  # replaced by the transformed kernels U
    u = next(t for t in model.graph.initializer if t.name == "conv/winograd/const/u")
    assert list(u.dims) == [(tile + 2) ** 2, cout, cin]
    got = run(model, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=(2e-5 if tile == 4 else 4e-5) * np.abs(want).max())


@pytest.mark.parametrize("out_h, out_w, expected", [
    (256, 512, 6), (128, 256, 6), (128, 128, 6), (132, 140, 6),  # from 128x128, 0.79-0.84x F(4x4)'s products
    (64, 128, 4), (36, 36, 4),                                   # smaller maps
    (16, 2048, 4), (8, 2048, 4),                                 # 0.89x, 1.19x: cropped 6x6 tiles
])
def test_layer_tile(out_h, out_w, expected):
    assert layer_tile(out_h, out_w) == expected


def test_each_layer_gets_its_own_tile(few_channels):
    """Without ``tile``, a 128x128 output runs F(6x6, 3x3) and a 64x128 one F(4x4, 3x3) (:func:`layer_tile`)."""
    for (h, w), tile in (((128, 128), 6), ((64, 128), 4)):
        model = conv_model(1, 16, 16, h, w)
        assert winograd_convolutions(model) == (1, 1, {tile: 1})
        u = next(t for t in model.graph.initializer if t.name == "conv/winograd/const/u")
        assert list(u.dims) == [(tile + 2) ** 2, 16, 16]


@pytest.mark.parametrize("change", [
    dict(kernel=1, pads=(0, 0, 0, 0)), dict(stride=2), dict(group=2), dict(cin=8), dict(cout=8), dict(h=8, w=8),
    dict(dynamic_batch=True),
])
def test_layers_it_does_not_rewrite_stay_conv(few_channels, change):
    kw = dict(batch=1, cin=16, cout=16, h=40, w=40)
    kw.update({k: change.pop(k) for k in list(change) if k in kw})
    model = conv_model(**kw, **change)
    before = model.SerializeToString()
    assert winograd_convolutions(model)[0] == 0
    assert model.SerializeToString() == before


def test_size_thresholds():
    """Rewritten from MIN_TILES 4x4 output tiles and MIN_CHANNELS input and output channels (the default rule)."""
    c = MIN_CHANNELS
    assert winograd_convolutions(conv_model(1, c, c, 4, 4 * MIN_TILES))[:2] == (1, 1)
    assert winograd_convolutions(conv_model(1, c, c, 4, 4 * MIN_TILES - 4))[:2] == (0, 1)
    assert winograd_convolutions(conv_model(1, c - 1, c, 4, 4 * MIN_TILES))[:2] == (0, 1)
    assert winograd_convolutions(conv_model(1, c, c - 1, 4, 4 * MIN_TILES))[:2] == (0, 1)


def test_onnxruntime_backend_runs_the_rewritten_graph(tmp_path):
    """Default thresholds; the transformed kernels (9.4 MB) reach onnxruntime as external initializers."""
    c = MIN_CHANNELS
    model = conv_model(1, c, c, 10, 38)
    path = str(tmp_path / "conv.onnx")
    onnx.save(model, path)
    x = np.random.default_rng(2).standard_normal((1, c, 10, 38)).astype(np.float32)
    runner = load_backend("onnxruntime", path)
    assert runner.describe().endswith("; 1 of 1 3x3 convolutions as Winograd F(4x4, 3x3) (1)")
    want = run(model, x)
    np.testing.assert_allclose(runner({"x": x})[0], want, rtol=0, atol=2e-5 * np.abs(want).max())
    plain = load_backend("onnxruntime", path, winograd=False)
    assert "Winograd" not in plain.describe()
    np.testing.assert_array_equal(plain({"x": x})[0], want)
