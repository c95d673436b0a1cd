"""The per-step benchmark's measuring parts: the phase split and one small real run."""

import json

import pytest

from greyelephant.benchmarks import steering_step as ss


class _FakeBatch:
    def __init__(self):
        self.calls = []

    def controls(self, idx, vocab):
        self.calls.append(("controls", idx, vocab))
        return "plan"

    def _check(self, *args):
        self.calls.append(("_check", args))
        raise RuntimeError("check failed")

    def _to_device(self, arr):  # older code's name of the send phase
        self.calls.append(("_to_device", arr))
        return arr


def test_phase_timer_wraps_the_batch_methods_and_resets_on_take():
    batch = _FakeBatch()
    timer = ss.PhaseTimer(batch)
    assert batch.controls([0, 1], 7) == "plan"  # arguments and result pass through
    with pytest.raises(RuntimeError, match="check failed"):  # errors too, still timed
        batch._check(1, 2)
    assert batch._to_device("a") == "a"
    assert batch.calls == [("controls", [0, 1], 7), ("_check", (1, 2)), ("_to_device", "a")]
    first = timer.take()
    assert set(first) == {"controls", "_check", "_send"}
    assert first["controls"] > 0 and first["_check"] > 0 and first["_send"] > 0
    assert timer.take() == {"controls": 0.0, "_check": 0.0, "_send": 0.0}


def test_measure_splits_real_steps_into_phases():
    index = ss.smollm2_vocab()
    tokens = ss.encode(index, ss.TEXT * 3)
    r = ss.measure(index, tokens, "cpu", b=4, steered=4, table=True, steps=5, warmup=2)
    ph = r["phases_median_ms"]
    assert r["B"] == 4 and r["steered"] == 4 and r["path"] == "table"
    assert ph["controls"] > 0  # every step plans the steered rows
    assert ph["check"] >= 0 and ph["rest"] >= 0
    # medians of parts of one step: each part is at most the step
    assert max(ph.values()) <= r["p90_ms"] + 1e-3


def test_gpu_summary_pairs_before_and_after_by_round():
    """steering_gpu_summary reads the rounds of a steering_gpu.sh log (table path rows
    only) and reports each round's after/before ratio and the all-steered phases."""
    from greyelephant.benchmarks import steering_gpu_summary as summ

    def row(b, steered, ms, path="table"):
        return json.dumps({"vocab": "v", "B": b, "steered": steered, "path": path,
                           "median_ms": ms, "phases_median_ms": {
                               "controls": ms / 2, "check": 0.1, "send": 0.05,
                               "rest": 0.01}})

    log = "\n".join(["noise", "== before, round 1", row(64, 64, 2.0), row(64, 64, 9.0, "rows"),
                     "== after, round 1", row(64, 64, 1.0),
                     "== before, round 2", row(64, 64, 4.0),
                     "== after, round 2", row(64, 64, 3.0), "trailing"])
    res = summ.runs(log)
    assert set(res) == {("before", "1"), ("after", "1"), ("before", "2"), ("after", "2")}
    assert res[("before", "1")][("v", 64, 64)]["median_ms"] == 2.0  # not the rows path
    text = summ.summary(log)
    assert "| v | 64 | 64 | 2.000 | 1.000 | 0.50 | 4.000 | 3.000 | 0.75 |" in text
    assert "| v | 64 | after r2 | 1.500 | 0.100 | 0.050 | 0.010 | 3.000 |" in text
