"""Inference backends: one exported graph run by MindSpore, onnxruntime or OpenVINO behind one signature.

Every runner is a callable ``runner(feeds) -> list of outputs``: ``feeds`` maps the exported graph's input
names (``ExportGraph.input_names``, e.g. ``{"input": [1, 3, 256, 256] float32}``) to numpy arrays, and
the outputs are numpy arrays in ``ExportGraph.output_names`` order. A model's predict and eval code calls
only this signature (``ModelSpec.runners``), so ``--backend`` swaps the runtime without touching it::

    run = load_backend("openvino", "outputs/pix2pix/export/pix2pix_G_batch_stats.onnx", precision="bf16")
    fake = run({"input": x})[0]

* ``mindspore``: :class:`CellRunner`, the MindSpore network itself (the default; every convolution on the
  process's ``cpu_conv`` path).
* ``onnxruntime``: the ONNX file in ``onnxruntime.InferenceSession`` on the CPU execution provider, its large 3x3
  convolutions rewritten as Winograd F(6x6, 3x3) or F(4x4, 3x3) in memory (:mod:`common.onnx_winograd`;
  ``winograd=False``: as written).
* ``openvino``: the ONNX file compiled by OpenVINO for its CPU plugin, float32 by default; ``precision="bf16"``
  sets the bf16 inference-precision hint (CPUs with AVX512_BF16 or AMX; README, Performance, gives its error).

onnxruntime and OpenVINO are optional packages: a missing one is reported with the pip command.

OpenVINO's CPU plugin carries its own oneDNN, which latches ``ONEDNN_MAX_CPU_ISA`` when it compiles its first
model, as MindSpore's does at its first kernel. The AVX2 cap that ``import common`` sets for MindSpore would
make OpenVINO slower and refuse bf16 ("object is not initialized"), so the variable (set by ``import common`` or
by you, for MindSpore) is lifted while OpenVINO compiles and restored after; MindSpore's convolutions keep their cap whichever
runs first (measured: native 3x3 conv 64->64 at 128x128 stays 0.06-0.09 s, 6.5 s at AVX-512).
"""
import contextlib
import os

import numpy as np

__all__ = ["BACKENDS", "PRECISIONS", "PIP_PACKAGES", "BackendError", "CellRunner", "GraphRunner", "load_backend"]

BACKENDS = ("mindspore", "onnxruntime", "openvino")
PRECISIONS = ("f32", "bf16")
PIP_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


class BackendError(RuntimeError):
    """A backend cannot run: package missing, precision unsupported, or a graph that does not fit."""


class CellRunner:
    """A MindSpore network in the runner signature: ``CellRunner(net, ("label",))({"label": x}) -> [y, ...]``.

    ``net`` takes the inputs named by ``input_names`` in that order and returns one Tensor or a tuple.
    """
    kind = "mindspore"

    def __init__(self, net, input_names):
        self.net = net
        self.input_names = tuple(input_names)

    def __call__(self, feeds):
        from mindspore import Tensor
        outputs = self.net(*(Tensor(np.ascontiguousarray(feeds[name], np.float32)) for name in self.input_names))
        return [o.asnumpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]


class GraphRunner:
    """An ONNX file run by onnxruntime or OpenVINO (:func:`load_backend` builds it).

    Attributes:
        kind: ``onnxruntime`` or ``openvino``.
        path: the ONNX file.
        precision: ``f32`` or ``bf16`` (OpenVINO's inference-precision hint).
        note: what the runtime was given beyond the file (onnxruntime's Winograd rewrite), for :meth:`describe`.
        inputs: ``{name: shape}`` of the graph's inputs (static shapes, as ``export.py`` writes them).
        output_names: the graph's outputs, in order, each as the set of its tensor names (OpenVINO keeps the
            producing node's name beside the ONNX output name).
    """

    def __init__(self, kind, path, precision, inputs, output_names, run, note=""):
        self.kind, self.path, self.precision, self.note = kind, path, precision, note
        self.inputs, self.output_names = inputs, [set(names) for names in output_names]
        self.input_names = tuple(inputs)
        self._run = run

    def __call__(self, feeds):
        missing = [name for name in self.input_names if name not in feeds]
        if missing:
            raise BackendError(f"{self.path}: no value for graph input(s) {missing}; got {sorted(feeds)}")
        return self._run({name: np.ascontiguousarray(feeds[name], np.float32) for name in self.input_names})

    def describe(self):
        return f"{self.kind} ({self.precision}) on {self.path}{self.note}"

    def check(self, inputs, output_names, what):
        """Raise :class:`BackendError` unless the graph has these ``inputs`` ({name: shape}) and outputs.

        ``what`` names what the graph should be (e.g. ``the pix2pix G of checkpoint X``), for the message.
        """
        want_in = {name: list(shape) for name, shape in inputs.items()}
        have_in = {name: list(shape) for name, shape in self.inputs.items()}
        if want_in != have_in or len(output_names) != len(self.output_names) or \
                any(want not in have for want, have in zip(output_names, self.output_names)):
            have_out = ["|".join(sorted(names)) for names in self.output_names]
            raise BackendError(f"ONNX file {self.path} has inputs {have_in} and outputs {have_out}, but "
                               f"{what} takes inputs {want_in} and gives outputs {list(output_names)}: the file was "
                               f"exported from another model or at another size; pass the file export.py writes for "
                               f"this checkpoint, or leave --onnx empty to export it")


def _import(kind):
    try:
        if kind == "onnxruntime":
            import onnxruntime
            return onnxruntime
        import openvino
        return openvino
    except ImportError:
        raise BackendError(f"--backend={kind} needs the Python package '{PIP_PACKAGES[kind]}', which is not installed: "
                           f"pip install {PIP_PACKAGES[kind]} (or use --backend=mindspore)") from None


@contextlib.contextmanager
def _onednn_uncapped():
    """No ``ONEDNN_MAX_CPU_ISA`` inside (MindSpore's cap), restored after."""
    saved = os.environ.pop("ONEDNN_MAX_CPU_ISA", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["ONEDNN_MAX_CPU_ISA"] = saved


def _static_shape(dims, path, name):
    if any(not isinstance(d, int) or d <= 0 for d in dims):
        raise BackendError(f"ONNX file {path}: input {name} has dynamic shape {dims}; export.py writes static shapes, "
                           f"export the checkpoint again")
    return list(dims)


def _load_onnxruntime(ort, path, precision, winograd):
    if precision != "f32":
        raise BackendError(f"--precision={precision}: onnxruntime runs f32 here; use --backend=openvino for bf16")
    source, options, handed_over, note = path, ort.SessionOptions(), [], ""
    if winograd:
        import onnx
        from common.onnx_winograd import winograd_convolutions
        try:
            model = onnx.load(path)
        except Exception as e:  # protobuf's DecodeError and onnx's own errors for a bad file
            raise BackendError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
        rewritten, candidates, tiles = winograd_convolutions(model)
        if rewritten:
            handed_over = _hand_over_initializers(ort, model, options)
            source = model.SerializeToString()
            # planned as one block per run, the tile transforms' large short-lived tensors took 2x the memory
            # (CRN 256p: 9.8 against 6.4 GB peak, same speed)
            options.enable_mem_pattern = False
            note = f"; {rewritten} of {candidates} 3x3 convolutions as Winograd " + ", ".join(
                f"F({m}x{m}, 3x3) ({tiles[m]})" for m in sorted(tiles))
        del model
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a bad file
        raise BackendError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
    del handed_over  # copied into the session
    inputs = {i.name: _static_shape(i.shape, path, i.name) for i in session.get_inputs()}
    return inputs, [{o.name} for o in session.get_outputs()], lambda feeds: session.run(None, feeds), note


def _hand_over_initializers(ort, model, options, min_bytes=1 << 20):
    """Move ``model``'s initializers of ``min_bytes`` or more out of the protobuf into ``options`` (onnxruntime's
    external initializers, which it copies when the session is created). The serialized model then holds no large
    weights: no third copy of them while the session loads, and no 2 GB protobuf limit (the Winograd kernels take 4x
    or 7.1x the weights' size). Returns the OrtValues, which must stay alive until the session is created."""
    from onnx import TensorProto, numpy_helper
    names, values = [], []
    for tensor in model.graph.initializer:
        if tensor.ByteSize() < min_bytes or tensor.data_location == TensorProto.EXTERNAL:
            continue
        array = np.ascontiguousarray(numpy_helper.to_array(tensor))
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
            tensor.ClearField(field)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", tensor.name), ("offset", "0"), ("length", str(array.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        names.append(tensor.name)
        values.append(ort.OrtValue.ortvalue_from_numpy(array))
    if names:
        options.add_external_initializers(names, values)
    return values


def _load_openvino(ov, path, precision):
    with _onednn_uncapped():  # the plugin's first call (even a property query) latches the ISA
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise BackendError("--precision=bf16: this CPU has no bf16 instructions (AVX512_BF16 or AMX) for "
                               "OpenVINO; use --precision=f32")
        try:
            model = core.read_model(path)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with multi-line messages
            raise BackendError(f"OpenVINO cannot read {path}: {str(e).strip().splitlines()[0]}") from None
        # explicit f32: on AMX CPUs the plugin's default is bf16
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
    inputs = {}
    for port in compiled.inputs:
        shape = port.get_partial_shape()
        dims = [d.get_length() if d.is_static else -1 for d in shape]
        inputs[port.get_any_name()] = _static_shape(dims, path, port.get_any_name())
    outputs = list(compiled.outputs)
    request = compiled.create_infer_request()

    def run(feeds):
        result = request.infer(feeds)
        return [np.array(result[port]) for port in outputs]

    return inputs, [port.get_names() for port in outputs], run, ""


def load_backend(kind, onnx_path, *, precision="f32", winograd=True):
    """A :class:`GraphRunner` of the ONNX file ``onnx_path`` on ``kind`` (``onnxruntime`` or ``openvino``).

    Args:
        kind: the backend; ``mindspore`` runs networks, not files (use :class:`CellRunner`).
        onnx_path: an ONNX file with static input shapes (what ``export.py`` writes).
        precision: ``f32``, or ``bf16`` (OpenVINO only: its CPU plugin's inference-precision hint).
            Both runtimes use every core.
        winograd: onnxruntime only: run the graph's large 3x3 convolutions as Winograd F(6x6 or 4x4, 3x3)
            (:mod:`common.onnx_winograd`, applied in memory; the file is not changed). False: the file as it is.

    Raises:
        BackendError: the package is not installed (the message names the pip package), the precision is not
            supported here, or the file cannot be loaded. FileNotFoundError: no such file.
    """
    if kind not in PIP_PACKAGES:
        raise BackendError(f"backend {kind!r} runs no ONNX file; choose one of {sorted(PIP_PACKAGES)}")
    if precision not in PRECISIONS:
        raise BackendError(f"--precision={precision}: choose one of {PRECISIONS}")
    module = _import(kind)
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f"ONNX file {onnx_path} does not exist; write it with the model's export.py")
    if kind == "onnxruntime":
        inputs, output_names, run, note = _load_onnxruntime(module, onnx_path, precision, winograd)
    else:
        inputs, output_names, run, note = _load_openvino(module, onnx_path, precision)
    return GraphRunner(kind, onnx_path, precision, inputs, output_names, run, note)
