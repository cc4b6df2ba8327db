"""synthzoo shared code: runtime, config, layers, training loop, checkpoints, data IO, metrics, export.

Importing this package prepares the environment before MindSpore is loaded (each setting is kept if
you set the variable yourself):

* ``ONEDNN_MAX_CPU_ISA=AVX2``: on AVX-512 CPUs oneDNN otherwise falls back to a reference convolution
  that is ~100x slower. oneDNN reads the variable when it creates its first kernel, so
  ``common.runtime.init_runtime(cpu_conv=...)`` may still lift the cap to AVX-512 for a process whose
  convolutions run as matrix multiplies (``common/conv.py``); a value you set yourself is kept
  (``USER_ONEDNN_ISA``).
* ``GLOG_v=3``: MindSpore prints errors only; its graph-compiler warnings (deprecations, side-effect
  pruning notes) would otherwise interleave with the training log. Set ``GLOG_v=2`` to see them.
"""
import os

USER_ONEDNN_ISA = os.environ.get("ONEDNN_MAX_CPU_ISA")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("GLOG_v", "3")
