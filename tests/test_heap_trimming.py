"""common.runtime's process memory: heap_trimming (freed C-heap memory goes back to the system while the block
runs) and peak_memory_gb."""
import os
import subprocess
import sys
import time

import pytest

from common.runtime import heap_trimming, peak_memory_gb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 256 blocks of 1 MiB from glibc's heap (mmap threshold and automatic trimming raised out of the way), written,
# then freed except the last (which pins the heap's top): RSS before the block, after the frees, after the block.
SCRIPT = r"""
import ctypes, sys, time
from common.runtime import heap_trimming
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
blocks = [libc.malloc(1 << 20) for _ in range(256)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
full = rss_mb()
for b in blocks[:-1]:
    libc.free(b)
freed = rss_mb()
with heap_trimming(float(sys.argv[1])):
    time.sleep(0.5)
print(full, freed, rss_mb())
"""


def rss_after(period_s):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(period_s)], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr[-2000:]
    return [float(v) for v in out.stdout.split()[-3:]]


def glibc():
    with heap_trimming(60) as running:
        pass
    return running


@pytest.mark.skipif(not glibc(), reason="malloc_trim is glibc's")
def test_freed_heap_pages_go_back_only_while_trimming():
    full, freed, kept = rss_after(0)
    assert freed > full - 32 and kept > full - 32  # glibc keeps the 255 freed MiB resident
    full, freed, trimmed = rss_after(0.1)
    assert freed > full - 32 and trimmed < full - 200


def test_the_thread_calls_trim_every_period_and_stops_with_the_block():
    calls = []
    with heap_trimming(0.05, trim=calls.append) as running:
        time.sleep(0.3)
    assert running and 1 <= len(calls) <= 7 and set(calls) == {0}  # at most one call per 0.05 s
    count = len(calls)
    time.sleep(0.15)
    assert len(calls) == count
    with heap_trimming(0, trim=calls.append) as running:
        time.sleep(0.1)
    assert not running and len(calls) == count
    with heap_trimming(0.05, trim=calls.append, device="GPU") as running:  # device tensors: not the C heap
        time.sleep(0.1)
    assert not running and len(calls) == count


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's")
def test_a_child_reports_its_own_peak_not_its_parents():
    held = b"x" * (2 << 30)  # 2 GiB written in this process before it starts the child
    out = subprocess.run([sys.executable, "-c", "from common.runtime import peak_memory_gb; print(peak_memory_gb())"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert out.returncode == 0, out.stderr[-2000:]
    assert 0.01 < float(out.stdout.split()[-1]) < 1.5  # the child's own (MindSpore loaded: ~0.4 GiB), not >= 2 GiB
    assert peak_memory_gb() >= len(held) / 2 ** 30  # this process's own peak holds the 2 GiB
