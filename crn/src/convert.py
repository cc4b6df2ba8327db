"""Import of the authors' TensorFlow CRN checkpoints (``CQFIO/PhotographicImageSynthesis``,
``result_{256p,512p,1024p,GTA}/model.ckpt``) into MindSpore generator checkpoints, without TensorFlow.

TF variables and their parameters here (module ``i`` runs at height ``h = 4 * 2**i``, ``s`` = the size):

    g_{h}_conv{j}/weights            [3, 3, cin, cout]  -> refine.{i}.conv{j}.weight  [cout, cin, 3, 3]
    g_{h}_conv{j}/LayerNorm/gamma    [cout]             -> refine.{i}.norm{j}.gamma
    g_{h}_conv{j}/LayerNorm/beta     [cout]             -> refine.{i}.norm{j}.beta
    g_{s}_conv100/weights            [1, 1, cin, 3k]    -> to_rgb.weight              [3k, cin, 1, 1]
    g_{s}_conv100/biases             [3k]               -> to_rgb.bias

Both frameworks concatenate ``[features, label]`` and lay out the 3k output channels the same way, so the
kernels are only transposed. Adam slots (``.../Adam``, ``.../Adam_1``, ``beta{1,2}_power``) are never read.
The size, label channels, k and the channel scale are read off the variables' shapes; the aspect ratio is
not in the weights (the official models, GTA included, are 1:2).
"""
import re

import numpy as np

import common  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before mindspore is imported)
from mindspore import Tensor

from common.checkpoint import save_cell
from common.tf_checkpoint import TFCheckpoint
from crn.src.model import CascadedRefinementNetwork, module_channels, module_heights

__all__ = ["TFImportError", "generator_variables", "infer_architecture", "tf_names", "tf_shape",
           "check_tf_shapes", "import_tf_generator"]

_GENERATOR = re.compile(r"^g_(\d+)_conv(1|2|100)/(weights|biases|LayerNorm/gamma|LayerNorm/beta)$")
_OPTIMIZER = re.compile(r"(/Adam(_1)?$)|(^beta[12]_power$)")


class TFImportError(ValueError):
    """A TF checkpoint does not hold a CRN generator that fits ours."""


def generator_variables(shapes, source="TF checkpoint"):
    """``{name: shape}`` of the generator variables among ``shapes`` (optimizer slots dropped).

    Raises:
        TFImportError: a variable is neither a generator variable nor an Adam slot (names it), or there is
            no generator variable at all.
    """
    out, unknown = {}, []
    for name, shape in shapes.items():
        if _GENERATOR.match(name):
            out[name] = tuple(shape)
        elif not _OPTIMIZER.search(name):
            unknown.append(name)
    if unknown:
        raise TFImportError(f"{source}: {len(unknown)} variables are neither CRN generator variables "
                            f"(g_<height>_conv<1|2|100>/...) nor Adam slots, e.g. {unknown[:3]}; is this a "
                            f"checkpoint of the authors' CRN (result_256p/model.ckpt ...)?")
    if not out:
        raise TFImportError(f"{source}: no CRN generator variable (g_4_conv1/weights ...) in the checkpoint")
    return out


def _expect(shapes, name, rank, source):
    if name not in shapes:
        raise TFImportError(f"{source}: variable {name} is missing; the checkpoint is not a complete CRN generator")
    if len(shapes[name]) != rank:
        raise TFImportError(f"{source}: variable {name} has shape {shapes[name]}, expected rank {rank}")
    return shapes[name]


def infer_architecture(shapes, source="TF checkpoint", width_mult=1.0):
    """Read size, label channels, k and the channel scale off the generator variables' shapes.

    Args:
        shapes: ``{name: shape}`` of the generator variables (see :func:`generator_variables`).
        source: the checkpoint path, for error messages.
        width_mult: the channel scale tried first; otherwise the one that gives the first module's channels.

    Returns:
        dict(size, label_nc, num_outputs, width_mult).

    Raises:
        TFImportError: heights not 4, 8, ..., size; output channels not a multiple of 3; module channels
            that no width_mult of our channel table gives (names the variable, expected and found shapes).
    """
    heights = sorted(int(m.group(1)) for m in map(_GENERATOR.match, shapes) if m.group(2) == "1"
                     and m.group(3) == "weights")
    if not heights:
        raise TFImportError(f"{source}: no g_<height>_conv1/weights variable")
    size = heights[-1]
    try:
        want_heights = module_heights(size)
    except ValueError as e:
        raise TFImportError(f"{source}: the last module g_{size}_conv1 does not give a CRN size: {e}") from None
    if tuple(heights) != want_heights:
        raise TFImportError(f"{source}: modules at heights {heights}, but a {size}p CRN has modules at "
                            f"{list(want_heights)}")
    label_nc = _expect(shapes, f"g_{want_heights[0]}_conv1/weights", 4, source)[2]
    out_ch = _expect(shapes, f"g_{size}_conv100/weights", 4, source)[3]
    if out_ch % 3:
        raise TFImportError(f"{source}: g_{size}_conv100/weights has {out_ch} output channels, not 3 per image")
    first = _expect(shapes, f"g_{want_heights[0]}_conv1/weights", 4, source)[3]
    candidates = [width_mult, first / module_channels(want_heights[0])]
    fits = [w for w in candidates if all(module_channels(h, w) == _expect(shapes, f"g_{h}_conv1/weights", 4, source)[3]
                                         for h in want_heights)]
    if not fits:
        w = candidates[-1]
        for h in want_heights:
            found = shapes[f"g_{h}_conv1/weights"]
            if found[3] != module_channels(h, w):
                raise TFImportError(f"{source}: variable g_{h}_conv1/weights has shape {found}, but with the "
                                    f"first module's {first} channels (width_mult={w:g}) our CRN expects "
                                    f"{module_channels(h, w)} output channels at height {h}")
    return {"size": size, "label_nc": label_nc, "num_outputs": out_ch // 3, "width_mult": fits[0]}


def tf_names(size):
    """``{our parameter name: TF variable name}`` of a ``size`` CRN generator."""
    out = {}
    heights = module_heights(size)
    for i, h in enumerate(heights):
        for j in (1, 2):
            out[f"refine.{i}.conv{j}.weight"] = f"g_{h}_conv{j}/weights"
            out[f"refine.{i}.norm{j}.gamma"] = f"g_{h}_conv{j}/LayerNorm/gamma"
            out[f"refine.{i}.norm{j}.beta"] = f"g_{h}_conv{j}/LayerNorm/beta"
    out["to_rgb.weight"] = f"g_{heights[-1]}_conv100/weights"
    out["to_rgb.bias"] = f"g_{heights[-1]}_conv100/biases"
    return out


def tf_shape(shape):
    """The TF shape of a parameter of ``shape`` (kernels [cout, cin, kh, kw] are stored [kh, kw, cin, cout])."""
    shape = tuple(shape)
    return (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else shape


def check_tf_shapes(shapes, net, source="TF checkpoint"):
    """Check that the generator variables ``shapes`` and ``net``'s parameters map one to one, shapes equal.

    Returns ``{our parameter name: TF variable name}``.

    Raises:
        TFImportError: a variable of either side has no counterpart, or a shape differs (names the
            variable, the expected and the found shape).
    """
    names = tf_names(net.size)
    params = dict(net.parameters_and_names())
    extra = sorted(set(shapes) - set(names.values()))
    if extra:
        raise TFImportError(f"{source}: generator variables {extra[:3]} have no parameter in the {net.size}p CRN")
    for ours, theirs in names.items():
        if ours not in params:
            raise TFImportError(f"{source}: {theirs} maps to {ours}, which the {net.size}p CRN does not have")
        want = tf_shape(params[ours].shape)
        if theirs not in shapes:
            raise TFImportError(f"{source}: variable {theirs} (expected shape {want}, for {ours}) is missing")
        if tuple(shapes[theirs]) != want:
            raise TFImportError(f"{source}: variable {theirs} has shape {tuple(shapes[theirs])}, expected {want} "
                                f"(for {ours} of the {net.size}p CRN with {net.label_nc} label channels, "
                                f"k={net.num_outputs}, width_mult={net.width_mult:g})")
    return names


def import_tf_generator(tf_path, out_path, aspect=2, width_mult=1.0, log=print):
    """Convert the TF CRN checkpoint ``tf_path`` (``DIR/model.ckpt``) into a G checkpoint at ``out_path``.

    The architecture comes from the variables (:func:`infer_architecture`); ``aspect`` (not in the weights)
    and ``width_mult`` (tried first) come from the caller. The file carries
    the CRN spec's architecture keys (``crn.src.spec.CRNSpec.arch_keys``) plus ``component: G`` and ``source: tf_path``.

    Returns:
        (the generator with the imported weights, the metadata written).

    Raises:
        TFImportError / common.tf_checkpoint.TFCheckpointError: see :func:`check_tf_shapes`,
            :func:`infer_architecture` and :class:`common.tf_checkpoint.TFCheckpoint` (missing, truncated or
            corrupt files, bad checksums).
    """
    bundle = TFCheckpoint(tf_path)
    source = bundle.index_path
    shapes = generator_variables(bundle.shapes(), source)
    arch = infer_architecture(shapes, source, width_mult)
    net = CascadedRefinementNetwork(arch["size"], arch["label_nc"], arch["num_outputs"], arch["width_mult"], aspect)
    names = check_tf_shapes(shapes, net, source)
    params = dict(net.parameters_and_names())
    for ours, theirs in names.items():
        value = bundle.read(theirs)
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        params[ours].set_data(Tensor(np.ascontiguousarray(value, np.float32)))
    meta = {"model": "crn", "size": arch["size"], "aspect": aspect, "num_classes": arch["label_nc"] - 1,
            "num_outputs": arch["num_outputs"], "width_mult": arch["width_mult"], "component": "G", "source": tf_path}
    save_cell(net, out_path, meta)
    log(f"imported {source} -> {out_path}: {arch['size']}p CRN, {arch['label_nc'] - 1} classes + void, "
        f"k={arch['num_outputs']}, width_mult={arch['width_mult']:g}, aspect={aspect}, {len(names)} variables")
    return net, meta
