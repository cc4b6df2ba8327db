"""Export a network to MINDIR or ONNX and prove that the file computes what the network computes.

Every model's ``export.py`` follows the same four steps::

    net = prepare_for_export(net, norm="batch_stats")      # eval mode, dropout off, BN as chosen
    export_onnx(net, x, "G.onnx", ["input"], ["output"])    # write + repair + onnx.checker
    check_onnx_parity(net, x, "G.onnx")                     # onnxruntime vs MindSpore, max |diff|
    export_mindir(net, x, "G.mindir"); check_mindir_parity(net, x, "G.mindir")

Normalisation. ``nn.BatchNorm2d`` exports as an inference-mode ONNX ``BatchNormalization`` (moving
mean/variance): ``norm="running_stats"``. The pix2pix test protocol normalises with the statistics of
the test batch instead (BN in training mode; for batch size 1 that is instance normalisation);
``norm="batch_stats"`` rewrites every BN as explicit mean/variance ops (``common.layers.BatchStatNorm2d``)
so that the exported graph holds that protocol.

Dropout. Exported graphs are deterministic: every :class:`common.layers.CounterDropout` is switched
off. (The pix2pix test protocol keeps dropout on; its masks depend on a step counter that a static
graph cannot carry.)

ONNX repairs (``fix_onnx_model``). ``mindspore.onnx.export`` writes opset 11 and gives ``ConvTranspose``
a 4-D ``output_shape`` attribute [B, C, H, W], which the ONNX spec defines as spatial only and
onnxruntime rejects. The repair drops it and sets the equivalent ``output_padding``, then checks by
shape inference that every ``ConvTranspose`` still produces the shape MindSpore recorded. When the
graph ends in an op the exporter expanded (a deconv with ``output_padding`` becomes ConvTranspose + Pad),
the requested output name is left unattached; the repair attaches it. ``prepare_for_export`` also swaps
reflect ``nn.Pad`` (MirrorPad, which the exporter cannot write) for slices + concat.

Composites (``compose_onnx``). A network made of networks already exported (CoCosNet's correspondence then
translation) is written by joining their ONNX files with a few glue nodes instead of tracing it again: the
trace is a full graph compile (the tests' 64x64 CoCosNet on a 2-core Ice Lake Xeon: the composite took 59 s of a
107-s export traced, 8 s joined with its parity check; cocosnet/README.md).
"""
import os
import tempfile

import numpy as np

import common  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before mindspore is imported)
import mindspore as ms
from mindspore import nn, ops

from common.io import atomic_file
from common.conv import use_conv_impl
from common.layers import BatchStatNorm2d, CounterDropout

__all__ = ["NORM_MODES", "ExportError", "ReflectionPad2d", "replace_cells", "prepare_for_export", "export_mindir",
           "export_onnx", "compose_onnx", "fix_onnx_model", "check_onnx_parity", "check_mindir_parity"]

NORM_MODES = ("batch_stats", "running_stats")


class ExportError(RuntimeError):
    """An exported file is invalid or does not reproduce the network within tolerance."""


class ReflectionPad2d(nn.Cell):
    """Reflection padding of [B, C, H, W] built from slices and concatenation (ONNX-exportable).

    ``nn.Pad(mode="REFLECT")`` lowers to MirrorPad, which ``mindspore.onnx.export`` cannot write.
    ``paddings`` uses ``nn.Pad``'s layout ((0, 0), (0, 0), (top, bottom), (left, right)).
    """

    def __init__(self, paddings):
        super().__init__()
        (n0, n1), (c0, c1), (top, bottom), (left, right) = [[int(p) for p in pair] for pair in paddings]
        if n0 or n1 or c0 or c1:
            raise ValueError(f"ReflectionPad2d pads H and W only; got paddings={paddings}")
        self.top, self.bottom, self.left, self.right = top, bottom, left, right

    def construct(self, x):
        h, w = x.shape[2], x.shape[3]
        top = [x[:, :, i:i + 1] for i in range(self.top, 0, -1)]
        bottom = [x[:, :, h - 1 - i:h - i] for i in range(1, self.bottom + 1)]
        x = ops.cat(top + [x] + bottom, 2)
        left = [x[..., i:i + 1] for i in range(self.left, 0, -1)]
        right = [x[..., w - 1 - i:w - i] for i in range(1, self.right + 1)]
        return ops.cat(left + [x] + right, 3)


def replace_cells(net, match, make):
    """Replace, in place, every sub-cell ``c`` of ``net`` with ``match(c)`` true by ``make(c)``.

    Parameter names are kept (``make`` should reuse ``c``'s Parameters). ``nn.SequentialCell`` and
    ``nn.CellList`` run a cached ``cell_list``, which is refreshed too. Returns how many were replaced.
    """
    replaced = 0
    for _, parent in list(net.cells_and_names()):
        children = parent._cells
        for key, child in list(children.items()):
            if match(child):
                children[key] = make(child)
                replaced += 1
        if hasattr(parent, "cell_list"):
            parent.cell_list = list(children.values())
    return replaced


def prepare_for_export(net, norm="running_stats"):
    """Put ``net`` in its exported form, in place: inference mode, dropout off, BN as ``norm``, and
    matmul-path convolutions (``common/conv.py``) back on the native ``Conv`` / ``ConvTranspose`` and
    compiled kernels (LeakyReLU) back on MindSpore's operators.

    Args:
        net: any Cell; ``nn.BatchNorm2d``, ``CounterDropout`` and reflect ``nn.Pad`` cells are rewritten.
        norm: ``"running_stats"`` (BN with moving mean/variance, ONNX ``BatchNormalization``) or
            ``"batch_stats"`` (BN from the input batch's statistics, the pix2pix test protocol).

    Returns:
        ``net`` itself, ready for :func:`export_onnx` / :func:`export_mindir`.
    """
    if norm not in NORM_MODES:
        raise ValueError(f"export norm={norm!r} is not supported; choose one of {NORM_MODES}")
    if norm == "batch_stats":
        replace_cells(net, lambda c: isinstance(c, nn.BatchNorm2d), BatchStatNorm2d)
    replace_cells(net, lambda c: isinstance(c, nn.Pad) and c.mode == "REFLECT" and len(c.paddings) == 4,
                  lambda c: ReflectionPad2d(c.paddings))
    for _, cell in net.cells_and_names():
        if isinstance(cell, CounterDropout):
            cell.always_on = False
    use_conv_impl(net, "native", compiled_kernels=False)
    net.set_train(False)
    return net


def _as_tuple(inputs):
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def outputs_numpy(outputs):
    """A network's output (a Tensor or a tuple of them) as a list of numpy arrays."""
    return [o.asnumpy() for o in _as_tuple(outputs)]


def export_mindir(net, inputs, path):
    """Write ``net`` traced on ``inputs`` (a Tensor or a tuple of Tensors) to the MINDIR file ``path``.

    The file appears only when the export succeeds. Returns ``path`` (which must end in ``.mindir``).
    """
    if not path.endswith(".mindir"):
        raise ValueError(f"MINDIR path {path} must end in .mindir (MindSpore appends it otherwise)")
    with atomic_file(path) as tmp:
        ms.export(net, *_as_tuple(inputs), file_name=tmp[:-len(".mindir")], file_format="MINDIR")
    return path


def _fix_output_names(model):
    """Rename dangling node outputs to the graph outputs that no node produces (the exporter leaves the
    requested ``output_names`` unattached when the last op is one it expanded, e.g. deconv + Pad)."""
    graph = model.graph
    produced = [o for n in graph.node for o in n.output]
    consumed = {i for n in graph.node for i in n.input}
    missing = [o.name for o in graph.output if o.name not in set(produced)]
    if not missing:
        return []
    dangling = [o for o in produced if o not in consumed and o not in {g.name for g in graph.output}]
    if len(dangling) != len(missing):
        raise ExportError(f"ONNX graph outputs {missing} are produced by no node and {len(dangling)} node outputs are "
                          f"unused ({dangling[:3]}); cannot tell which is which - export without output_names")
    rename = dict(zip(dangling, missing))
    for node in graph.node:
        node.output[:] = [rename.get(o, o) for o in node.output]
    return [f"graph output {new}: attached to {old[:60]}" for old, new in rename.items()]


def fix_onnx_model(model):
    """Repair, in place, what ``mindspore.onnx.export`` writes and onnx.checker/onnxruntime reject.

    Graph outputs: requested ``output_names`` that no node produces are attached to the unused node
    outputs (in order).

    ``ConvTranspose``: the 4-D ``output_shape`` [B, C, H, W] is replaced by the ``output_padding`` that
    gives the same H, W from the node's ``pads`` (``out = s*(in-1) + d*(k-1) + 1 - pad_begin - pad_end + op``
    with ``0 <= op < s``), so the output size follows the input instead of being fixed.

    Returns:
        Human-readable list of the repairs made.

    Raises:
        ExportError: shape inference on the repaired graph does not give the recorded output shapes.
    """
    import onnx
    from onnx import helper, shape_inference

    fixes = _fix_output_names(model)
    expected = {}
    for node in model.graph.node:
        if node.op_type != "ConvTranspose":
            continue
        attrs = {a.name: a for a in node.attribute}
        if "output_shape" not in attrs or len(attrs["output_shape"].ints) <= 2:
            continue
        out_shape = list(attrs["output_shape"].ints)
        spatial = out_shape[2:]
        kernel = list(attrs["kernel_shape"].ints)
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * len(spatial)
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * len(spatial)
        pads = list(attrs["pads"].ints) if "pads" in attrs else [0] * (2 * len(spatial))
        n = len(spatial)
        output_padding = [(spatial[i] - dilations[i] * (kernel[i] - 1) - 1 + pads[i] + pads[i + n]) % strides[i]
                          for i in range(n)]
        node.attribute.remove(attrs["output_shape"])
        if "output_padding" in attrs:
            node.attribute.remove(attrs["output_padding"])
        node.attribute.append(helper.make_attribute("output_padding", output_padding))
        expected[node.output[0]] = out_shape
        fixes.append(f"ConvTranspose {node.output[0][:60]}: output_shape {out_shape} -> output_padding {output_padding}")

    if expected:
        inferred = shape_inference.infer_shapes(model, strict_mode=True)
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                  for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for name, want in expected.items():
            if shapes.get(name) != want:
                raise ExportError(f"ONNX repair of ConvTranspose {name[:80]} gives shape {shapes.get(name)} instead of "
                                  f"{want}: its pads/strides cannot be expressed without output_shape; "
                                  f"export with MINDIR instead")
    onnx.checker.check_model(model)
    return fixes


def export_onnx(net, inputs, path, input_names=("input",), output_names=("output",)):
    """Write ``net`` traced on ``inputs`` to the ONNX file ``path`` (opset 11), repaired and checked.

    Args:
        net: Cell in its exported form (see :func:`prepare_for_export`).
        inputs: a Tensor or a tuple of Tensors, e.g. [1, 3, 256, 256] float32.
        path: destination ``.onnx``; written atomically, only after ``onnx.checker`` passes.
        input_names, output_names: graph input/output names (onnxruntime feeds by these names).

    Returns:
        The list of repairs made by :func:`fix_onnx_model`.
    """
    import onnx

    inputs = _as_tuple(inputs)
    if len(input_names) != len(inputs):
        raise ValueError(f"export_onnx({path}): {len(inputs)} inputs but {len(input_names)} input_names {input_names}")
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        ms.onnx.export(net, *inputs, file_name=raw, input_names=list(input_names), output_names=list(output_names))
        model = onnx.load(raw)
    try:
        fixes = fix_onnx_model(model)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"ONNX graph for {path} fails onnx.checker after repair: {e}") from None
    with atomic_file(path) as tmp:
        onnx.save(model, tmp)
    return fixes


def compose_onnx(path, parts, glue, inputs, outputs):
    """Write the ONNX file ``path`` that runs already exported ONNX files as one graph, joined by glue nodes.

    Args:
        path: destination ``.onnx``; written atomically, only after ``onnx.checker`` passes.
        parts: ``{prefix: onnx_path}``; every tensor and node name of a part becomes ``prefix/name``.
        glue: nodes ``(op_type, input_names, output_names, attributes)`` that feed the parts' inputs from the
            graph inputs or other parts' outputs, and the graph outputs from the parts (e.g. ``("Identity",
            ["b/out"], ["output"], {})``).
        inputs, outputs: ``{name: shape}`` of the graph's float32 inputs and outputs, in order.

    Nodes that no graph output depends on (a part's unused outputs) are left out, with their initializers.

    Raises:
        ExportError: the parts were written with different opsets, or the joined graph fails onnx.checker
            or strict shape inference (which also checks the declared output shapes).
    """
    import onnx
    from onnx import TensorProto, compose, helper, shape_inference

    models = {prefix: compose.add_prefix(onnx.load(p), prefix + "/") for prefix, p in parts.items()}
    opsets = {tuple((o.domain, o.version) for o in m.opset_import) for m in models.values()}
    if len(opsets) != 1:
        raise ExportError(f"compose_onnx({path}): the parts {sorted(parts.values())} have different opsets {opsets}")
    nodes = [n for m in models.values() for n in m.graph.node]
    nodes += [helper.make_node(op, list(ins), list(outs), name=f"glue_{i}_{op}", **attrs)
              for i, (op, ins, outs, attrs) in enumerate(glue)]
    producer = {name: node for node in nodes for name in node.output}
    needed, stack = set(), list(outputs)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack += list(producer[name].input) if name in producer else []
    kept = _topological([n for n in nodes if any(o in needed for o in n.output)])
    graph = helper.make_graph(
        kept, os.path.splitext(os.path.basename(path))[0],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs.items()],
        [t for m in models.values() for t in m.graph.initializer if t.name in needed])
    first = next(iter(models.values()))
    model = helper.make_model(graph, opset_imports=list(first.opset_import), ir_version=first.ir_version,
                              producer_name=first.producer_name)
    try:
        onnx.checker.check_model(model)
        shape_inference.infer_shapes(model, strict_mode=True)  # also: the outputs get the declared shapes
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"ONNX graph for {path} joined from {sorted(parts.values())} is invalid: {e}") from None
    with atomic_file(path) as tmp:
        onnx.save(model, tmp)


def _topological(nodes):
    """``nodes`` ordered so that each comes after the producers of its inputs (ONNX requires it; Kahn's order)."""
    producer = {name: i for i, node in enumerate(nodes) for name in node.output}
    deps = [{producer[x] for x in node.input if x in producer} for node in nodes]
    users = [[] for _ in nodes]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order = []
    while ready:
        i = ready.pop()
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        raise ExportError(f"the ONNX glue makes a cycle: {len(nodes) - len(order)} nodes cannot be ordered")
    return [nodes[i] for i in order]


def _compare(what, path, ours, theirs, atol):
    if len(ours) != len(theirs):
        raise ExportError(f"{what} {path} has {len(theirs)} outputs, the network {len(ours)}")
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a.shape != b.shape:
            raise ExportError(f"{what} {path} output {i} has shape {b.shape}, the network {a.shape}; "
                              f"export again with inputs of the size you run it on")
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0)
    if not worst <= atol:
        raise ExportError(f"{what} {path} differs from the MindSpore network by max |diff| = {worst:.3g} > "
                          f"atol = {atol:g}; was the network in its exported form (prepare_for_export, same norm "
                          f"mode, same weights) when it was compared?")
    return worst


def check_onnx_parity(net, inputs, onnx_path, atol=1e-4, outputs=None):
    """Run ``onnx_path`` in onnxruntime (CPU) and ``net`` in MindSpore on ``inputs``; compare every output.

    ``outputs``: ``net``'s outputs on ``inputs`` as numpy arrays, when the caller has them (``net`` is not run).

    Returns:
        The max absolute difference over all outputs (float).

    Raises:
        ExportError: a shape differs or the difference exceeds ``atol``.
    """
    import onnxruntime as ort

    inputs = _as_tuple(inputs)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    feeds = {i.name: x.asnumpy() for i, x in zip(session.get_inputs(), inputs)}
    ours = outputs_numpy(net(*inputs)) if outputs is None else outputs
    return _compare("ONNX file", onnx_path, ours, session.run(None, feeds), atol)


def check_mindir_parity(net, inputs, mindir_path, atol=1e-5, outputs=None):
    """Reload ``mindir_path`` with ``mindspore.load`` into an ``nn.GraphCell`` and compare it with ``net``
    (or with ``outputs``, ``net``'s outputs on ``inputs`` as numpy arrays, when the caller has them).

    Returns the max absolute difference; raises :class:`ExportError` over ``atol``.
    """
    inputs = _as_tuple(inputs)
    graph = nn.GraphCell(ms.load(mindir_path))
    ours = outputs_numpy(net(*inputs)) if outputs is None else outputs
    return _compare("MINDIR file", mindir_path, ours, outputs_numpy(graph(*inputs)), atol)
