"""``bench/pool_peak.py``: the pool's use replayed from MindSpore's runtime log, on hand-written lines and against
the pool's own peak statistic."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import pool_peak  # noqa: E402  (bench/pool_peak.py: standard library only)


def alloc(pid, ptr, size, node):
    """A runtime allocation line in MindSpore 2.10's form (fields the replay skips shortened)."""
    return (f"[DEBUG] ME({pid},7f00,python):2026-12-07-05:00:00.000.000 [kernel_tensor.cc:738] IncreaseNewRefCount] "
            f"Op:Alloc memory increase new ref count for device address:0x55aa shape:(4) type:Tensor[Float32] "
            f"ref count:1 device address:0x55bb device type:1 size:{size} device id:0 device name:CPU "
            f"device point:0x55cc ptr:{ptr} from mem pool:1 deleter:1 node:{node} index:0 from persist mem:0\n")


def free(pid, ptr):
    return (f"[DEBUG] ME({pid},7f00,python):2026-12-07-05:00:00.000.001 [device_context.cc:131] FreeMemory] "
            f"Free memory from device address:0x55bb ptr:{ptr}\n")


def test_replay_follows_allocations_and_releases_per_process():
    lines = [alloc(1, "0xa", 10, "Default/net-Net/A-op0"), alloc(1, "0xb", 20, "Gradients/Default/net-Net/B-op0"),
             free(1, "0xa"),
             alloc(2, "0xa", 25, "Default/other-Other/C-op0"),  # another process: its own pool and addresses
             alloc(1, "0xc", 5, "Default/net-Net/C-op1"),
             alloc(1, "0xb", 40, "Default/net-Net/D-op0"),  # 0xb handed out again: its holder had let go
             "[INFO] ME(1,7f00,python):2026-12-07 [x.cc:1] Other] not memory\n", "plain output\n"]
    replay = pool_peak.PoolReplay()
    handled = [replay.feed(line) for line in lines]
    assert handled == [True] * 6 + [False, False]
    # process 1: 10, 30, 20, 25, then 0xb's 20 replaced by 40 -> 45; process 2 peaked at 25
    assert (replay.peak, replay.pid) == (45, "1")
    assert sorted(replay.at_peak) == [[3, None, 5, "Default/net-Net/C-op1"], [4, None, 40, "Default/net-Net/D-op0"]]
    replay.feed(free(1, "0xc"))
    assert [r[1] for r in sorted(replay.at_peak)] == [4, None]  # freed after allocation 4 of process 1
    assert pool_peak.scope("Gradients/Default/net-Net/B-op0", 3) == "Gradients/Default/net"


def test_peak_equals_the_pools_own_statistic():
    """A G_then_D step of tests/test_train_step.py (N floats: 16 MiB): the replayed peak equals the one MindSpore's
    pool reports at exit, and the tensors listed alive there are D's and add up to it."""
    run = subprocess.run([sys.executable, os.path.join(REPO, "bench", "pool_peak.py"), "--min_mib", "8", "--",
                          sys.executable, "-c", "from tests.test_train_step import run_for_pool_peak; "
                          "run_for_pool_peak('step')"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ours = re.search(r"pool peak in use: ([0-9.]+) MiB", run.stdout)
    theirs = re.search(r"(?<!actual )peak used mem:(\d+)M", run.stdout)
    assert ours and theirs, run.stdout[-3000:]
    assert abs(float(ours.group(1)) - int(theirs.group(1))) <= 1.0, (ours.group(0), theirs.group(0))
    listed = re.findall(r"^\s+\d+\s+\S+\s+([0-9.]+)  (\S+)$", run.stdout, re.M)
    # D's phase, the larger (test_train_step.py): [y, y] for y = [fake, real], z = w [y, y] and z * z, 4 N floats
    # each; all else alive there is scalars
    assert sorted((float(mib), node.split("/")[-1]) for mib, node in listed) == [
        (64.0, "Concat-op0"), (64.0, "Mul-op0"), (64.0, "Mul-op1")], listed
    assert all("netD-WideD" in node for _, node in listed), listed
    assert abs(sum(float(mib) for mib, _ in listed) - float(ours.group(1))) < 0.1


def test_a_static_memory_plan_is_named_instead_of_a_replayed_peak():
    """Under MindSpore's static memory plan the kernel outputs are not logged one by one: the tool says so."""
    run = subprocess.run([sys.executable, os.path.join(REPO, "bench", "pool_peak.py"), "--", sys.executable, "-c",
                          "from common.runtime import plan_memory_statically; plan_memory_statically(); "
                          "from tests.test_train_step import run_for_pool_peak; run_for_pool_peak('step')"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "the replay misses the kernel outputs of a graph run on a static memory plan" in run.stdout, run.stdout[-3000:]
