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
