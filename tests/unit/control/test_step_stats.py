"""The step counters the engine's processes share with the server (control/step_stats.py)."""

import itertools
import os

import numpy as np
import pytest

from greyelephant.control import step_stats
from greyelephant.control.step_stats import FIELDS, NAMES, STATS_DIR_ENV, StepStats, read_stats


def test_memory_only_without_the_directory(monkeypatch):
    monkeypatch.delenv(STATS_DIR_ENV, raising=False)
    stats = StepStats.for_this_process()
    assert stats.path is None
    stats.publish(range(1, len(FIELDS) + 1))
    assert stats.as_dict() == dict(zip(NAMES, range(1, len(FIELDS) + 1), strict=True))


def test_the_server_reads_what_the_process_wrote(monkeypatch, tmp_path):
    monkeypatch.setenv(STATS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(step_stats, "_INSTANCES", itertools.count())  # (the first one)
    stats = StepStats.for_this_process()
    assert stats.path == tmp_path / f"steering-{os.getpid()}.stats"
    assert read_stats(tmp_path) == {str(os.getpid()): dict.fromkeys(NAMES, 0)}
    totals = [7, 1800, 1700, 1650, 3, 2, 6, 1]
    stats.publish(totals)
    assert read_stats(tmp_path) == {str(os.getpid()): dict(zip(NAMES, totals, strict=True))}
    stats.publish([t + 1 for t in totals])  # (overwritten in place: totals, not deltas)
    assert read_stats(str(tmp_path))[str(os.getpid())]["steps"] == 8


def test_partial_foreign_and_missing_files_are_skipped(tmp_path):
    assert read_stats(None) == {} and read_stats(tmp_path / "gone") == {}
    (tmp_path / "steering-1.stats").write_bytes(step_stats.MAGIC)  # still being created
    (tmp_path / "steering-2.stats").write_bytes(b"X" * (8 + 8 * len(FIELDS)))  # not ours
    (tmp_path / "other.txt").write_text("hello")
    good = StepStats(tmp_path / "steering-3.stats")
    good.publish([5] * len(FIELDS))
    assert read_stats(tmp_path) == {"3": dict.fromkeys(NAMES, 5)}


def test_an_unwritable_directory_falls_back_to_memory(monkeypatch, tmp_path):
    warned = []  # (the module's logger itself: other tests may stop propagation)
    monkeypatch.setattr(step_stats.logger, "warning", lambda msg, *a, **k: warned.append(msg))
    monkeypatch.setenv(STATS_DIR_ENV, str(tmp_path / "missing" / "dir"))
    stats = StepStats.for_this_process()
    assert stats.path is None and "cannot write step counters" in warned[0]
    stats.publish([1] * len(FIELDS))
    assert int(np.sum(stats.values)) == len(FIELDS)


def test_a_wrong_number_of_values_raises():
    with pytest.raises(ValueError):
        StepStats().publish([1, 2])


def test_a_second_processor_in_one_process_writes_its_own_file(monkeypatch, tmp_path):
    monkeypatch.setenv(STATS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(step_stats, "_INSTANCES", itertools.count())
    first, second = StepStats.for_this_process(), StepStats.for_this_process()
    first.publish([1] * len(FIELDS))
    second.publish([2] * len(FIELDS))
    pid = str(os.getpid())
    assert read_stats(tmp_path) == {pid: dict.fromkeys(NAMES, 1),
                                    f"{pid}-1": dict.fromkeys(NAMES, 2)}
