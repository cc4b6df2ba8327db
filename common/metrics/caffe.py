"""Read Caffe ``.caffemodel`` weights without Caffe: a direct decoder of the protobuf wire format.

Only the fields that carry weights are decoded (field numbers from ``caffe.proto``)::

    NetParameter      layer = 100 (LayerParameter), layers = 2 (V1LayerParameter, old files)
    LayerParameter    name = 1, type = 2, blobs = 7
    V1LayerParameter  name = 4, blobs = 6
    BlobProto         num = 1, channels = 2, height = 3, width = 4, data = 5, double_data = 8, shape = 7
    BlobShape         dim = 1
"""
import os
import struct
from collections import OrderedDict

import numpy as np

__all__ = ["read_caffemodel", "caffe_flat"]


def _varint(buf, pos):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Yield (field number, wire type, value) of one message; value is int, bytes or raw 4/8 bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number})")
        yield number, wire, value


def _packed_varints(value, wire):
    if wire == 0:
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _blob(buf):
    legacy, dims, data, doubles = {}, None, [], []
    for number, wire, value in _fields(buf):
        if number in (1, 2, 3, 4) and wire == 0:
            legacy[number] = value
        elif number == 7:
            dims = [d for n, w, v in _fields(value) if n == 1 for d in _packed_varints(v, w)]
        elif number == 5:
            data.append(np.frombuffer(value, "<f4"))
        elif number == 8:
            doubles.append(np.frombuffer(value, "<f8"))
    values = np.concatenate(data) if data else (np.concatenate(doubles) if doubles else np.zeros(0))
    if dims is None:
        dims = [legacy.get(i, 1) for i in (1, 2, 3, 4)]
    if int(np.prod(dims)) != values.size:
        raise ValueError(f"blob with shape {dims} holds {values.size} values")
    return values.astype(np.float32).reshape(dims)


def read_caffemodel(path):
    """``.caffemodel`` -> ``{layer name: (type, [blob arrays])}`` for every layer with blobs."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Caffe model {path} does not exist; for the pix2pix Cityscapes FCN-8s get "
                                f"fcn-8s-cityscapes.caffemodel with the pix2pix script download_fcn8s.sh")
    with open(path, "rb") as f:
        buf = f.read()
    layers = OrderedDict()
    try:
        for number, wire, value in _fields(buf):
            if wire != 2 or number not in (100, 2):
                continue
            name_field, blob_field = (1, 7) if number == 100 else (4, 6)
            name, kind, blobs = None, None, []
            for n, w, v in _fields(value):
                if n == name_field and w == 2:
                    name = v.decode()
                elif n == 2 and w == 2 and number == 100:
                    kind = v.decode()
                elif number == 2 and n == 5 and w == 0:
                    kind = f"V1:{v}"
                elif n == blob_field and w == 2:
                    blobs.append(_blob(v))
            if blobs:
                layers[name] = (kind, blobs)
    except (IndexError, UnicodeDecodeError, struct.error, ValueError) as e:
        raise ValueError(f"{path} is not a valid .caffemodel (binary NetParameter): {e}") from None
    if not layers:
        raise ValueError(f"{path}: no layers with weights found; is it a .caffemodel (not a .prototxt)?")
    return layers


def caffe_flat(path):
    """``.caffemodel`` -> ``{"<layer>.weight": blobs[0], "<layer>.bias": blobs[1]}``."""
    flat = OrderedDict()
    for name, (_, blobs) in read_caffemodel(path).items():
        flat[f"{name}.weight"] = blobs[0]
        if len(blobs) > 1:
            flat[f"{name}.bias"] = blobs[1].reshape(-1)
    return flat
