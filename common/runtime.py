"""Device, execution mode, seeding and msrun data-parallel initialisation.

Import through ``common`` so that ``ONEDNN_MAX_CPU_ISA`` is set before MindSpore loads.
"""
import os
import random
from dataclasses import dataclass

import numpy as np

import common  # noqa: F401  (sets ONEDNN_MAX_CPU_ISA before mindspore is imported)
import mindspore as ms

__all__ = ["Runtime", "init_runtime", "launched_by_msrun", "set_seed"]

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")


@dataclass(frozen=True)
class Runtime:
    """What the process runs on: device, mode and data-parallel rank."""
    device_target: str
    mode: str
    rank: int = 0
    group_size: int = 1

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


def init_runtime(device_target="CPU", mode="graph", seed=0, device_id=None, distributed=None):
    """Select the device and mode, seed every RNG, and join the msrun group when launched by msrun.

    Args:
        device_target: ``CPU``, ``GPU`` or ``Ascend``.
        mode: ``graph`` (compiled, default) or ``pynative`` (eager, for debugging).
        seed: seed of every RNG. All ranks use the same seed, so they initialise identical weights;
            ranks see different data through sharding and different dropout masks through
            :class:`common.layers.CounterDropout`'s per-rank stream.
        device_id: device index; ``None`` lets msrun / MindSpore choose.
        distributed: force data-parallel on/off; ``None`` means "when launched by msrun".
    """
    if device_target not in DEVICE_TARGETS:
        raise ValueError(f"device_target={device_target!r} is not supported; choose one of {DEVICE_TARGETS}")
    if mode not in ("graph", "pynative"):
        raise ValueError(f"mode={mode!r} is not supported; choose 'graph' or 'pynative'")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    if device_id is None:
        ms.set_device(device_target)
    else:
        ms.set_device(device_target, device_id)
    distributed = launched_by_msrun() if distributed is None else distributed
    rank, group_size = 0, 1
    if distributed:
        from mindspore.communication import get_group_size, get_rank, init
        init()
        rank, group_size = get_rank(), get_group_size()
        ms.reset_auto_parallel_context()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=group_size)
    set_seed(seed)
    return Runtime(device_target=device_target, mode=mode, rank=rank, group_size=group_size)
