"""Graceful drain on SIGTERM / SIGINT.

uvicorn stops accepting connections on the first signal and waits for in-flight responses;
this subclass adds what a deployment needs around it:

* ``/ready`` answers 503 and new requests get 503 ``server_shutting_down`` at once (the
  admission gate is closed; the listening socket stays open during the drain so that
  health checks see the 503);
* in-flight requests, streams included, run to completion for up to ``--drain-timeout``
  seconds; then uvicorn shuts down: the socket closes and what is still running is
  cancelled (uvicorn's ``timeout_graceful_shutdown``), which aborts its engine work;
* the engine stays up until then: its process left this process group when it started
  (``GREYELEPHANT_ENGINE_OWN_PGROUP``), so a signal sent to the whole group does not stop
  it early; the lifespan shutdown stops it after the drain;
* the process exits 0 (uvicorn re-raises the signal after shutdown, which would exit 143).

A second SIGINT forces the exit, as in uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType

import uvicorn

logger = logging.getLogger("greyelephant.server")


FINAL_GRACE_S = 2.0  # after the drain: uvicorn's own wait before cancelling what is left


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ctx, drain_timeout: float):
        config.timeout_graceful_shutdown = FINAL_GRACE_S
        super().__init__(config)
        self.ctx = ctx
        self.drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # not recorded in _captured_signals: the drain is the handling, exit status 0
        if self.ctx.admission.draining or self._loop is None:
            if sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C
            self.should_exit = True
            return
        self.ctx.admission.draining = True
        self.ctx.metrics.draining.set(1)
        logger.info("%s: draining (new requests get 503; in-flight ones have up to %g s)",
                    signal.Signals(sig).name, self.drain_timeout)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while self.ctx.admission.admitted > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = self.ctx.admission.admitted
        logger.info("drained (%s); shutting down", f"{left} requests still running, to be "
                    "aborted" if left else "no request in flight")
        self.should_exit = True
