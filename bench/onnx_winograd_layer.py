"""Milliseconds of one 3x3 convolution in onnxruntime, as the exported ``Conv`` and as common.onnx_winograd rewrites it.

    python bench/onnx_winograd_layer.py 1024x1024x64x128 128x128x128x256 [CINxCOUTxHxW ...] [--runs 5] [--tiles 4,6]

Each layer: a one-``Conv`` graph (3x3, pad 1, bias, batch 1, random weights), median ms over ``--runs`` after one
warm-up, first as written, then rewritten (thresholds off) with each tile of ``--tiles`` (4: F(4x4, 3x3), 6:
F(6x6, 3x3); default: the layer's own ``layer_tile``), with the max |difference| from the ``Conv``. The thresholds
``MIN_CHANNELS`` / ``MIN_TILES`` and the tile rule of ``common/onnx_winograd.py`` come from this table.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one_conv(cin, cout, h, w):
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32),
                                     "W"), numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "B")]
    conv = helper.make_node("Conv", ["x", "W", "B"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv")
    graph = helper.make_graph([conv], "one_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, h, w])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def median_ms(model, x, runs):
    """(median ms, output)."""
    import onnxruntime as ort
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": x})[0]
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {"x": x})
        times.append((time.perf_counter() - t) * 1000.0)
    return sorted(times)[len(times) // 2], out


def main():
    from common import onnx_winograd
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layers", nargs="+", help="CINxCOUTxHxW, e.g. 1024x1024x64x128")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tiles", default="", help="comma-separated Winograd tiles to time (4, 6); default: the "
                        "layer's own")
    args = parser.parse_args()
    tiles = [int(t) for t in args.tiles.split(",")] if args.tiles else [None]
    onnx_winograd.MIN_CHANNELS = onnx_winograd.MIN_TILES = 1
    for layer in args.layers:
        cin, cout, h, w = (int(v) for v in layer.split("x"))
        x = np.random.default_rng(1).standard_normal((1, cin, h, w)).astype(np.float32)
        direct, want = median_ms(one_conv(cin, cout, h, w), x, args.runs)
        line = f"{cin}->{cout} at {h}x{w}: Conv {direct:.1f} ms"
        for tile in tiles:
            model = one_conv(cin, cout, h, w)
            used = onnx_winograd.winograd_convolutions(model, tile=tile)[2]
            ms, got = median_ms(model, x, args.runs)
            line += f", F({next(iter(used))}x{next(iter(used))}) {ms:.1f} ms (max |diff| {np.abs(got - want).max():.1g})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
