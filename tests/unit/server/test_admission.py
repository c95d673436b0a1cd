"""Admission control, deadlines and the drain gate, without an engine."""

import asyncio

import pytest

from greyelephant.server.admission import Admission, guarded_stream, within
from greyelephant.server.errors import APIError


class FakeMetric:
    def __init__(self):
        self.value = 0
        self.by = {}

    def inc(self, n=1):
        self.value += n

    def set(self, v):
        self.value = v

    def labels(self, *names):
        return self.by.setdefault(names, FakeMetric())


class FakeMetrics:
    def __init__(self):
        self.admitted, self.rejected, self.timeouts = FakeMetric(), FakeMetric(), FakeMetric()


def test_admits_up_to_the_limit_then_429_with_retry_after():
    m = FakeMetrics()
    adm = Admission(6, m)  # e.g. --max-num-seqs 4 --max-queued-requests 2
    tickets = [adm.admit() for _ in range(6)]
    with pytest.raises(APIError) as err:
        adm.admit()
    assert err.value.status == 429 and err.value.code == "queue_full"
    assert err.value.headers == {"Retry-After": "1"}
    assert m.rejected.by[("queue_full",)].value == 1 and m.admitted.value == 6
    tickets[0].release()
    tickets[0].release()  # idempotent
    adm.admit()  # a slot is free again
    assert adm.admitted == 6


def test_n_choices_count_as_sequences_but_one_big_request_still_runs_alone():
    adm = Admission(6, FakeMetrics())
    t = adm.admit(4)
    with pytest.raises(APIError):
        adm.admit(3)
    t.release()
    adm.admit(16).release()  # larger than the limit, but nothing else is admitted


def test_draining_refuses_with_503():
    adm = Admission(None, FakeMetrics())
    adm.draining = True
    with pytest.raises(APIError) as err:
        adm.admit()
    assert err.value.status == 503 and err.value.code == "server_shutting_down"


async def test_deadline_turns_into_504_and_cancels_the_work():
    cancelled = asyncio.Event()

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    m = FakeMetrics()
    with pytest.raises(APIError) as err:
        await within(slow(), 0.05, m)
    assert err.value.status == 504 and err.value.code == "request_timeout"
    assert cancelled.is_set() and m.timeouts.value == 1
    assert await within(asyncio.sleep(0, result=7), None, m) == 7


async def test_a_stream_ends_with_an_error_event_and_releases_its_ticket():
    adm = Admission(2, FakeMetrics())

    async def events():
        yield b"data: 1\n\n"
        await asyncio.sleep(10)
        yield b"data: 2\n\n"

    ticket = adm.admit()
    out = [c async for c in guarded_stream(events(), ticket, 0.05, adm.metrics)]
    assert out[0] == b"data: 1\n\n" and b"request_timeout" in out[1]
    assert out[-1] == b"data: [DONE]\n\n" and adm.admitted == 0

    async def failing():
        yield b"data: 1\n\n"
        raise APIError(500, "steering failed", code="steering_failed")

    out = [c async for c in guarded_stream(failing(), adm.admit(), None, adm.metrics)]
    assert b"steering_failed" in out[1] and adm.admitted == 0
