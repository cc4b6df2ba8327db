"""Import reference PyTorch pix2pix generators (junyanz/pytorch-CycleGAN-and-pix2pix ``latest_net_G.pth``).

Our generators have the reference module tree (``model.model.1.model.3 ...`` for U-Nets, ``model.10.conv_block.1``
for ResNets), so a PyTorch key and its MindSpore parameter share the module path and differ only in the
leaf name of normalisation layers:

    BatchNorm2d   weight -> gamma, bias -> beta, running_mean -> moving_mean, running_var -> moving_variance
    Conv / ConvTranspose  weight, bias unchanged (both frameworks store ConvTranspose as [in, out, kh, kw])

``num_batches_tracked`` has no MindSpore counterpart and is dropped; so are running statistics stored for
``InstanceNorm2d`` layers by old reference checkpoints (the reference loader drops them too). Anything else
must match one to one, with equal shapes, or the import fails naming the key.
"""
import os

import numpy as np

import common  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before mindspore is imported)
import mindspore as ms

from common.checkpoint import save_cell
from common.layers import CounterDropout, InstanceNorm2d
from common.weights import read_torch_state_dict
from pix2pix.src.model import define_G

__all__ = ["BN_LEAVES", "TorchImportError", "torch_to_mindspore", "load_torch_generator", "import_torch_generator"]

BN_LEAVES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_DROPPED_LEAVES = ("num_batches_tracked",)


class TorchImportError(ValueError):
    """A PyTorch checkpoint does not fit the generator it is imported into."""


def _split(key):
    module, _, leaf = key.rpartition(".")
    return module, leaf


def torch_to_mindspore(state_dict, net, source="state dict"):
    """Rename a PyTorch generator state dict to ``net``'s parameter names and check it covers ``net``.

    Args:
        state_dict: {PyTorch key: np.ndarray}, e.g. from :func:`common.weights.read_torch_state_dict`.
        net: the MindSpore generator built with the checkpoint's options (netG, ngf, norm, channels).
        source: the file name, for error messages.

    Returns:
        {MindSpore parameter name: np.ndarray} holding every parameter of ``net`` (dropout counters excepted).

    Raises:
        TorchImportError: a key has no counterpart in ``net``, a parameter of ``net`` is not in the file, or
            shapes differ; the message names the key and the options to check.
    """
    cells = dict(net.cells_and_names())
    bn_modules = {_split(k)[0] for k in state_dict if _split(k)[1] == "running_mean"}
    wanted = {p.name: p for p in net.get_parameters()
              if not isinstance(cells.get(_split(p.name)[0]), CounterDropout)}
    hint = "check --netG, --ngf, --norm, --input_nc and --output_nc against the options the model was trained with"

    converted, unknown = {}, []
    for key, value in state_dict.items():
        module, leaf = _split(key)
        if leaf in _DROPPED_LEAVES or (isinstance(cells.get(module), InstanceNorm2d) and leaf in BN_LEAVES):
            continue
        name = f"{module}.{BN_LEAVES[leaf]}" if module in bn_modules and leaf in BN_LEAVES else key
        if name not in wanted:
            unknown.append(key)
            continue
        if tuple(value.shape) != tuple(wanted[name].shape):
            raise TorchImportError(f"{source}: {key} has shape {tuple(value.shape)} but the MindSpore generator's {name} "
                               f"has {tuple(wanted[name].shape)}; {hint}")
        converted[name] = np.asarray(value, np.float32)
    if unknown:
        raise TorchImportError(f"{source}: {len(unknown)} keys have no parameter in the MindSpore generator, e.g. "
                           f"{unknown[:3]}; is it a pix2pix generator (latest_net_G.pth, not _D)? {hint}")
    missing = [n for n in wanted if n not in converted]
    if missing:
        raise TorchImportError(f"{source}: {len(missing)} generator parameters are not in the file, e.g. {missing[:3]}; "
                           f"{hint}")
    return converted


def load_torch_generator(path, net):
    """Read the PyTorch state dict ``path`` (no torch needed) and copy it into ``net``; returns ``net``."""
    converted = torch_to_mindspore(read_torch_state_dict(path), net, source=path)
    for p in net.get_parameters():
        if p.name in converted:
            p.set_data(ms.Tensor(converted[p.name], p.dtype))
    return net


def import_torch_generator(pth_path, out_path, netG="unet_256", ngf=64, norm="batch", input_nc=3, output_nc=3):
    """Convert a reference ``latest_net_G.pth`` into a MindSpore checkpoint at ``out_path``.

    The checkpoint carries ``{"model": "pix2pix", "component": "G", "netG", "ngf", "norm", "input_nc",
    "output_nc"}`` as metadata, so ``eval.py``/``predict.py``/``export.py`` build the architecture it holds (no
    option needs repeating). Returns the generator with the imported weights.
    """
    net = define_G(netG, input_nc, output_nc, ngf, norm)
    load_torch_generator(pth_path, net)
    meta = {"model": "pix2pix", "component": "G", "netG": netG, "ngf": ngf, "norm": norm,
            "input_nc": input_nc, "output_nc": output_nc, "imported_from": os.path.basename(pth_path)}
    save_cell(net, out_path, meta)
    return net
