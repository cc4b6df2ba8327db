"""synthzoo shared code: runtime, config, layers, training loop, checkpoints, data IO, metrics, export.

Importing this package pins oneDNN to AVX2 kernels before MindSpore is loaded: on AVX-512 CPUs oneDNN
otherwise falls back to a reference convolution that is ~100x slower. Set ``ONEDNN_MAX_CPU_ISA``
yourself to override.
"""
import os

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
