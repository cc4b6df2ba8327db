"""``bench/train_step.py --paired``: the served reference's protocol and the per-pair ratios."""
import argparse
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")

import train_step  # noqa: E402  (bench/train_step.py: standard library only at import)

REFERENCE = """import sys, time
sys.path.insert(0, {bench!r})
from train_step import serve
assert sys.argv[1:] == ["--serve"], sys.argv
print("params 7")
held = b"x" * (300 * 2 ** 20)  # 300 MiB written: resident
serve(lambda: time.sleep(0.01), warmup=1)
"""


def test_a_served_reference_times_one_step_per_request(tmp_path):
    script = tmp_path / "reference.py"
    script.write_text(REFERENCE.format(bench=BENCH))
    held = b"x" * (1 << 30)  # 1 GiB written in this process before it starts the reference
    reference = train_step.ServedReference([str(script)])
    reference.wait_ready()
    times = [reference.step() for _ in range(3)]
    peak_gb = reference.close()
    assert reference.lines == ["params 7"]  # what it printed before "ready"
    assert len(times) == 3 and min(times) >= 10.0  # each answer is one 10 ms step, timed in the child
    assert 300 / 1024 < peak_gb < len(held) / 2 ** 30  # the child's own peak: its 300 MiB in, our 1 GiB not


# a shared reference in the form of ../shared/bench/torch_pix2pix_step.py: a step function, its own timing at import
SCRIPT_REFERENCE = """import sys, time
size = int(sys.argv[1])
def step():
    time.sleep(size / 1000)
step()
print("own timing", sys.argv[1:])
"""


def test_a_reference_script_without_a_serve_mode_is_served_through_its_step_function(tmp_path):
    script = tmp_path / "torch_pix2pix_step.py"
    script.write_text(SCRIPT_REFERENCE)
    args = argparse.Namespace(model="pix2pix", size=20, steps=2, paired=True, precision="f32")
    reference = train_step.ServedReference(train_step.torch_command(args, str(script)))
    reference.wait_ready()
    times = [reference.step() for _ in range(2)]
    reference.close()
    assert reference.lines == ["own timing ['20']"]  # it ran as written, without the --serve flag in its argv
    assert min(times) >= 20.0  # each answer is one call of its step(): a 20 ms sleep


def test_pairs_alternate_which_side_goes_first_and_give_per_pair_ratios(monkeypatch):
    calls, ours = [], iter([50.0, 300.0, 150.0])

    class Reference:
        def step(self):
            calls.append("reference")
            return 200.0

    def timed(step):
        calls.append("ours")
        return next(ours)

    monkeypatch.setattr(train_step, "timed_ms", timed)
    ours_ms, reference_ms, ratios = train_step.paired_ms(lambda: None, Reference(), 3, warmup=0)
    assert calls == ["reference", "ours", "ours", "reference", "reference", "ours"]
    assert (ours_ms, reference_ms, ratios) == (150.0, 200.0, [0.25, 0.75, 1.5])
