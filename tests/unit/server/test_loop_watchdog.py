"""The event-loop watchdog: a blocked loop is logged while it is blocked (with the loop's
stack) and after (with its length), and counted; a loop that runs freely is not."""

import asyncio
import logging
import time

import pytest

from greyelephant.server.loop_watchdog import LoopWatchdog


class _Counter:
    def __init__(self):
        self.value = 0

    def inc(self):
        self.value += 1


class _Histogram:
    def __init__(self):
        self.values = []

    def observe(self, v):
        self.values.append(v)


class _Metrics:
    def __init__(self):
        self.loop_lag = _Histogram()
        self.loop_stalls = _Counter()


def block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)


async def _run(metrics, body, threshold_s=0.2):
    dog = LoopWatchdog(metrics, threshold_s=threshold_s, interval_s=0.02)
    dog.start(asyncio.get_running_loop())
    try:
        await asyncio.sleep(0.1)
        body()
        await asyncio.sleep(0.1)
    finally:
        dog.stop()


def test_a_blocked_loop_is_logged_with_its_stack_and_counted(caplog):
    metrics = _Metrics()
    with caplog.at_level(logging.WARNING, logger="greyelephant.server"):
        asyncio.run(_run(metrics, lambda: block_the_loop_for(0.6)))
    during = [r.getMessage() for r in caplog.records if "so far" in r.getMessage()]
    after = [r.getMessage() for r in caplog.records if "was blocked for" in r.getMessage()]
    assert len(during) == 1 and "block_the_loop_for" in during[0]
    assert len(after) == 1
    assert metrics.loop_stalls.value == 1
    assert max(metrics.loop_lag.values) >= 0.5


def test_a_free_loop_is_not_reported(caplog):
    metrics = _Metrics()
    with caplog.at_level(logging.WARNING, logger="greyelephant.server"):
        # a threshold well above what scheduling noise on a loaded machine can cause
        asyncio.run(_run(metrics, lambda: None, threshold_s=2.0))
    assert not caplog.records
    assert metrics.loop_stalls.value == 0
    assert len(metrics.loop_lag.values) >= 5  # it beat all along


def test_the_interval_must_be_shorter_than_the_threshold():
    with pytest.raises(ValueError):
        LoopWatchdog(_Metrics(), threshold_s=0.1, interval_s=0.1)
