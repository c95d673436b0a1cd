"""A client that goes away cancels its work and ends as ClientDisconnected (status 499 in
the access log), not as an unhandled CancelledError that the ASGI server logs as an error."""

from __future__ import annotations

import asyncio

import pytest

from greyelephant.server.app import ClientDisconnected, until_disconnected


class FakeRequest:
    """The one method until_disconnected uses: receive() yields a disconnect after `after` s."""

    def __init__(self, after: float | None):
        self.after = after

    async def receive(self):
        if self.after is None:
            await asyncio.Event().wait()  # never disconnects
        await asyncio.sleep(self.after)
        return {"type": "http.disconnect"}


def test_disconnect_cancels_the_work_and_raises_client_disconnected():
    cancelled = []

    async def work():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(ClientDisconnected):
        asyncio.run(until_disconnected(FakeRequest(0.01), work()))
    assert cancelled == [True]


def test_work_that_finishes_first_returns_its_value():
    async def work():
        return 42

    assert asyncio.run(until_disconnected(FakeRequest(None), work())) == 42


def test_a_cancellation_of_the_caller_propagates_unchanged():
    async def main():
        async def work():
            await asyncio.sleep(60)

        outer = asyncio.ensure_future(until_disconnected(FakeRequest(None), work()))
        await asyncio.sleep(0.01)
        outer.cancel()
        await outer

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
