"""3x3 convolutions of an ONNX graph rewritten as Winograd F(4x4, 3x3) or F(6x6, 3x3) in standard operators, for
onnxruntime.

onnxruntime's CPU ``Conv`` computes direct sums (9 multiplies per output and input channel). MindSpore's
``winograd`` path (:mod:`common.conv`) needs 2.25, so on CRN at 256p it ran twice as fast as the exported file in
onnxruntime. :func:`winograd_convolutions` gives onnxruntime the same arithmetic without custom operators: each
eligible ``Conv`` node (3x3, stride 1, no dilation, one group, constant weight, static input shape) becomes, with
the layer's tile m (:func:`layer_tile`: 6 on maps from 128x128, 1.78 multiplies, else 4) and a = m + 2,

* ``Pad`` (the node's padding, then zeros completing the last a x a tiles) and ``Reshape`` [B*C, 1, Hp, Wp];
* ``Conv`` with the a*a fixed a x a kernels ``B^T d B`` at stride m: the input tiles' transforms [B*C, a*a, th, tw],
  rearranged to V [a*a, C, B*T] (T = th*tw tiles per sample);
* ``MatMul`` U [a*a, N, C] @ V: the a*a independent products, U = the kernels' transforms ``G g G^T`` (computed
  here in float64 from the weight initializer, which it replaces: 4x its size for m = 4, 7.1x for m = 6);
* ``MatMul`` with ``A^T (x) A^T`` [m*m, a*a], then ``DepthToSpace`` (batch 1; else a ``Transpose``) to the m x m
  output tiles, ``Slice`` to the output size, ``Add`` of the bias.

The file on disk is untouched: :mod:`common.backends` applies the rewrite in memory when it loads an ONNX file
into onnxruntime (other runtimes and exporters keep the portable ``Conv``). Values: the same sums in another order,
as on MindSpore's ``winograd`` path (float32 rounding: within 2e-5 of the output's scale with m = 4, 4e-5 with m = 6,
whose larger transform entries, up to 2^5 in A^T, amplify the products' rounding; tested against the original graph).
"""
import numpy as np

from common.winograd import winograd_factors

__all__ = ["MIN_CHANNELS", "MIN_TILES", "layer_tile", "winograd_convolutions"]

# The smallest layers rewritten: at least MIN_CHANNELS input and output channels and MIN_TILES 4x4 output tiles
# (B*T). Measured in onnxruntime 1.32 on a 2-core AMD EPYC (AVX2), one layer, 3x3 pad 1, batch 1 (the measurement
# of `python bench/onnx_winograd_layer.py CINxCOUTxHxW ...`), ms native -> rewritten: 1024->1024 at 64x128
# 922 -> 523, at 16x32 72 -> 39, at 8x16 (8 tiles) 17 -> 15, at 4x8 (2 tiles) 6 -> 13; 1044->512 at 128x256
# 2109 -> 892; 512->512 at 256x512 4693 -> 2091; 256->256 at 128x256 265 -> 212, at 8x8 0.6 -> 1.8; 128->128 at 128x256 60 -> 74, 512->128 and 128->512 at 64x64 35 -> 35 and 34 -> 39 (few
# channels: the tile transforms and layout changes, memory-bound, outweigh the 4x fewer multiplies).
MIN_TILES = 8
MIN_CHANNELS = 256
# F(6x6, 3x3) needs 64/36 = 1.78 products per output and input channel against F(4x4)'s 2.25 (0.79x, on sides that
# are multiples of 12), but its 8x8 tile transforms move more data per output. onnxruntime 1.32, 2-core AMD EPYC Zen 4,
# one layer (`python bench/onnx_winograd_layer.py ... --tiles 4,6,4,6 --runs 5` or 7, ms F(4x4) -> F(6x6), two
# rounds): 532->512 at 256x512 (products 0.80x) 1574 / 1429 -> 1310 / 1325; 1044->512 at 128x256 (0.82x) 679 / 639 ->
# 570 / 585; 512->512 at 128x128 (0.84x) 168 / 149 -> 150 / 143; no gain on smaller maps: 1024->1024 at 64x128 (0.84x)
# 277 / 269 -> 274 / 287, 512->512 at 64x64 41 / 38 -> 39 / 43 (CoCosNet's composite: 4.68 against 4.76 s per image
# with its 64x64 layers as F(6x6)); 1024->1024 at 32x64 (0.92x) 71 -> 83, at 16x32 (1.0x) 17 -> 30.
F6_AT_MOST = 0.85
F6_MIN_PIXELS = 128 * 128


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _plain_3x3(node, weights):
    """True for a ``Conv`` with a constant [N, C, 3, 3] weight, stride 1, no dilation, one group."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
        return False
    attrs = _attrs(node)
    return (list(weights[node.input[1]].dims[2:]) == [3, 3] and attrs.get("group", 1) == 1
            and list(attrs.get("strides", [1, 1])) == [1, 1] and list(attrs.get("dilations", [1, 1])) == [1, 1])


def _pads(node):
    """[top, left, bottom, right] of a 3x3 stride-1 ``Conv`` (``auto_pad`` SAME_*: one on every side, as
    ``mindspore.onnx.export`` writes pad_mode "same")."""
    attrs = _attrs(node)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return [1, 1, 1, 1]
    return [0, 0, 0, 0] if auto_pad == "VALID" else list(attrs.get("pads", [0, 0, 0, 0]))


def _worth_it(node, shape, n_out):
    """(pads [top, left, bottom, right], input shape) when the layer on input ``shape`` is large enough, else None."""
    if shape is None or len(shape) != 4 or any(d <= 0 for d in shape) or min(shape[1], n_out) < MIN_CHANNELS:
        return None
    top, left, bottom, right = _pads(node)
    b, _, h, w = shape
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    if out_h < 1 or out_w < 1 or b * -(-out_h // 4) * -(-out_w // 4) < MIN_TILES:
        return None
    return (top, left, bottom, right), shape


def _static_shapes(model):
    """{value name: [dims]} of the graph's values after shape inference (-1 for a dimension it cannot fix).

    Inferred on a copy holding the small initializers (shape vectors, scales: their values matter) and declaring
    the large ones by type and shape only, so the weights are not copied."""
    from onnx import helper, shape_inference
    graph = model.graph
    small = [t for t in graph.initializer if t.ByteSize() < 4096]
    declared = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                for t in graph.initializer if t.ByteSize() >= 4096]
    light = helper.make_model(
        helper.make_graph(graph.node, graph.name, list(graph.input) + declared, graph.output, small),
        opset_imports=model.opset_import, ir_version=max(model.ir_version, 4))
    inferred = shape_inference.infer_shapes(light)
    shapes = {}
    for v in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
    return shapes


def layer_tile(out_h, out_w):
    """The Winograd tile m of a layer with an ``out_h`` x ``out_w`` output: 6 (F(6x6, 3x3)) on maps of at least
    :data:`F6_MIN_PIXELS` where its transformed products, 64 per 6x6 output tile, are at most :data:`F6_AT_MOST` of
    F(4x4, 3x3)'s, 36 per 4x4 tile (the last tiles of a side that is not a multiple of m are computed whole and
    cropped), else 4."""
    def products(m):
        return (m + 2) ** 2 * -(-out_h // m) * -(-out_w // m)
    return 6 if out_h * out_w >= F6_MIN_PIXELS and products(6) <= F6_AT_MOST * products(4) else 4


def _rewrite(node, pads, shape, weight, initializers, m):
    """The nodes replacing the 3x3 ``Conv`` ``node`` (input [B, C, H, W], ``weight`` its [N, C, 3, 3] initializer)
    by Winograd F(m x m, 3x3) (a = m + 2); their constants, the transformed kernels U [a*a, N, C]
    included, are added to ``initializers`` (the graph's)."""
    from onnx import helper, numpy_helper
    b, c, h, w = shape
    n_out = weight.dims[0]
    top, left, bottom, right = pads
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    bt, g, at = winograd_factors(m, 3)
    a = m + 2
    th, tw = -(-out_h // m), -(-out_w // m)
    hp, wp = m * th + 2, m * tw + 2
    x = node.input[0]
    name = (node.name or node.output[0]) + "/winograd"

    def constant(array, suffix):
        tensor = initializers.add()
        tensor.name, tensor.data_type = f"{name}/const/{suffix}", helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = np.ascontiguousarray(array).tobytes()
        return tensor.name

    def make(op, inputs, suffix, **kw):
        nodes.append(helper.make_node(op, inputs, [f"{name}/{suffix}"], name=f"{name}/{suffix}", **kw))
        return nodes[-1].output[0]

    nodes = []
    pad_after = [0, 0, hp - h - top, wp - w - left]
    padded = make("Pad", [x, constant(np.array([0, 0, top, left] + pad_after, np.int64), "pads")], "padded")
    planes = make("Reshape", [padded, constant(np.array([b * c, 1, hp, wp], np.int64), "planes_shape")], "planes")
    k_in = np.einsum("iu,jv->ijuv", bt, bt).reshape(a * a, 1, a, a)
    tiles = make("Conv", [planes, constant(k_in.astype(np.float32), "k_in")], "tiles",
                 kernel_shape=[a, a], strides=[m, m])  # [B*C, a*a, th, tw]
    tiles = make("Reshape", [tiles, constant(np.array([b, c, a * a, th * tw], np.int64), "tiles_shape")], "tiles_4d")
    v = make("Transpose", [tiles], "v_4d", perm=[2, 1, 0, 3])  # [a*a, C, B, T]
    v = make("Reshape", [v, constant(np.array([a * a, c, b * th * tw], np.int64), "v_shape")], "v")
    k_w = np.einsum("iu,jv->ijuv", g, g).reshape(a * a, 9)  # [a*a, 3*3]
    u = k_w @ numpy_helper.to_array(weight).reshape(n_out * c, 9).T.astype(np.float64)  # [a*a, N*C]
    prods = make("MatMul", [constant(u.astype(np.float32).reshape(a * a, n_out, c), "u"), v], "m")  # [a*a, N, B*T]
    prods = make("Reshape", [prods, constant(np.array([a * a, n_out * b * th * tw], np.int64), "m_shape")], "m_rows")
    y = make("MatMul", [constant(np.kron(at, at).astype(np.float32), "k_out"), prods], "y_rows")  # [m*m, N*B*T]
    if b == 1:  # rows (p, q, n) are DepthToSpace's "DCR" channel order (in onnxruntime 0.83 s against a
        # Transpose's 1.18 s over CRN 256p's layers)
        y = make("Reshape", [y, constant(np.array([1, m * m * n_out, th, tw], np.int64), "y_shape")], "y_tiles")
        y = make("DepthToSpace", [y], "y", blocksize=m, mode="DCR")  # [1, N, m*th, m*tw]
    else:
        y = make("Reshape", [y, constant(np.array([m, m, n_out, b, th, tw], np.int64), "y_shape")], "y_tiles")
        y = make("Transpose", [y], "y_image", perm=[3, 2, 4, 0, 5, 1])  # [B, N, th, m, tw, m]
        y = make("Reshape", [y, constant(np.array([b, n_out, m * th, m * tw], np.int64), "out_shape")], "y")
    if (m * th, m * tw) != (out_h, out_w):
        y = make("Slice", [y, constant(np.array([0, 0], np.int64), "starts"),
                           constant(np.array([out_h, out_w], np.int64), "ends"),
                           constant(np.array([2, 3], np.int64), "axes")], "cropped")
    if len(node.input) > 2 and node.input[2]:
        bias = make("Reshape", [node.input[2], constant(np.array([1, n_out, 1, 1], np.int64), "bias_shape")], "bias")
        y = make("Add", [y, bias], "biased")
    nodes[-1].output[0] = node.output[0]
    return nodes


def winograd_convolutions(model, *, tile=None):
    """Rewrite, in place, the eligible 3x3 ``Conv`` nodes of ``model`` (an ``onnx.ModelProto``) as Winograd
    F(m x m, 3x3) in standard operators (see the module docstring). Layers with fewer than :data:`MIN_TILES` 4x4
    output tiles or :data:`MIN_CHANNELS` input or output channels stay ``Conv``.

    Args:
        tile: m for every rewritten layer (4 or 6); None: each layer's :func:`layer_tile`.

    Returns:
        (rewritten, candidates, tiles): how many ``Conv`` nodes were rewritten, of the graph's 3x3 stride-1 ones,
        and {m: how many of them as F(m x m, 3x3)}.
    """
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    shapes = _static_shapes(model)
    nodes, rewritten, candidates, tiles = [], 0, 0, {}
    for node in list(graph.node):
        plain = _plain_3x3(node, weights)
        found = plain and _worth_it(node, shapes.get(node.input[0]), weights[node.input[1]].dims[0])
        candidates, rewritten = candidates + plain, rewritten + bool(found)
        if not found:
            nodes.append(node)
            continue
        (top, left, bottom, right), (_, _, h, w) = found
        m = tile or layer_tile(h + top + bottom - 2, w + left + right - 2)
        tiles[m] = tiles.get(m, 0) + 1
        nodes.extend(_rewrite(node, *found, weights[node.input[1]], graph.initializer, m))
    if rewritten:
        graph.ClearField("node")
        graph.node.extend(nodes)
        used = {i for node in nodes for i in node.input} | {o.name for o in graph.output}
        dropped = set()
        for i in reversed(range(len(graph.initializer))):  # the rewritten layers' weights, now in U
            if graph.initializer[i].name not in used:
                dropped.add(graph.initializer[i].name)
                del graph.initializer[i]
        for i in reversed(range(len(graph.input))):  # IR < 4 files list the weights as inputs too
            if graph.input[i].name in dropped:
                del graph.input[i]
    return rewritten, candidates, tiles
