"""Import of reference PyTorch pix2pix generators (``latest_net_G.pth``) into MindSpore checkpoints.

With torch installed, the test builds the reference U-Net in PyTorch (``bench/inference.py``'s restatement),
saves it with ``torch.save`` and compares both frameworks' eval-mode outputs. Without torch, the ``.pth`` is
written by a minimal zip+pickle writer below, so the importer (which never needs torch) is exercised either way.
"""
import io
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import common  # noqa: F401
import mindspore as ms

from common.checkpoint import load_cell, read_meta
from pix2pix.src.convert import BN_LEAVES, TorchImportError, import_torch_generator, load_torch_generator
from pix2pix.src.model import define_G

from inference import torch_unet  # bench/inference.py: the reference U-Net restated in PyTorch

NGF, SIZE = 8, 128  # unet_128 at ngf=8: the reference tree at a fraction of the cost


# ------------------------------------------------------------------ a .pth writer that needs no torch

class _Global:
    """``module.name`` written as a pickle GLOBAL without importing ``module`` (torch need not exist)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise TypeError("a pickle reference only")


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, np.array(array, order="C")


class _Tensor:
    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):
        a = self.storage.array
        stride = tuple(int(s) // a.itemsize for s in a.strides)
        return _Global("torch._utils", "_rebuild_tensor_v2"), (self.storage, 0, a.shape, stride, False, OrderedDict())


class _PthPickler(pickle._Pickler):
    """Pickles like ``torch.save``: tensors reduce to ``_rebuild_tensor_v2``, storages are persistent ids."""
    dispatch = pickle._Pickler.dispatch.copy()
    dispatch[_Global] = lambda self, obj: self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            kind = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}[obj.array.dtype]
            return "storage", _Global("torch", kind), obj.key, "cpu", obj.array.size
        return None


def write_pth(path, state_dict):
    """Write ``{key: np.ndarray}`` in torch's zip format: ``archive/data.pkl`` + one ``archive/data/<k>`` each."""
    storages = [_Storage(str(i), v) for i, v in enumerate(state_dict.values())]
    buf = io.BytesIO()
    _PthPickler(buf, protocol=2).dump(OrderedDict(zip(state_dict, map(_Tensor, storages))))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
        for s in storages:
            zf.writestr(f"archive/data/{s.key}", s.array.tobytes())


# ------------------------------------------------------------------------------------------ helpers

def torch_style_state_dict(net, prefix=""):
    """``net``'s parameters under the reference PyTorch names (inverse of the importer's renaming)."""
    to_torch = {v: k for k, v in BN_LEAVES.items()}
    out = OrderedDict()
    for p in net.get_parameters():
        if p.name.endswith(".counter"):
            continue
        module, _, leaf = p.name.rpartition(".")
        out[f"{prefix}{module}.{to_torch.get(leaf, leaf)}"] = p.asnumpy()
        if leaf == "moving_variance":
            out[f"{prefix}{module}.num_batches_tracked"] = np.array(7, np.int64)
    return out


def randomize(net, seed=0):
    """Random weights and non-trivial BN running statistics, so that a wrong mapping cannot pass."""
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():
        if p.name.endswith(".counter"):
            continue
        lo = 0.5 if p.name.endswith("moving_variance") else -0.5
        p.set_data(ms.Tensor(rng.uniform(lo, 1.0, p.shape).astype(np.float32)))
    return net


def test_pth_written_without_torch_imports_exactly(tmp_path):
    ref = randomize(define_G("unet_128", ngf=NGF))
    pth = tmp_path / "latest_net_G.pth"
    write_pth(pth, torch_style_state_dict(ref, prefix="module."))
    out = tmp_path / "G.ckpt"
    import_torch_generator(str(pth), str(out), netG="unet_128", ngf=NGF)
    net = define_G("unet_128", ngf=NGF)
    meta = load_cell(net, str(out), {"model": "pix2pix", "netG": "unet_128", "ngf": NGF})
    assert meta["imported_from"] == "latest_net_G.pth" and read_meta(str(out))["component"] == "G"
    ref_params = {p.name: p.asnumpy() for p in ref.get_parameters()}
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), ref_params[p.name], err_msg=p.name)


def test_old_instance_norm_running_stats_are_dropped(tmp_path):
    ref = randomize(define_G("unet_128", ngf=NGF, norm="instance"))
    sd = torch_style_state_dict(ref)
    sd["model.model.1.model.2.running_mean"] = np.zeros(2 * NGF, np.float32)  # an InstanceNorm2d position
    sd["model.model.1.model.2.running_var"] = np.ones(2 * NGF, np.float32)
    write_pth(tmp_path / "G.pth", sd)
    net = load_torch_generator(str(tmp_path / "G.pth"), define_G("unet_128", ngf=NGF, norm="instance"))
    w = "model.model.1.model.1.weight"
    np.testing.assert_array_equal(net.parameters_dict()[w].asnumpy(), ref.parameters_dict()[w].asnumpy())


@pytest.mark.parametrize("case, pattern", [
    ("wider", r"model\.model\.0\.weight has shape \(16, 3, 4, 4\).*--ngf"),
    ("discriminator", r"keys have no parameter in the MindSpore generator.*not _D"),
    ("truncated", r"generator parameters are not in the file, e.g. \['model\.model\.3\.bias'\]"),
])
def test_wrong_checkpoint_is_refused_naming_the_key(tmp_path, case, pattern):
    if case == "wider":
        sd = torch_style_state_dict(define_G("unet_128", ngf=2 * NGF))
    elif case == "discriminator":
        sd = torch_style_state_dict(define_G("unet_128", ngf=NGF))
        sd["model.0.weight"] = np.zeros((NGF, 6, 4, 4), np.float32)
    else:
        sd = torch_style_state_dict(define_G("unet_128", ngf=NGF))
        del sd["model.model.3.bias"]
    write_pth(tmp_path / "G.pth", sd)
    with pytest.raises(TorchImportError, match=pattern):
        import_torch_generator(str(tmp_path / "G.pth"), str(tmp_path / "G.ckpt"), netG="unet_128", ngf=NGF)
    assert not (tmp_path / "G.ckpt").exists()


def test_not_a_pth_file_is_refused(tmp_path):
    bad = tmp_path / "latest_net_G.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="latest_net_G.pth"):
        import_torch_generator(str(bad), str(tmp_path / "G.ckpt"), netG="unet_128", ngf=NGF)


# ---------------------------------------------------------------- against the PyTorch reference itself

def test_torch_reference_checkpoint_gives_the_same_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch_unet(NGF, downs=7)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    pth = tmp_path / "latest_net_G.pth"
    torch.save(torch.nn.DataParallel(ref).state_dict(), pth)  # keys carry the "module." prefix
    net = import_torch_generator(str(pth), str(tmp_path / "G.ckpt"), netG="unet_128", ngf=NGF)

    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        want = ref.eval()(torch.from_numpy(x)).numpy()
    net.set_train(False)
    got = net(ms.Tensor(x)).asnumpy()
    assert np.abs(got - want).max() <= 1e-4
