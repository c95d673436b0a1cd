"""A vLLM general plugin (entry point ``vllm.general_plugins``): vLLM runs ``register`` in
each of its processes. In the engine processes a greyelephant server starts
(``GREYELEPHANT_SERVER_PID`` set, and not the server itself), it moves the process out of
the server's process group, so that a signal sent to the whole group (Ctrl-C, ``kill --
-PGID``) reaches the server alone: the server drains its requests, then stops the engine
itself (server/drain.py). The process also asks the kernel for SIGTERM when its parent
dies, so an engine never outlives its server. Linux only; elsewhere, or outside a
greyelephant server, it does nothing.
"""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger("greyelephant.engine")
SERVER_PID_ENV = "GREYELEPHANT_SERVER_PID"


def register() -> None:
    server = os.environ.get(SERVER_PID_ENV)
    if not server or not server.isdigit() or os.getpid() == int(server):
        return
    try:
        if os.getpgid(0) != os.getpgid(int(server)):
            return  # already out (e.g. a worker of a detached engine core)
        os.setpgid(0, 0)
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent is already gone
            os.kill(os.getpid(), signal.SIGTERM)
    except (OSError, AttributeError, ProcessLookupError) as exc:
        logger.warning("engine process %d stays in the server's process group (%s): a "
                       "signal to the whole group stops it at once", os.getpid(), exc)
