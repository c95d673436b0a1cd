"""Event-loop stall watchdog.

Every request of the server is served by one asyncio event loop; anything that blocks it
(a synchronous call that waits, a long computation, a C call that holds the GIL) stalls
every connection at once, and a connection that waits long enough can be closed under its
request (uvicorn's keep-alive timer fires before the loop reads the request that arrived).
The watchdog makes such a stall visible:

* the loop beats a heartbeat every ``interval_s``;
* a daemon thread watches it; when the loop has not beaten for ``threshold_s``, the thread
  logs a warning with the loop thread's stack at that moment (once per stall);
* when the loop runs again, the beat logs how long the stall lasted, counts it in
  ``greyelephant_event_loop_stalls_total`` and records every beat's lateness in the
  ``greyelephant_event_loop_lag_seconds`` histogram.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

logger = logging.getLogger("greyelephant.server")


class LoopWatchdog:
    """Heartbeat on the running loop plus a watcher thread; ``start`` it on the loop to
    watch, ``stop`` it before the loop closes."""

    def __init__(self, metrics, threshold_s: float = 1.0, interval_s: float = 0.1):
        if not 0 < interval_s < threshold_s:
            raise ValueError("the watchdog needs 0 < interval_s < threshold_s")
        self.metrics = metrics
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._last_beat = time.monotonic()
        self._stall_logged = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching `loop`; call from the loop's own thread."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._last_beat = time.monotonic()
        self._handle = loop.call_later(self.interval_s, self._beat)
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _beat(self) -> None:
        now = time.monotonic()
        lag = max(0.0, now - self._last_beat - self.interval_s)
        self.metrics.loop_lag.observe(lag)
        if lag >= self.threshold_s:
            self.metrics.loop_stalls.inc()
            logger.warning("event loop was blocked for %.2f s (no request or connection was "
                           "served meanwhile)", lag)
        self._last_beat = now
        self._stall_logged = False
        if not self._stop.is_set():
            self._handle = self._loop.call_later(self.interval_s, self._beat)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            silent = time.monotonic() - self._last_beat - self.interval_s
            if silent >= self.threshold_s and not self._stall_logged:
                self._stall_logged = True
                logger.warning("event loop blocked for %.2f s so far; its thread is at:\n%s",
                               silent, self.loop_stack())

    def loop_stack(self) -> str:
        """The loop thread's current Python stack, innermost call last."""
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "(the loop thread has no Python frame)"
        return "".join(traceback.format_stack(frame)).rstrip()
