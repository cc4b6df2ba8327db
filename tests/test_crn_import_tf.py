"""Import of the authors' TensorFlow CRN checkpoints (common/tf_checkpoint.py, crn/src/convert.py, crn/import_tf.py).

Real ``.index`` files of the four released models (``<repo>/../shared/reference/crn_tf_index``, skipped when
absent) must map onto our 256p/512p/1024p networks. Small bundles are written by the writer below, which
encodes the SSTable, the protobuf records and the crc32c by hand (no code shared with the reader), and are
imported end to end; the imported generator is compared with a NumPy forward of the TF graph (NHWC,
float64) on the same weights.
"""
import os
import re
import struct

import numpy as np
import pytest

import common  # noqa: F401
from mindspore import Tensor

from common.checkpoint import load_cell, read_meta
from common.layers import count_params
from common.tf_checkpoint import TFCheckpoint, TFCheckpointError, crc32c
from crn import import_tf
from crn.src.convert import TFImportError, check_tf_shapes, generator_variables, infer_architecture
from crn.src.model import CascadedRefinementNetwork

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_INDEX = os.path.join(REPO, "..", "shared", "reference", "crn_tf_index")

SIZE, LABEL_NC, K, WIDTH = 32, 6, 2, 1 / 64  # tiny: modules 4, 8, 16, 32 with 16 channels each
HEIGHTS, CHANNELS = (4, 8, 16, 32), 16


# ------------------------------------------------------------------ a TF bundle writer written from the spec

def _crc_ref(data):
    """CRC-32C, bit by bit (reflected polynomial 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb(number, value, wire=0):
    """One protobuf field: wire 0 varint (omitted when 0, as proto3 does), 2 length-delimited, 5 fixed32."""
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(value) if value else b""
    if wire == 2:
        return key + _varint(len(value)) + value
    return key + struct.pack("<I", value)


def _block(entries, restart_interval):
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(prev)) and key[shared] == prev[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        prev = key
    for r in restarts or [0]:
        out += struct.pack("<I", r)
    return bytes(out + struct.pack("<I", len(restarts or [0])))


def _table(entries, block_bytes=300, compression=0):
    """A LevelDB table: data blocks of about ``block_bytes``, empty metaindex, index, footer."""
    out, index, pending = bytearray(), [], []

    def put(contents, kind=0):
        handle = _varint(len(out)) + _varint(len(contents))
        out.extend(contents + bytes([kind]) + struct.pack("<I", _masked(_crc_ref(contents + bytes([kind])))))
        return handle

    for key, value in entries:
        pending.append((key, value))
        if sum(len(k) + len(v) for k, v in pending) >= block_bytes:
            index.append((pending[-1][0], put(_block(pending, 16), compression)))
            pending = []
    if pending:
        index.append((pending[-1][0], put(_block(pending, 16), compression)))
    meta = put(_block([], 16))
    footer = meta + put(_block(index, 1))
    return bytes(out + footer + bytes(40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57))


def write_bundle(prefix, tensors, compression=0):
    """Write ``{name: float32 array}`` as ``prefix.index`` + ``prefix.data-00000-of-00001``."""
    data, entries = bytearray(), [(b"", _pb(1, 1) + _pb(3, _pb(1, 1), 2))]  # num_shards 1, version.producer 1
    for name in sorted(tensors):
        raw = np.ascontiguousarray(tensors[name], "<f4").tobytes()
        shape = b"".join(_pb(2, _pb(1, d), 2) for d in tensors[name].shape)
        entries.append((name.encode(), _pb(1, 1) + _pb(2, shape, 2) + _pb(4, len(data)) + _pb(5, len(raw))
                        + _pb(6, _masked(_crc_ref(raw)), 5)))
        data += raw
    with open(prefix + ".index", "wb") as f:
        f.write(_table(entries, compression=compression))
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(bytes(data))


def tiny_tf_generator(seed=0, label_nc=LABEL_NC, k=K):
    """Random TF-layout variables of a tiny CRN, with Adam slots (which the import must skip)."""
    rng = np.random.RandomState(seed)
    out, prev = {}, 0
    for h in HEIGHTS:
        for j, cin in ((1, prev + label_nc), (2, CHANNELS)):
            out[f"g_{h}_conv{j}/weights"] = rng.uniform(-1, 1, (3, 3, cin, CHANNELS)) * np.sqrt(6 / (10 * cin))
            out[f"g_{h}_conv{j}/LayerNorm/gamma"] = rng.uniform(0.5, 1.5, CHANNELS)
            out[f"g_{h}_conv{j}/LayerNorm/beta"] = rng.uniform(-0.3, 0.3, CHANNELS)
        prev = CHANNELS
    out[f"g_{SIZE}_conv100/weights"] = rng.uniform(-0.3, 0.3, (1, 1, CHANNELS, 3 * k))
    out[f"g_{SIZE}_conv100/biases"] = rng.uniform(-0.2, 0.2, 3 * k)
    out = {n: v.astype(np.float32) for n, v in out.items()}
    for name in list(out):
        out[name + "/Adam"] = rng.rand(*out[name].shape).astype(np.float32)
        out[name + "/Adam_1"] = rng.rand(*out[name].shape).astype(np.float32)
    out["beta1_power"], out["beta2_power"] = np.float32(0.9 ** 5) * np.ones(()), np.float32(0.999 ** 5) * np.ones(())
    return {n: np.asarray(v, np.float32) for n, v in out.items()}


# ------------------------------------------------------------------ NumPy forward of the TF graph (NHWC)

def np_conv_same(x, w):
    """x [H, W, Cin], w [kh, kw, Cin, Cout] (TF conv2d, SAME, stride 1) -> [H, W, Cout]."""
    kh, kw = w.shape[:2]
    xp = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    h, wd = x.shape[:2]
    return sum(xp[dy:dy + h, dx:dx + wd] @ w[dy, dx] for dy in range(kh) for dx in range(kw))


def np_ln_lrelu(x, gamma, beta):
    """slim.layer_norm over (H, W, C) (biased variance, eps 1e-12) then max(0.2x, x)."""
    z = (x - x.mean()) / np.sqrt(x.var() + 1e-12) * gamma + beta
    return np.maximum(z, 0.2 * z)


def np_resize_bilinear_align(x, h, w):
    """tf.image.resize_bilinear(align_corners=True): [h0, w0, C] -> [h, w, C]."""
    def taps(n_in, n_out):
        pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo
    lo, hi, f = taps(x.shape[0], h)
    x = x[lo] * (1 - f)[:, None, None] + x[hi] * f[:, None, None]
    lo, hi, f = taps(x.shape[1], w)
    return x[:, lo] * (1 - f)[None, :, None] + x[:, hi] * f[None, :, None]


def np_module(tf, h, features, label):
    x = label if features is None else np.concatenate(
        [np_resize_bilinear_align(features, label.shape[0], label.shape[1]), label], -1)
    for j in (1, 2):
        x = np_ln_lrelu(np_conv_same(x, tf[f"g_{h}_conv{j}/weights"].astype(np.float64)),
                        tf[f"g_{h}_conv{j}/LayerNorm/gamma"], tf[f"g_{h}_conv{j}/LayerNorm/beta"])
    return x


def np_area(label, h):
    """tf.image.resize_area to height h (exact factor): block means. [H, W, C] -> [h, 2h, C]."""
    f = label.shape[0] // h
    return label.reshape(h, f, label.shape[1] // f, f, -1).mean((1, 3))


def np_crn(tf, label, k):
    """label [H, W, P] -> [k, H, W, 3]: image i, colour c is output channel c*k + i."""
    features = None
    for h in HEIGHTS:
        features = np_module(tf, h, features, np_area(label, h))
    out = (features @ tf[f"g_{SIZE}_conv100/weights"][0, 0] + tf[f"g_{SIZE}_conv100/biases"] + 1) * 127.5
    return np.stack([out[..., [c * k + i for c in range(3)]] for i in range(k)])


def random_label(seed=1):
    ids = np.kron(np.random.RandomState(seed).randint(0, LABEL_NC, (SIZE // 4, SIZE // 2)), np.ones((4, 4), int))
    return np.eye(LABEL_NC)[ids]  # [H, W, P]


# ------------------------------------------------------------------ tests

def test_crc32c_known_vectors_and_long_inputs():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    rng = np.random.RandomState(0)
    for n in (4095, 4096, 5001, 70_001):  # the short path and the row-parallel path with a head
        data = rng.randint(0, 256, n).astype(np.uint8)
        assert crc32c(data) == crc32c(data.tobytes()) == _crc_ref(data.tobytes()), n


def test_reader_lists_and_reads_tensors_from_a_written_bundle(tmp_path):
    tensors = tiny_tf_generator()
    write_bundle(str(tmp_path / "model.ckpt"), tensors)
    bundle = TFCheckpoint(str(tmp_path / "model.ckpt.index"))  # the .index path works as well as the prefix
    assert bundle.variables() == sorted((n, "float32", v.shape) for n, v in tensors.items())
    for name in ("g_4_conv1/weights", "g_32_conv100/biases", "beta2_power", "g_16_conv2/LayerNorm/gamma/Adam_1"):
        np.testing.assert_array_equal(bundle.read(name), tensors[name])
    assert TFCheckpoint(str(tmp_path)).prefix == str(tmp_path / "model.ckpt")  # a folder with one bundle
    with pytest.raises(TFCheckpointError, match="no tensor named 'g_4_conv3/weights'"):
        bundle.read("g_4_conv3/weights")


def test_import_end_to_end_matches_numpy_forward_of_the_tf_graph(tmp_path):
    tf = tiny_tf_generator()
    write_bundle(str(tmp_path / "model.ckpt"), tf)
    out = str(tmp_path / "G.ckpt")
    assert import_tf.main([f"--tf_ckpt={tmp_path / 'model.ckpt'}", f"--ckpt={out}"]) == out
    meta = read_meta(out)
    assert meta == {"model": "crn", "size": SIZE, "aspect": 2, "num_classes": LABEL_NC - 1, "num_outputs": K,
                    "width_mult": WIDTH, "component": "G", "source": str(tmp_path / "model.ckpt")}

    net = CascadedRefinementNetwork(SIZE, LABEL_NC, K, WIDTH)
    load_cell(net, out, {k: v for k, v in meta.items() if k not in ("component", "source")})
    net.set_train(False)
    w = net.refine[1].conv1.weight.asnumpy()  # [cout, cin, kh, kw] <- [kh, kw, cin, cout], element by element
    assert w[3, 20, 0, 2] == tf["g_8_conv1/weights"][0, 2, 20, 3] and w[0, 1, 2, 1] == tf["g_8_conv1/weights"][2, 1, 1, 0]

    label = random_label()
    label4 = np_area(label, 4)
    ours4 = net.refine[0](None, Tensor(label4.transpose(2, 0, 1)[None].astype(np.float32))).asnumpy()[0]
    np.testing.assert_allclose(ours4, np_module(tf, 4, None, label4).transpose(2, 0, 1), rtol=1e-4, atol=1e-4)

    ours = net(Tensor(label.transpose(2, 0, 1)[None].astype(np.float32))).asnumpy()[0]  # [k, 3, H, W]
    want = np_crn(tf, label, K).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(ours, want, rtol=1e-4, atol=2e-3)


def test_corrupted_data_names_the_file_and_the_tensor(tmp_path):
    prefix = str(tmp_path / "model.ckpt")
    tf = tiny_tf_generator()
    write_bundle(prefix, tf)
    entry = TFCheckpoint(prefix).entry("g_8_conv2/weights")
    data_path = prefix + ".data-00000-of-00001"
    with open(data_path, "r+b") as f:
        f.seek(entry.offset + entry.size // 2)
        byte = f.read(1)
        f.seek(entry.offset + entry.size // 2)
        f.write(bytes([byte[0] ^ 0x10]))
    np.testing.assert_array_equal(TFCheckpoint(prefix).read("g_8_conv1/weights"), tf["g_8_conv1/weights"])
    with pytest.raises(TFCheckpointError, match=rf"{re.escape(data_path)}: checksum mismatch for 'g_8_conv2/weights'"):
        import_tf.main([f"--tf_ckpt={prefix}", f"--ckpt={tmp_path / 'G.ckpt'}"])
    assert not os.path.exists(tmp_path / "G.ckpt")
    with open(data_path, "r+b") as f:
        f.truncate(entry.offset + 10)
    with pytest.raises(TFCheckpointError, match=f"{re.escape(data_path)}: .*the data file is truncated"):
        TFCheckpoint(prefix).read("g_8_conv2/weights")


@pytest.mark.parametrize("keep", [20, -7])  # shorter than the footer; footer cut (no magic number)
def test_truncated_index_names_the_file(tmp_path, keep):
    prefix = str(tmp_path / "model.ckpt")
    write_bundle(prefix, tiny_tf_generator())
    with open(prefix + ".index", "rb") as f:
        raw = f.read()
    with open(prefix + ".index", "wb") as f:
        f.write(raw[:keep])
    with pytest.raises(TFCheckpointError, match=rf"{re.escape(prefix)}\.index: .*(truncated|corrupt)"):
        TFCheckpoint(prefix)


def test_corrupt_or_compressed_index_blocks_are_reported(tmp_path):
    prefix = str(tmp_path / "model.ckpt")
    write_bundle(prefix, tiny_tf_generator())
    with open(prefix + ".index", "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(TFCheckpointError, match=rf"{re.escape(prefix)}\.index: checksum mismatch in the data block 0"):
        TFCheckpoint(prefix)
    write_bundle(prefix, tiny_tf_generator(), compression=1)
    with pytest.raises(TFCheckpointError, match=rf"{re.escape(prefix)}\.index: .*snappy-compressed"):
        TFCheckpoint(prefix)
    with pytest.raises(TFCheckpointError, match="does not exist"):
        TFCheckpoint(str(tmp_path / "other.ckpt"))


def test_shape_mismatch_names_the_variable_and_both_shapes(tmp_path):
    tf = tiny_tf_generator()
    tf["g_16_conv2/weights"] = tf["g_16_conv2/weights"][:, :, :12]
    write_bundle(str(tmp_path / "model.ckpt"), tf)
    with pytest.raises(TFImportError, match=r"g_16_conv2/weights has shape \(3, 3, 12, 16\), expected \(3, 3, 16, 16\)"):
        import_tf.main([f"--tf_ckpt={tmp_path / 'model.ckpt'}", f"--ckpt={tmp_path / 'G.ckpt'}"])
    tf = tiny_tf_generator()
    tf["g_8_conv1/weights"] = np.zeros((3, 3, CHANNELS + LABEL_NC, 9), np.float32)
    with pytest.raises(TFImportError, match=r"g_8_conv1/weights has shape \(3, 3, 22, 9\).* expects 16 output"):
        infer_architecture(generator_variables({n: v.shape for n, v in tf.items()}))
    tf = tiny_tf_generator()
    tf["d_4_conv1/weights"] = tf["g_4_conv1/weights"]
    with pytest.raises(TFImportError, match=r"\['d_4_conv1/weights'\]"):
        generator_variables({n: v.shape for n, v in tf.items()})


# ------------------------------------------------------------------ the four released models' indexes

RELEASED = {  # model: (size, label channels, k, parameters of our network)
    "256p": (256, 20, 9, 97_875_483), "512p": (512, 20, 1, 98_622_851),
    "1024p": (1024, 20, 1, 98_674_531), "GTA": (256, 20, 9, 97_875_483),
}


@pytest.mark.skipif(not os.path.isdir(REAL_INDEX), reason="../shared/reference/crn_tf_index is not present")
@pytest.mark.parametrize("model", sorted(RELEASED))
def test_released_index_maps_onto_our_network(model):
    bundle = TFCheckpoint(os.path.join(REAL_INDEX, f"result_{model}_model.ckpt"))
    shapes = generator_variables(bundle.shapes(), bundle.index_path)
    size, label_nc, k, total = RELEASED[model]
    assert infer_architecture(shapes) == {"size": size, "label_nc": label_nc, "num_outputs": k, "width_mult": 1.0}
    net = CascadedRefinementNetwork(size, label_nc, k)
    names = check_tf_shapes(shapes, net, bundle.index_path)
    assert sorted(names.values()) == sorted(shapes)  # every generator variable has exactly one parameter
    assert sum(int(np.prod(s)) for s in shapes.values()) == count_params(net) == total
    assert shapes["g_4_conv1/weights"] == (3, 3, 20, 1024) and shapes[f"g_{size}_conv100/biases"] == (3 * k,)
    data = bundle.shard_path(0)
    with pytest.raises(TFCheckpointError, match=f"data shard {re.escape(data)} .* does not exist"):
        bundle.read("g_4_conv1/weights")
