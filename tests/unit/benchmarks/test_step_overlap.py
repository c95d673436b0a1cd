"""The forward-overlap benchmark: on a CPU it runs as a labelled dry run (nothing in
flight), and the decode loop calls its in-flight hook once at the start of each timed
step, before ``apply``."""

import json

from greyelephant.benchmarks import step_overlap
from greyelephant.benchmarks.step_phases import make_loop


def test_a_cpu_run_is_a_labelled_dry_run_with_every_column(tmp_path):
    assert step_overlap.main(["--device", "cpu", "--batches", "2,3", "--steps", "4",
                              "--warmup", "2", "--out", str(tmp_path)]) == 0
    got = json.loads((tmp_path / "step_overlap-cpu.json").read_text())
    assert got["meta"]["dry_run"] is True and got["meta"]["sleep_cycles"] == 0
    assert [r["B"] for r in got["rows"]] == [2, 3]
    for r in got["rows"]:
        assert r["host_ms"] > 0 and r["steered_ms"] > 0 and r["forward_ms"] > 0
        assert r["late_ms"] > 0
        assert abs(r["exposed_ms"] - (r["steered_ms"] - r["forward_ms"])) < 1e-3
        assert abs(r["exposed_late_ms"] - (r["late_ms"] - r["forward_ms"])) < 1e-3
    md = (tmp_path / "step_overlap-cpu.md").read_text()
    assert "dry run on a CPU" in md and "| 3 |" in md


def test_the_in_flight_hook_runs_before_apply_in_each_timed_step():
    loop = make_loop(2)
    events = []
    apply = loop.batch.apply
    loop.batch.apply = lambda x: (events.append("apply"), apply(x))[1]
    loop.in_flight = lambda: events.append("in flight")
    loop.step()
    loop.in_flight = None
    loop.step()
    assert events == ["in flight", "apply", "apply"]


def test_runner_v2_order_on_a_cpu_stages_every_steered_step(tmp_path):
    """--runner v2: the adapter around its core, fed as runner V2 feeds it; every steered
    step is planned from the staged read, the read-back mode's column is there."""
    assert step_overlap.main(["--device", "cpu", "--batches", "3", "--steps", "6",
                              "--warmup", "3", "--runner", "v2", "--out", str(tmp_path)]) == 0
    got = json.loads((tmp_path / "step_overlap-cpu-v2.json").read_text())
    assert got["meta"]["runner"] == "v2" and got["meta"]["dry_run"] is True
    (row,) = got["rows"]
    assert row["staged_share"] == 1.0 and row["read_back_ms"] > 0
    assert abs(row["exposed_read_back_ms"] - (row["read_back_ms"] - row["forward_ms"])) < 1e-3
    assert "staged read served" in (tmp_path / "step_overlap-cpu-v2.md").read_text()


def test_v2_feed_hands_the_adapter_the_tokens_the_loop_chose():
    """The V2 feed's commits are what the loop's rows chose: after some steps (restarts
    included) each slot's output as the adapter saw it is the loop's output (a request
    that restarted at the last step: none yet, on either side), and every step was
    planned from the staged read."""
    from greyelephant.control.logits_processor_v2 import steered_output

    loop, feed = step_overlap.make_v2_loop(4, "cpu")
    loop.in_flight = feed.before_forward
    seen = 0
    for _ in range(40):
        loop.step()
        seen += sum(map(len, (steered_output(feed.adapter, s) for s in range(4))))
        for slot, out in enumerate(loop.outs):
            assert steered_output(feed.adapter, slot) == out
    assert feed.adapter.staged_steps == 40 and feed.batch.steps == 40 and seen > 0
    assert loop.restarts > 0  # (the restarts' requests were set up and fed too)
