"""Device, execution mode, seeding and msrun data-parallel initialisation.

Import through ``common`` so that ``ONEDNN_MAX_CPU_ISA`` is set before MindSpore loads.
"""
import contextlib
import ctypes
import os
import random
import resource
import sys
import threading
from dataclasses import dataclass

import numpy as np

import common  # sets ONEDNN_MAX_CPU_ISA before mindspore is imported
from common import cpu_kernels
import mindspore as ms

__all__ = ["Runtime", "init_runtime", "launched_by_msrun", "set_seed", "select_cpu_conv", "select_cpu_precision",
           "cpu_flags", "cpu_has_avx512", "peak_memory_gb", "total_memory_gb", "heap_trimming", "CPU_CONV_CHOICES",
           "PRECISION_CHOICES", "drop_parameter_read_copies", "parameter_read_copies_dropped"]

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")
CPU_CONV_CHOICES = ("auto", "native", "matmul", "winograd", "onednn", "mixed")
PRECISION_CHOICES = ("f32", "bf16")
# How long a rank's CPU collective (MindSpore's own AllReduce) waits for the others: MS_NODE_TIMEOUT, read by
# the worker when it joins (30 s by default, less than ranks can drift apart while compiling a large network or
# while rank 0 writes a snapshot). The scheduler keeps its own value, so a killed worker is still noticed soon.
CPU_COLLECTIVE_TIMEOUT_S = 900
# MindSpore's switch for its copies of Parameter reads (drop_parameter_read_copies); 3 drops them.
READ_COPIES_ENV = "MS_DEV_SIDE_EFFECT_LOAD_ELIM"


@dataclass(frozen=True)
class Runtime:
    """What the process runs on: device, mode, data-parallel rank, CPU convolution path and MatMul precision.

    ``conv_impl`` (``native`` | ``matmul`` | ``winograd`` | ``onednn``) is the process's convolution path: apply it to every network
    the process builds with ``common.conv.use_conv_impl(net, rt.conv_impl)`` (or the ``conv_impl=``
    keyword of the metric and loss builders), so that all convolutions suit ``onednn_isa``. ``precision`` (``f32`` |
    ``bf16``) holds for every MatMul of the process (:func:`select_cpu_precision`).
    """
    device_target: str
    mode: str
    rank: int = 0
    group_size: int = 1
    conv_impl: str = "native"
    onednn_isa: str = ""
    precision: str = "f32"

    @property
    def describe_conv(self):
        """One log line: how convolutions run (``common/conv.py``) and under which oneDNN ISA cap."""
        if self.device_target != "CPU":
            return f"convolutions: native {self.device_target} kernels"
        bf16 = ", bf16 matrix multiplies: ONEDNN_DEFAULT_FPMATH_MODE=BF16" if self.precision == "bf16" else ""
        kernels = "" if self.conv_impl == "native" else f"; {cpu_kernels.status()}"
        return f"CPU convolutions: {self.conv_impl} (ONEDNN_MAX_CPU_ISA={self.onednn_isa}{bf16}){kernels}"

    @property
    def distributed(self):
        return self.group_size > 1

    @property
    def is_main(self):
        """True on the process that writes logs, checkpoints and images (rank 0)."""
        return self.rank == 0


def launched_by_msrun():
    """True when msrun started this process (as a worker, or as the scheduler that must also init())."""
    return os.environ.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED") and "MS_WORKER_NUM" in os.environ


def set_seed(seed):
    """Seed Python, NumPy and MindSpore (parameter init, dropout and random ops)."""
    random.seed(seed)
    np.random.seed(seed)
    ms.set_seed(seed)


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags (the first ``flags`` line of /proc/cpuinfo; empty if unreadable)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_avx512(cpuinfo="/proc/cpuinfo"):
    """True when the CPU reports AVX-512 Foundation (``avx512f`` in /proc/cpuinfo; False if unreadable)."""
    return "avx512f" in cpu_flags(cpuinfo)


def select_cpu_conv(cpu_conv, device_target, user_isa, flags):
    """How convolutions should run: ``(impl, isa)``.

    ``impl`` is ``"native"``, ``"matmul"``, ``"winograd"``, ``"onednn"`` or ``"mixed"`` (``common/conv.py``); ``isa`` is the
    ``ONEDNN_MAX_CPU_ISA`` to set, or ``None`` to leave the variable alone (a value the user set, or not a
    CPU run). ``flags``: the CPU's feature flags (:func:`cpu_flags`). ``auto`` picks ``winograd`` on CPUs with
    AVX2 (every AVX-512 CPU has it), ``native`` otherwise: Winograd's 2.25-4x fewer multiplies beat MindSpore's
    im2col + GEMM convolutions with AVX-512 MatMuls and with AVX2 ones alike (a 2-core AMD EPYC without
    AVX-512: CRN 128p train step 15.4 against 30.5 s, docs/performance.md). Native convolutions need the AVX2 cap;
    the others run at AVX-512 where the CPU has it.
    """
    if cpu_conv not in CPU_CONV_CHOICES:
        raise ValueError(f"cpu_conv={cpu_conv!r} is not supported; choose one of {CPU_CONV_CHOICES}")
    if device_target != "CPU":
        return "native", None
    impl = cpu_conv if cpu_conv != "auto" else ("winograd" if "avx2" in flags else "native")
    if user_isa:
        return impl, None
    return impl, "AVX512_CORE" if impl != "native" and "avx512f" in flags else "AVX2"


def select_cpu_precision(precision, device_target, conv_impl, user_isa, flags):
    """The oneDNN ISA cap that ``precision`` needs: ``None`` to keep the one :func:`select_cpu_conv` chose.

    ``bf16`` (CPU only) makes oneDNN compute every float32 MatMul, hence every matmul / winograd convolution
    (``common/conv.py``), with bfloat16 inputs and float32 accumulation (``ONEDNN_DEFAULT_FPMATH_MODE=BF16``),
    on AMX tiles (cap ``AVX512_CORE_AMX``). Without AMX, oneDNN's MatMul stays float32 under that mode (its
    ``brg_matmul:avx512_core``, measured on an AMD Zen 4), while its convolutions, the ``onednn`` path, take bf16
    on AVX512_BF16 (cap ``AVX512_CORE_BF16``). Raises ``ValueError`` where it cannot take effect: another
    device, native convolutions, matmul / winograd convolutions without AMX, or a CPU without bf16 instructions
    (``flags``: :func:`cpu_flags`).
    """
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision={precision!r} is not supported; choose one of {PRECISION_CHOICES}")
    if precision == "f32":
        return None
    if device_target != "CPU":
        raise ValueError(f"precision=bf16 is a CPU option (oneDNN bf16 matrix multiplies); on {device_target} use "
                         f"amp_level=O1 or O2 (float16) with precision=f32")
    if conv_impl == "native":
        raise ValueError("precision=bf16 computes the matmul, winograd and onednn convolution paths in bf16; "
                         "native convolutions run under the AVX2 cap, which has no bf16 instructions: use "
                         "cpu_conv=winograd (or onednn, matmul)")
    amx = "amx_bf16" in flags
    if not amx and "avx512_bf16" not in flags:
        raise ValueError("precision=bf16 needs a CPU with AMX or AVX512_BF16 (flags amx_bf16 / avx512_bf16 in "
                         "/proc/cpuinfo); this one has neither: use precision=f32")
    if not amx and conv_impl != "onednn":
        raise ValueError(f"precision=bf16 with cpu_conv={conv_impl}: oneDNN computes MatMul in bf16 on AMX tiles only, "
                         f"and this CPU has AVX512_BF16 without AMX (its MatMul would stay float32): use "
                         f"cpu_conv=onednn, whose convolutions take bf16 here, or precision=f32")
    if user_isa:
        return None
    return "AVX512_CORE_AMX" if amx else "AVX512_CORE_BF16"


def drop_parameter_read_copies():
    """Compile this process's graphs without MindSpore's copies of Parameter reads: sets
    ``MS_DEV_SIDE_EFFECT_LOAD_ELIM=3`` unless you set the variable yourself.

    In graph mode MindSpore orders each read of a Parameter before the next write to it by control edges on the
    read's consumers, and by default also copies (TensorMove) every read of a Parameter that the graph reads more
    than once. The copies guard what the edges miss: a consumer reached through an operator that a later pass
    removes (Depend, StopGradient), a node that takes two versions of one Parameter. A GAN step reads most weights
    two or three times (the D step's generator forward, the G step, the EMA): OSMIS's 64x64 step copies 680 of
    its 3,900 kernels, 4-5 % of its time. A model whose train step writes each Parameter only from values computed
    from its reads, after them, gives the same bits without the copies (``ModelSpec.parameter_read_copies``,
    tested per model). A snapshot of a Parameter kept as a tensor (``p * 1``) is not such a value: a pass folds it
    into the read, which then sees later writes (CoCosNet's recomputing step snapshots its spectral vectors into
    Parameters of their own by ``Assign``, :class:`common.spectral_norm.SpectralVectors`). The copies also take
    memory: CoCosNet's 256x256 step peaks 0.5 GB lower without them (the memory pool fragments less).

    MindSpore reads the variable once, at the process's first graph compile: a call after it changes nothing
    (``common.drivers.configure_process`` calls it for the train command, before the step compiles).
    """
    os.environ.setdefault(READ_COPIES_ENV, "3")


def parameter_read_copies_dropped():
    """Whether :func:`drop_parameter_read_copies` (or you) turned the copies off for this process."""
    return os.environ.get(READ_COPIES_ENV) == "3"


def plan_memory_statically():
    """Lay out this process's graph memory before running it (MindSpore's SOMAS planner,
    ``mindspore.runtime.set_memory(optimize_level="O1")``) instead of taking each kernel's outputs from the memory
    pool as it runs and giving them back after their last reader.

    A step of thousands of small kernels gains: OSMIS at 64x64 (~2,900 kernels) 0.966x the time, peak memory
    1.95 -> 2.10 GB; at 192x320 the same time for 4.53 -> 5.52 GB (``ModelSpec.static_memory_plan``). MindSpore
    takes the level once per process, before its first graph compile: :func:`common.drivers.configure_process` sets
    it for the train command only, so tests training several models in one process keep the default.
    """
    ms.runtime.set_memory(optimize_level="O1")


def memory_planned_statically():
    """Whether :func:`plan_memory_statically` (or you) turned MindSpore's static memory planning on."""
    return ms.get_context("memory_optimize_level") == 1


def init_runtime(device_target="CPU", mode="graph", seed=0, device_id=None, distributed=None, cpu_conv="native",
                 precision="f32"):
    """Select the device and mode, seed every RNG, and join the msrun group when launched by msrun.

    Args:
        device_target: ``CPU``, ``GPU`` or ``Ascend``.
        mode: ``graph`` (compiled, default) or ``pynative`` (eager, for debugging).
        seed: seed of every RNG. All ranks use the same seed, so they initialise identical weights;
            ranks see different data through sharding and different dropout masks through
            :class:`common.layers.CounterDropout`'s per-rank stream (the training driver applies
            ``common.layers.set_dropout_rank(net, Runtime.rank)``).
        device_id: device index; ``None`` lets msrun / MindSpore choose.
        distributed: force data-parallel on/off; ``None`` means "when launched by msrun". On CPU the
            ranks' collectives wait up to :data:`CPU_COLLECTIVE_TIMEOUT_S` for each other (``MS_NODE_TIMEOUT``
            in this process, unless you set it).
        cpu_conv: ``native``, ``matmul``, ``winograd``, ``onednn`` or ``auto`` (see :func:`select_cpu_conv`): the process's CPU
            convolution path, returned as ``Runtime.conv_impl``; every network then gets it through
            :func:`common.conv.use_conv_impl` (this function switches no cell itself). Also sets
            ``ONEDNN_MAX_CPU_ISA`` (AVX-512 for matmul, winograd and onednn, AVX2 for native) unless you set it yourself;
            that takes effect only if no oneDNN kernel has run yet in this process, which holds for
            the entry-point scripts. At AVX-512, a network left native runs oneDNN's ~100x slower
            reference convolution.
        precision: ``f32`` or ``bf16`` (see :func:`select_cpu_precision`): ``bf16`` sets
            ``ONEDNN_DEFAULT_FPMATH_MODE=BF16`` and the AMX / AVX512_BF16 cap, with the same proviso. Parameters,
            gradients, optimizer state and every non-MatMul kernel stay float32.
    """
    if device_target not in DEVICE_TARGETS:
        raise ValueError(f"device_target={device_target!r} is not supported; choose one of {DEVICE_TARGETS}")
    if mode not in ("graph", "pynative"):
        raise ValueError(f"mode={mode!r} is not supported; choose 'graph' or 'pynative'")
    flags = cpu_flags()
    conv, isa = select_cpu_conv(cpu_conv, device_target, common.USER_ONEDNN_ISA, flags)
    isa = select_cpu_precision(precision, device_target, conv, common.USER_ONEDNN_ISA, flags) or isa
    if isa is not None:
        os.environ["ONEDNN_MAX_CPU_ISA"] = isa
    if precision == "bf16":
        os.environ["ONEDNN_DEFAULT_FPMATH_MODE"] = "BF16"
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    if device_id is None:
        ms.set_device(device_target)
    else:
        ms.set_device(device_target, device_id)
    distributed = launched_by_msrun() if distributed is None else distributed
    rank, group_size = 0, 1
    if distributed:
        from mindspore.communication import get_group_size, get_rank, init
        if device_target == "CPU":
            os.environ.setdefault("MS_NODE_TIMEOUT", str(CPU_COLLECTIVE_TIMEOUT_S))
        init()
        rank, group_size = get_rank(), get_group_size()
        ms.reset_auto_parallel_context()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=group_size)
    set_seed(seed)
    return Runtime(device_target=device_target, mode=mode, rank=rank, group_size=group_size, conv_impl=conv,
                   onednn_isa=os.environ.get("ONEDNN_MAX_CPU_ISA", ""), precision=precision)


@contextlib.contextmanager
def eager():
    """Run the block in PyNative mode, then return to the process's mode.

    For one-off forwards beside a compiled train step (the epoch-end sample grid): no inference graph is
    compiled or kept in memory for them; the train step's compiled graph is reused when the block ends.
    """
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=mode)


def peak_memory_gb():
    """This process's peak resident memory so far, in GiB: Linux's ``VmHWM``, else ``ru_maxrss``. (Linux keeps
    ``ru_maxrss`` across ``exec``, so a child started from a large process, such as the separate compile's, would
    report its parent's size at the fork; ``VmHWM`` belongs to the new program's memory.)"""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2 ** 20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** (30 if sys.platform == "darwin" else 20)


def _malloc_trim():
    """glibc's ``malloc_trim`` (a ctypes function), or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def heap_trimming(period_s, trim=None, *, device="CPU"):
    """While the block runs, a background thread returns the C heap's free pages to the system every
    ``period_s`` seconds (glibc ``malloc_trim(0)``, or ``trim`` if given); yields whether it runs.

    MindSpore's CPU kernels take their output tensors from ``malloc``. glibc keeps a freed block mapped inside
    its heaps and reuses it only for a request that fits; the rest stays resident, so a long graph's peak
    resident memory grows by what its earlier phases freed (CoCosNet's 256x256 step: 6.46 -> 5.67 GB,
    docs/performance.md). ``malloc_trim(0)`` gives every free page back (``madvise``); the next allocation there
    faults in fresh pages. ``period_s`` 0, a ``device`` other than CPU (its tensors are not on the C heap) or
    no ``malloc_trim``: nothing runs.
    """
    trim = trim or _malloc_trim()
    if not period_s or device != "CPU" or trim is None:
        yield False
        return
    stop = threading.Event()

    def run():
        while not stop.wait(period_s):
            trim(0)

    thread = threading.Thread(target=run, name="heap-trimming", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join()


def total_memory_gb(meminfo="/proc/meminfo"):
    """Physical memory of the machine in GB (``MemTotal``; 0 when it cannot be read)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return 0.0
