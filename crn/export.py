"""Export a trained CRN generator to MINDIR and/or ONNX and prove the files reproduce it.

Input ``label`` [1, num_classes + 1, size, aspect*size] float32 (one-hot + void); output ``images``
[1, k, 3, size, aspect*size] in 0..1 units (clip before saving). Files go to
<output_dir>/export/crn_<size>p.{mindir,onnx,json}; ONNX parity with onnxruntime <= 1e-4, MINDIR reloaded.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("crn.src.spec.CRNSpec", "export")
