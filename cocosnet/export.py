"""Export a CoCosNet checkpoint: ``python cocosnet/export.py [--ckpt=...] [--export_format=ONNX]``.

Writes, under ``<output_dir>/export``, the published two-network form and one composite (spectral norm
folded), each MINDIR and/or ONNX with a JSON note, parity-checked (ONNX within 1e-4 in onnxruntime):

* ``<file_name>_correspondence``: ``input.1`` [1, L, S, S] one-hot label map, ``input.70`` [1, 3, S, S]
  exemplar (RGB, [-1, 1]), ``ref_seg_map`` [1, L, S, S] -> ``warped_exemplar`` [1, 3, S, S],
  ``warped_mask`` [1, L, S/4, S/4];
* ``<file_name>_translation``: ``seg`` [1, 3 + L, S, S] (warped exemplar, then label map) ->
  ``exemplar_based_output`` [1, 3, S, S] in [-1, 1];
* ``<file_name>_composite``: ``input_seg_map``, ``ref_image``, ``ref_seg_map`` -> ``exemplar_based_output``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.entry import run  # noqa: E402  (--help answers before MindSpore loads)

if __name__ == "__main__":
    run("cocosnet.src.spec.CoCosNetSpec", "export")
