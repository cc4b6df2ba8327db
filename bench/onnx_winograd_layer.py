"""Milliseconds of one 3x3 convolution in onnxruntime, as the exported ``Conv`` and as common.onnx_winograd rewrites it.

    python bench/onnx_winograd_layer.py 1024x1024x64x128 128x128x128x256 [CINxCOUTxHxW ...] [--runs 5]

Each layer: a one-``Conv`` graph (3x3, pad 1, bias, batch 1, random weights), median ms over ``--runs`` after one
warm-up, first as written, then rewritten (thresholds off). The thresholds ``MIN_CHANNELS`` / ``MIN_TILES`` of
``common/onnx_winograd.py`` come from this table.
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
    import onnxruntime as ort
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(None, {"x": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {"x": x})
        times.append((time.perf_counter() - t) * 1000.0)
    return sorted(times)[len(times) // 2]


def main():
    from common import onnx_winograd
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layers", nargs="+", help="CINxCOUTxHxW, e.g. 1024x1024x64x128")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    onnx_winograd.MIN_CHANNELS = onnx_winograd.MIN_TILES = 1
    for layer in args.layers:
        cin, cout, h, w = (int(v) for v in layer.split("x"))
        x = np.random.default_rng(1).standard_normal((1, cin, h, w)).astype(np.float32)
        direct = median_ms(one_conv(cin, cout, h, w), x, args.runs)
        model = one_conv(cin, cout, h, w)
        onnx_winograd.winograd_convolutions(model)
        print(f"{cin}->{cout} at {h}x{w}: Conv {direct:.1f} ms, Winograd {median_ms(model, x, args.runs):.1f} ms",
              flush=True)


if __name__ == "__main__":
    main()
