"""Admission control and per-request deadlines.

* **Admission.** The engine runs at most ``max_num_seqs`` sequences at once; the server
  admits at most ``max_queued_requests`` more, waiting for a slot. A request with ``n``
  choices takes ``n`` sequences. Beyond that, a request is refused at once with 429 (OpenAI's
  error shape, ``Retry-After``). Admission happens once, at the HTTP handler: the engine
  requests an admitted request makes later (``n > 1`` chains, critique-revise drafts and
  revisions, rollback continuations) are never refused mid-request.
* **Deadline.** With a request timeout, an admitted request that has not finished by then
  is cancelled (which aborts its engine work) and answers 504 ``request_timeout`` — a final
  SSE error event when streaming.
* **Drain.** While the server drains on shutdown (:mod:`.cli`), new requests get 503
  ``server_shutting_down``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

from .errors import APIError, sse_error

T = TypeVar("T")
RETRY_AFTER_S = 1


@dataclass
class Admission:
    """Counts admitted engine sequences against ``limit`` (None: no limit)."""

    limit: int | None
    metrics: object
    admitted: int = 0
    draining: bool = False
    prepared: int = 0  # prepared rollback continuations running (server/rollback.py)

    def admit(self, n: int = 1) -> Ticket:
        if self.draining:
            self.metrics.rejected.labels("draining").inc()
            raise APIError(503, "the server is shutting down; retry on another replica",
                           code="server_shutting_down")
        if self.limit is not None and self.admitted + n > self.limit and self.admitted > 0:
            self.metrics.rejected.labels("queue_full").inc()
            raise APIError(429, f"the server is at capacity ({self.admitted} sequences "
                                f"admitted, the limit is {self.limit}); retry shortly",
                           code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
        self.admitted += n
        self.metrics.admitted.set(self.admitted)
        return Ticket(self, n)


    def reserve_prepared(self, slots: int | None) -> bool:
        """Room for one more prepared rollback continuation: the admitted sequences and
        the prepared ones stay below the engine's ``slots`` (None: unknown, no room), so a
        prepared continuation never queues in front of an admitted request."""
        if slots is None or self.admitted + self.prepared >= slots:
            return False
        self.prepared += 1
        return True

    def release_prepared(self) -> None:
        self.prepared -= 1


@dataclass
class Ticket:
    admission: Admission
    n: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission.admitted -= self.n
            self.admission.metrics.admitted.set(self.admission.admitted)


def timeout_error(seconds: float) -> APIError:
    return APIError(504, f"the request did not finish within the server's limit of "
                         f"{seconds:g} s (--request-timeout); its work was stopped",
                    code="request_timeout")


async def within(work: Awaitable[T], seconds: float | None, metrics) -> T:
    """``await work``, cancelled after ``seconds`` (None: no limit) → 504."""
    if not seconds:
        return await work
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        metrics.timeouts.inc()
        raise timeout_error(seconds) from None


async def guarded_stream(events: AsyncIterator[bytes], ticket: Ticket, seconds: float | None,
                         metrics) -> AsyncIterator[bytes]:
    """An SSE stream that holds its admission ticket until it ends, stops at the deadline,
    and turns an error raised after the first byte into a final error event."""
    deadline = time.monotonic() + seconds if seconds else None
    it = aiter(events)
    try:
        while True:
            try:
                if deadline is None:
                    chunk = await anext(it)
                else:
                    chunk = await asyncio.wait_for(anext(it), max(0.0, deadline - time.monotonic()))
            except StopAsyncIteration:
                return
            except TimeoutError:
                metrics.timeouts.inc()
                yield sse_error(timeout_error(seconds))
                yield b"data: [DONE]\n\n"
                return
            except APIError as exc:
                yield sse_error(exc)
                yield b"data: [DONE]\n\n"
                return
            yield chunk
    finally:
        ticket.release()
        await _close(it)


async def _close(it) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001 - closing a finished or failed stream
            pass
