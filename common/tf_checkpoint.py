"""Reader of TensorFlow checkpoint bundles (``model.ckpt.index`` + ``model.ckpt.data-0000N-of-0000M``),
without TensorFlow.

Format (``tensorflow/core/util/tensor_bundle``):

* ``<prefix>.index`` is a LevelDB-style SSTable: data blocks of prefix-compressed key/value entries, an
  index block pointing at them, and a 48-byte footer (metaindex and index block handles, magic number).
  Every block is followed by a compression byte (0 = none; TF writes bundles uncompressed) and the masked
  crc32c of block + byte. The empty key holds a ``BundleHeaderProto`` (shard count, endianness); every
  other key is a tensor name whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset, size,
  masked crc32c of the tensor bytes).
* ``<prefix>.data-SSSSS-of-NNNNN`` holds the raw tensors, little-endian, row-major, back to back.

The two protobuf messages are built at import time with the ``protobuf`` descriptor API (enums are read
as their int32 wire values). Only the index is read when a bundle is opened; :meth:`TFCheckpoint.read`
reads, checks and returns one tensor, so the Adam slots stored next to the weights are never loaded.

Public API: :class:`TFCheckpoint` (``variables()``, ``shapes()``, ``entry(name)``, ``read(name)``),
:func:`crc32c`, :func:`unmask_crc`, :func:`resolve_prefix`, :class:`TFCheckpointError`.
"""
import os
import struct
from dataclasses import dataclass

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

__all__ = ["TFCheckpoint", "TensorEntry", "TFCheckpointError", "crc32c", "unmask_crc",
           "resolve_prefix", "DTYPES"]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type byte + fixed32 masked crc32c
CRC_MASK_DELTA = 0xA282EAD8

# TF DataType enum value -> (name, numpy dtype) for the plain numeric types a bundle stores raw
DTYPES = {1: ("float32", np.float32), 2: ("float64", np.float64), 3: ("int32", np.int32),
          4: ("uint8", np.uint8), 5: ("int16", np.int16), 6: ("int8", np.int8), 9: ("int64", np.int64),
          10: ("bool", np.bool_), 17: ("uint16", np.uint16), 19: ("float16", np.float16),
          22: ("uint32", np.uint32), 23: ("uint64", np.uint64)}
_OTHER_DTYPES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128", 20: "resource", 21: "variant"}


class TFCheckpointError(ValueError):
    """A TF checkpoint file is missing, truncated, corrupt or holds something this reader cannot decode."""


# ------------------------------------------------------------------------------------------------ crc32c

def _crc_table():
    table = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _crc_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _raw_crc(reg, data):
    """Feed ``data`` (bytes-like) into the CRC register ``reg`` byte by byte (no pre/post inversion)."""
    for b in data:
        reg = _TABLE_LIST[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _zeros_operator(n):
    """Four 256-entry tables T with reg -> XOR_j T[j][byte j of reg] = the register after n zero bytes.

    Feeding bytes is linear in the register (GF(2)), so the operator is fixed by its images of the 32
    basis registers, which are run through the n zero bytes together as one vector.
    """
    reg = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    for _ in range(n):
        reg = _TABLE[reg & 0xFF] ^ (reg >> np.uint32(8))
    bits = ((np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1).astype(bool)  # [256, 8]
    tables = []
    for j in range(4):
        images = reg[8 * j:8 * j + 8]
        tables.append([int(np.bitwise_xor.reduce(np.where(bits[v], images, 0))) for v in range(256)])
    return tables


def crc32c(data):
    """CRC-32C (Castagnoli) of ``data`` (bytes, bytearray, memoryview or a contiguous numpy array).

    Large inputs are cut into equal rows that are CRC'd side by side with numpy (each from a zero register)
    and chained with the linear "append n zero bytes" operator, so a 40 MB tensor takes well under a second.
    """
    buf = np.frombuffer(memoryview(data).cast("B"), np.uint8)
    n = buf.size
    if n < 4096:
        return _raw_crc(0xFFFFFFFF, buf.tobytes()) ^ 0xFFFFFFFF
    row = max(64, int(np.sqrt(n)))
    head = n % row  # fed first, on its own, so the rest splits into whole rows
    reg = _raw_crc(0xFFFFFFFF, buf[:head].tobytes())
    rows = buf[head:].reshape(-1, row)
    part = np.zeros(rows.shape[0], np.uint32)
    for j in range(row):
        part = _TABLE[(part ^ rows[:, j]) & 0xFF] ^ (part >> np.uint32(8))
    t0, t1, t2, t3 = _zeros_operator(row)
    for p in part.tolist():
        reg = t0[reg & 0xFF] ^ t1[(reg >> 8) & 0xFF] ^ t2[(reg >> 16) & 0xFF] ^ t3[reg >> 24] ^ p
    return reg ^ 0xFFFFFFFF


def unmask_crc(masked):
    """The crc32c of a stored (LevelDB/TF masked: rotated right by 15 bits, plus a constant) checksum."""
    rot = (masked - CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ------------------------------------------------------------------------------- protobuf record types

def _message_classes():
    """BundleHeaderProto and BundleEntryProto (tensor_bundle.proto and the messages they use)."""
    f = descriptor_pb2.FieldDescriptorProto
    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    fdp = descriptor_pb2.FileDescriptorProto(name="synthzoo/tensor_bundle.proto", package="tensorflow",
                                             syntax="proto3")

    def message(name, *fields, nested=()):
        msg = fdp.message_type.add(name=name)
        for sub_name, sub_fields in nested:
            sub = msg.nested_type.add(name=sub_name)
            for field in sub_fields:
                sub.field.add(**field)
        for field in fields:
            msg.field.add(**field)
        return msg

    def field(name, number, kind, label=opt, type_name=None):
        out = {"name": name, "number": number, "type": kind, "label": label}
        if type_name:
            out["type_name"] = type_name
        return out

    message("VersionDef", field("producer", 1, f.TYPE_INT32), field("min_consumer", 2, f.TYPE_INT32),
            field("bad_consumers", 3, f.TYPE_INT32, rep))
    message("TensorShapeProto", field("dim", 2, f.TYPE_MESSAGE, rep, ".tensorflow.TensorShapeProto.Dim"),
            field("unknown_rank", 3, f.TYPE_BOOL),
            nested=[("Dim", [field("size", 1, f.TYPE_INT64), field("name", 2, f.TYPE_STRING)])])
    message("TensorSliceProto",
            field("extent", 1, f.TYPE_MESSAGE, rep, ".tensorflow.TensorSliceProto.Extent"),
            nested=[("Extent", [field("start", 1, f.TYPE_INT64), field("length", 2, f.TYPE_INT64)])])
    message("BundleHeaderProto", field("num_shards", 1, f.TYPE_INT32), field("endianness", 2, f.TYPE_INT32),
            field("version", 3, f.TYPE_MESSAGE, type_name=".tensorflow.VersionDef"))
    message("BundleEntryProto", field("dtype", 1, f.TYPE_INT32),
            field("shape", 2, f.TYPE_MESSAGE, type_name=".tensorflow.TensorShapeProto"),
            field("shard_id", 3, f.TYPE_INT32), field("offset", 4, f.TYPE_INT64), field("size", 5, f.TYPE_INT64),
            field("crc32c", 6, f.TYPE_FIXED32),
            field("slices", 7, f.TYPE_MESSAGE, rep, ".tensorflow.TensorSliceProto"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}"))
                 for name in ("BundleHeaderProto", "BundleEntryProto"))


BundleHeaderProto, BundleEntryProto = _message_classes()


# ------------------------------------------------------------------------------------- SSTable framing

def _varint(buf, pos, where):
    """(value, next position) of the little-endian base-128 varint at ``pos``."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise TFCheckpointError(f"{where}: a varint runs past the end of the data; the file is truncated "
                                    f"or corrupt")
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise TFCheckpointError(f"{where}: malformed varint (over 10 bytes); the file is corrupt")


def _block(data, handle_bytes, path, what):
    """The verified contents of the block whose handle (varint offset, varint size) is ``handle_bytes``."""
    offset, pos = _varint(handle_bytes, 0, f"{path}: {what} handle")
    size, _ = _varint(handle_bytes, pos, f"{path}: {what} handle")
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise TFCheckpointError(f"{path}: the {what} at bytes {offset}..{end} lies beyond the table data "
                                f"({len(data) - FOOTER_SIZE} bytes); the file is truncated or corrupt")
    contents, kind = data[offset:offset + size], data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if unmask_crc(stored) != crc32c(data[offset:offset + size + 1]):
        raise TFCheckpointError(f"{path}: checksum mismatch in the {what} at byte {offset}; the file is corrupt "
                                f"(download it again)")
    if kind != 0:
        name = {1: "snappy"}.get(kind, f"unknown ({kind})")
        raise TFCheckpointError(f"{path}: the {what} at byte {offset} is {name}-compressed; this reader handles "
                                f"uncompressed tables only (TF writes bundle indexes uncompressed)")
    return contents


def _block_entries(block, path, what):
    """Yield (key bytes, value bytes) of a block (prefix-compressed keys, restart array at the end)."""
    if len(block) < 4:
        raise TFCheckpointError(f"{path}: the {what} is too short to hold its restart count; the file is corrupt")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise TFCheckpointError(f"{path}: the {what} claims {num_restarts} restart points, more than fit in "
                                f"its {len(block)} bytes; the file is corrupt")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, f"{path}: {what}")
        unshared, pos = _varint(block, pos, f"{path}: {what}")
        value_len, pos = _varint(block, pos, f"{path}: {what}")
        if shared > len(key) or pos + unshared + value_len > limit:
            raise TFCheckpointError(f"{path}: an entry of the {what} runs past its end; the file is corrupt")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + value_len]
        pos += value_len


def _read_table(path):
    """Yield (key, value) of every entry of the SSTable file ``path`` in key order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < FOOTER_SIZE:
        raise TFCheckpointError(f"{path}: {len(data)} bytes, shorter than the {FOOTER_SIZE}-byte table footer; "
                                f"the index file is truncated (copy or download it again)")
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != TABLE_MAGIC:
        raise TFCheckpointError(f"{path}: no table magic number at the end of the file; it is truncated or not a "
                                f"TF checkpoint index (pass the prefix, e.g. DIR/model.ckpt)")
    footer = data[len(data) - FOOTER_SIZE:]
    _, pos = _varint(footer, 0, f"{path}: footer")  # metaindex offset
    _, pos = _varint(footer, pos, f"{path}: footer")  # metaindex size (TF writes no meta blocks)
    index = _block(data, footer[pos:], path, "index block")
    for i, (_, handle) in enumerate(_block_entries(index, path, "index block")):
        yield from _block_entries(_block(data, handle, path, f"data block {i}"), path, f"data block {i}")


# -------------------------------------------------------------------------------------------- bundle

@dataclass(frozen=True)
class TensorEntry:
    """Where a tensor lives: TF dtype number, shape, shard, byte offset and size, masked crc32c."""
    name: str
    dtype: int
    shape: tuple
    shard: int
    offset: int
    size: int
    crc: int

    @property
    def dtype_name(self):
        if self.dtype in DTYPES:
            return DTYPES[self.dtype][0]
        return _OTHER_DTYPES.get(self.dtype, f"DataType {self.dtype}")


def resolve_prefix(path):
    """``DIR/model.ckpt``, ``DIR/model.ckpt.index`` or ``DIR`` (holding one ``*.index``) -> the bundle prefix."""
    if path.endswith(".index"):
        path = path[:-len(".index")]
    elif os.path.isdir(path):
        found = sorted(n for n in os.listdir(path) if n.endswith(".index"))
        if len(found) != 1:
            raise TFCheckpointError(f"{path} is a folder with {len(found)} .index files {found[:4]}; pass the "
                                    f"checkpoint prefix, e.g. {os.path.join(path, 'model.ckpt')}")
        path = os.path.join(path, found[0][:-len(".index")])
    if not os.path.isfile(path + ".index"):
        raise TFCheckpointError(f"TF checkpoint index {path}.index does not exist; pass the prefix of the bundle "
                                f"(DIR/model.ckpt for DIR/model.ckpt.index + DIR/model.ckpt.data-00000-of-00001)")
    return path


class TFCheckpoint:
    """A TF checkpoint bundle opened by its prefix (reads only the ``.index`` until a tensor is asked for).

    Args:
        path: the bundle prefix (``DIR/model.ckpt``), its ``.index`` file, or a folder holding one bundle.

    Raises:
        TFCheckpointError: the index is missing, truncated, corrupt, compressed or big-endian; names the file.
    """

    def __init__(self, path):
        self.prefix = resolve_prefix(path)
        self.index_path = self.prefix + ".index"
        self.entries = {}
        header = None
        for key, value in _read_table(self.index_path):
            try:
                if key == b"":
                    header = BundleHeaderProto.FromString(value)
                    continue
                entry = BundleEntryProto.FromString(value)
            except DecodeError as e:
                what = "the header" if key == b"" else f"the entry of {key.decode('utf-8', 'replace')!r}"
                raise TFCheckpointError(f"{self.index_path}: cannot decode {what}: {e}; the file is corrupt") from None
            name = key.decode("utf-8")
            if entry.slices:
                raise TFCheckpointError(f"{self.index_path}: {name!r} is a partitioned (sliced) variable, which this "
                                        f"reader does not assemble; re-save the model without partitioners")
            self.entries[name] = TensorEntry(name, entry.dtype, tuple(d.size for d in entry.shape.dim),
                                             entry.shard_id, entry.offset, entry.size, entry.crc32c)
        if header is None:
            raise TFCheckpointError(f"{self.index_path}: no bundle header (empty key); this is an SSTable but not a "
                                    f"TF checkpoint index")
        if header.endianness != 0:
            raise TFCheckpointError(f"{self.index_path}: the tensors were written big-endian; this reader handles "
                                    f"little-endian bundles (those written on x86/ARM)")
        self.num_shards = header.num_shards

    def shard_path(self, shard):
        """Path of data shard ``shard``."""
        return f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"

    def variables(self):
        """[(name, dtype name, shape)] of every stored tensor, sorted by name (no tensor data is read)."""
        return [(e.name, e.dtype_name, e.shape) for e in self.entries.values()]

    def shapes(self):
        """{name: shape} of every stored tensor."""
        return {e.name: e.shape for e in self.entries.values()}

    def entry(self, name):
        """The :class:`TensorEntry` of ``name``; a KeyError-free error naming near names if it is absent."""
        if name not in self.entries:
            near = [n for n in self.entries if n.split("/")[0] == name.split("/")[0]][:5]
            raise TFCheckpointError(f"{self.index_path}: no tensor named {name!r}" +
                                    (f"; same scope: {near}" if near else f" ({len(self.entries)} tensors stored)"))
        return self.entries[name]

    def read(self, name):
        """Read tensor ``name`` from its shard, verify its crc32c and return it as a numpy array."""
        e = self.entry(name)
        if e.dtype not in DTYPES:
            raise TFCheckpointError(f"{self.index_path}: {name!r} is a {e.dtype_name} tensor; only numeric dtypes "
                                    f"({', '.join(v[0] for v in DTYPES.values())}) can be read")
        dtype = np.dtype(DTYPES[e.dtype][1]).newbyteorder("<")
        count = int(np.prod(e.shape, dtype=np.int64))
        if count * dtype.itemsize != e.size:
            raise TFCheckpointError(f"{self.index_path}: {name!r} has shape {e.shape} ({e.dtype_name}, "
                                    f"{count * dtype.itemsize} bytes) but its entry says {e.size} bytes; the index "
                                    f"is corrupt")
        path = self.shard_path(e.shard)
        if not os.path.isfile(path):
            raise TFCheckpointError(f"data shard {path} of {self.index_path} does not exist; download the "
                                    f"model's .data-* files next to its .index")
        with open(path, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        if len(raw) != e.size:
            raise TFCheckpointError(f"{path}: {name!r} needs bytes {e.offset}..{e.offset + e.size} but the file "
                                    f"ends at {e.offset + len(raw)}; the data file is truncated (download it again)")
        if crc32c(raw) != unmask_crc(e.crc):
            raise TFCheckpointError(f"{path}: checksum mismatch for {name!r} (bytes {e.offset}..{e.offset + e.size});"
                                    f" the data file is corrupt or belongs to another index (download it again)")
        return np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="), copy=True).reshape(e.shape)
