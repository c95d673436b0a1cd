"""lanes_engine_check's reading of the processor's step counters from /metrics."""

from greyelephant.benchmarks.lanes_engine_check import (
    COUNTERS,
    describe_counters,
    steering_counters,
)

METRICS = """# HELP greyelephant_steering_steps_total Decode steps that steered at least one row
# TYPE greyelephant_steering_steps_total counter
greyelephant_steering_steps_total{pid="11"} 50.0
greyelephant_steering_steps_total{pid="12"} 6.0
greyelephant_steering_row_steps_total{pid="11"} 4000.0
greyelephant_steering_fast_row_steps_total{pid="11"} 3000.0
greyelephant_steering_pooled_row_steps_total{pid="11"} 2000.0
greyelephant_steering_rollback_signals_total{pid="11"} 47.0
greyelephant_steering_rollbacks_total 99.0
greyelephant_steering_steps_created{pid="11"} 1.7e9
"""


def test_counters_are_summed_over_engine_processes_and_named_exactly():
    got = steering_counters(METRICS)
    assert set(got) == set(COUNTERS)
    assert got["steps"] == 56 and got["row_steps"] == 4000
    assert got["rollback_signals"] == 47  # (not the server's rollbacks_total)
    assert got["v2_staged_steps"] == 0


def test_the_description_gives_the_fast_path_share():
    text = describe_counters(steering_counters(METRICS))
    assert "4000 row steps, 3000 on the fast path (75.0%), 2000 pooled (50.0%)" in text
    assert "47 rollback signals" in text
    assert "0 row steps" in describe_counters(dict.fromkeys(COUNTERS, 0.0))
