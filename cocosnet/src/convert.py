"""Import the official CoCosNet PyTorch checkpoints (``latest_net_Corr.pth``, ``latest_net_G.pth``,
``latest_net_D.pth`` of microsoft/CoCosNet) into our networks.

Our module trees are the reference's, so a PyTorch key and our parameter share the module path. The
one difference is a spectral-normalised convolution: PyTorch keeps ``X.weight_orig``, ``X.weight_u``,
``X.weight_v`` and ``X.bias`` on the conv itself; our :class:`common.spectral_norm.SpectralNorm` wrapper
holds ``X.weight_u``, ``X.weight_v`` and the wrapped ``X.conv.weight``, ``X.conv.bias``. The u/v vectors
are kept (so fine-tuning continues the power iteration; export folds them).

The discriminator's spectral-normalised layers sit one level deeper in the reference: ``get_nonspade_norm_layer``
returns ``Sequential(conv, InstanceNorm2d)`` and the layer's own ``Sequential`` holds it with the LeakyReLU, so
``discriminator_N.modelK.0.0.weight_orig`` is our ``discriminator_N.modelK.0.conv.weight``.

A ``module.`` prefix (DataParallel) is stripped. The discriminator's registered-but-unused segmentation
decoder (``discriminator_N.dec.*``) is dropped. Anything else must match one to one with equal shapes
(a scalar stored as [1] is accepted), or the import fails naming the file and the key.
"""
import os
import re

import numpy as np

import common  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before mindspore is imported)
import mindspore as ms

from common.checkpoint import save_cell
from common.weights import read_torch_state_dict

__all__ = ["TorchImportError", "reference_to_ours", "import_component", "REFERENCE_FILES"]

REFERENCE_FILES = {"Corr": "latest_net_Corr.pth", "G": "latest_net_G.pth", "D": "latest_net_D.pth"}


class TorchImportError(ValueError):
    """A PyTorch checkpoint does not fit the network it is imported into."""


_NESTED_NORM_LAYER = re.compile(r"^(discriminator_\d+\.model\d+\.0)\.0\.")


def _dropped(key):
    parts = key.split(".")
    return len(parts) > 1 and parts[0].startswith("discriminator_") and parts[1] == "dec"


def reference_to_ours(state, net, source="state dict"):
    """``{reference key: array}`` -> ``{our parameter name: float32 array}`` covering every parameter of ``net``."""
    params = {p.name: p for p in net.get_parameters()}
    wrapped = {name[:-len(".weight_u")] for name in params if name.endswith(".weight_u")}
    out, unknown = {}, []
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if _dropped(key):
            continue
        name = _NESTED_NORM_LAYER.sub(r"\1.", key)
        module, _, leaf = name.rpartition(".")
        if module in wrapped and leaf in ("weight_orig", "bias"):
            name = f"{module}.conv.{'weight' if leaf == 'weight_orig' else 'bias'}"
        if name not in params:
            unknown.append(key)
            continue
        array = np.asarray(value, np.float32)
        shape = tuple(params[name].shape)
        if array.shape != shape:
            if array.size != int(np.prod(shape)) or array.size != 1:
                raise TorchImportError(f"{source}: {key} has shape {array.shape}, our {name} expects {shape}; "
                                       f"the checkpoint was trained with other options (label_nc, ngf, ...)")
            array = array.reshape(shape)
        out[name] = array
    if unknown:
        raise TorchImportError(f"{source}: {len(unknown)} keys have no counterpart, e.g. {unknown[:3]}; is this the "
                               f"CoCosNet (v1, ADE20K options) checkpoint of this network?")
    missing = [n for n in params if n not in out]
    if missing:
        raise TorchImportError(f"{source}: {len(missing)} parameters are missing, e.g. {missing[:3]}; the checkpoint "
                               f"was trained with other options, or is another network's file")
    return out


def import_component(path, net, out_path, meta):
    """Read ``path`` (no torch needed), load it into ``net`` and save ``out_path`` with ``meta``; returns ``net``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch checkpoint {path} does not exist")
    arrays = reference_to_ours(read_torch_state_dict(path), net, path)
    for p in net.get_parameters():
        p.set_data(ms.Tensor(arrays[p.name], p.dtype))
    save_cell(net, out_path, meta)
    return net
