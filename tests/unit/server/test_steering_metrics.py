"""/metrics' steering step counters: read from the engine processes' stats files at each
scrape (server/metrics.py's SteeringStepCollector)."""

from prometheus_client import generate_latest

from greyelephant.control.step_stats import FIELDS, STATS_DIR_ENV, StepStats
from greyelephant.server.metrics import Metrics, SteeringStepCollector


def _samples(collector):
    return {(s.name, s.labels.get("pid")): s.value
            for family in collector.collect() for s in family.samples}


def test_each_engine_process_is_a_labelled_counter(monkeypatch, tmp_path):
    monkeypatch.setenv(STATS_DIR_ENV, str(tmp_path))
    StepStats(tmp_path / "steering-101.stats").publish(range(10, 10 + len(FIELDS)))
    StepStats(tmp_path / "steering-202.stats").publish([1] * len(FIELDS))
    got = _samples(SteeringStepCollector())
    assert got[("greyelephant_steering_steps_total", "101")] == 10
    assert got[("greyelephant_steering_row_steps_total", "101")] == 11
    assert got[("greyelephant_steering_v2_read_back_steps_total", "101")] == 10 + len(FIELDS) - 1
    assert got[("greyelephant_steering_fast_row_steps_total", "202")] == 1
    assert len(got) == 2 * len(FIELDS)


def test_no_engine_yet_exports_the_families_without_samples(monkeypatch):
    monkeypatch.delenv(STATS_DIR_ENV, raising=False)
    assert _samples(SteeringStepCollector()) == {}
    Metrics()  # (registers the collector in the default registry, once per process)
    text = generate_latest().decode()
    for name, _ in FIELDS:
        assert f"# TYPE greyelephant_steering_{name}_total counter" in text
