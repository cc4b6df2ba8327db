"""Where MindSpore's CPU memory pool peaks in a command's run, and which tensors it holds there.

    python bench/pool_peak.py [--min_mib 16] [--depth 4] -- python bench/train_step.py --model cocosnet --size 256 --steps 1

Runs the command with MindSpore's runtime logging each device-memory allocation and release (``GLOG_v=3``,
``MS_SUBMODULE_LOG_v={ME:0,DEVICE:0}``: an "Alloc memory" line per kernel output, with its size, address and the node
that produced it, and a "Free memory" line per release), replays those lines per process, and prints for the process
with the highest peak: the peak in MiB, every tensor alive there of at least ``--min_mib`` (its allocation number,
the number of the allocation after which it was freed, its size and node), and the live memory summed per scope (the
node's first ``--depth`` name parts). MindSpore's own pool report (``MS_DEV_RUNTIME_CONF=memory_statistics:True``,
printed at exit) comes through with the command's standard output; its standard error carries the log, which is not
kept (a CoCosNet 256x256 step writes about 100,000 lines), and is shown (its last lines but the log's) only if the
command fails. A graph run on a static memory plan (``common.runtime.plan_memory_statically``: OSMIS's train step at
64x64 and below) logs no kernel output one by one; the tool then says so.

Node names are MindSpore's: ``Default/<attribute>-<Class>/...`` for forward ops, ``Gradients/...`` for the ops of
the backward MindSpore derived, ``Expand/...`` for its gradient expanders. A cell shared by two callers (CoCosNet's
discriminator in both losses) carries the name of one of them. ``cocosnet/README.md`` (Performance) and
``docs/performance.md`` show what it found.
"""
import argparse
import os
import re
import subprocess
import sys
import threading
from collections import Counter, defaultdict, deque

LOG_ENV = {"GLOG_v": "3", "MS_SUBMODULE_LOG_v": "{ME:0,DEVICE:0}", "GLOG_logtostderr": "1",
           "MS_DEV_RUNTIME_CONF": "memory_statistics:True"}
_PID = re.compile(r"^\[[A-Z]+\] [A-Z_]+\((\d+),")
_ALLOC = re.compile(r" size:(\d+) .*?ptr:(0x[0-9a-f]+) .*?node:(\S+) index:\d+")
_FREE = re.compile(r"Free memory from device address:\S+ ptr:(0x[0-9a-f]+)")
_REPORTED = re.compile(r"(?<!actual )peak used mem:(\d+)M")


class PoolReplay:
    """The pool's use replayed from the runtime's log lines, per process: :meth:`feed` each line; ``peak`` (bytes),
    ``at_peak`` (the records alive at the peak: ``[number, freed_after, size, node]``, ``freed_after`` None while
    alive) of the process that peaked highest."""

    def __init__(self):
        self.live, self.used, self.count = defaultdict(dict), Counter(), Counter()  # per process
        self.peak, self.at_peak, self.pid = 0, [], None

    def feed(self, line):
        """Replay one log line; returns whether it was an allocation or a release."""
        pid = _PID.match(line)
        if pid is None:
            return False
        pid = pid.group(1)
        if "Op:Alloc memory" in line:
            found = _ALLOC.search(line)
            if found is None:
                return True
            self._release(pid, found.group(2))  # the pool handed the address out again: its last holder let go
            self.count[pid] += 1
            record = [self.count[pid], None, int(found.group(1)), found.group(3)]
            self.live[pid][found.group(2)] = record
            self.used[pid] += record[2]
            if self.used[pid] > self.peak:
                self.peak, self.pid = self.used[pid], pid
                self.at_peak = list(self.live[pid].values())
            return True
        if "Free memory from" in line:
            found = _FREE.search(line)
            if found is not None:
                self._release(pid, found.group(1))
            return True
        return False

    def _release(self, pid, ptr):
        record = self.live[pid].pop(ptr, None)
        if record is not None:
            record[1] = self.count[pid]
            self.used[pid] -= record[2]


def scope(node, depth):
    """The first ``depth`` parts of a node name, without the class suffixes and op numbers."""
    parts = [re.sub(r"-op\d+$", "", p) for p in node.split("/")[:depth]]
    return "/".join(p.split("-")[0] if i else p for i, p in enumerate(parts))


def report(replay, min_mib, depth):
    """The peak, the tensors alive there of at least ``min_mib``, and the live memory per scope, as lines."""
    mib = 2.0 ** 20
    lines = [f"pool peak in use: {replay.peak / mib:.1f} MiB (process {replay.pid}), {len(replay.at_peak)} tensors "
             f"alive; those of at least {min_mib:g} MiB (allocation, freed after allocation, MiB, node):"]
    for number, freed, size, node in sorted(replay.at_peak):
        if size >= min_mib * mib:
            lines.append(f"  {number:7d} {freed if freed else '-':>7} {size / mib:8.1f}  {node}")
    per_scope = Counter()
    for _, _, size, node in replay.at_peak:
        per_scope[scope(node, depth)] += size
    lines.append("live at the peak per scope (MiB):")
    lines += [f"  {size / mib:8.1f}  {name}" for name, size in per_scope.most_common(25)]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="python bench/pool_peak.py [--min_mib N] [--depth N] -- COMMAND ...")
    parser.add_argument("--min_mib", type=float, default=16.0, help="list the live tensors of at least this size")
    parser.add_argument("--depth", type=int, default=4, help="node name parts per scope in the summary")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --, e.g. -- python bench/train_step.py --model osmis --size 64")
    replay, tail = PoolReplay(), deque(maxlen=40)
    proc = subprocess.Popen(command, env=dict(os.environ, **LOG_ENV), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")

    def read_log():
        for line in proc.stderr:
            if not replay.feed(line) and not _PID.match(line):
                tail.append(line)  # the log's own continuation lines are here too: shown only on failure

    reader = threading.Thread(target=read_log)
    reader.start()
    reported = 0  # MiB, MindSpore's own figure
    for line in proc.stdout:
        sys.stdout.write(line)
        reported = max([reported] + [int(m) for m in _REPORTED.findall(line)])
    reader.join()
    proc.wait()
    if proc.returncode:
        sys.stdout.write("".join(tail))
        print(f"the command failed (exit status {proc.returncode}); the last lines of its stderr are above")
    if replay.pid is None:
        print("no allocations logged: the command ran no MindSpore graph or kernel")
        return proc.returncode
    print("\n".join(report(replay, args.min_mib, args.depth)))
    if replay.peak < 0.5 * reported * 2 ** 20:
        print(f"MindSpore's pool reports a peak of {reported} MiB: the replay misses the kernel outputs of a graph "
              f"run on a static memory plan (laid out before the run, not logged one by one: "
              f"common.runtime.plan_memory_statically, which OSMIS's train step takes at 64x64 and below)")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
