"""Start a server as a subprocess and wait until it is ready: used by the test fixtures,
the eval command (--serve) and the benchmarks. Stdlib only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """`with LocalServer(["--enforce-eager"]) as srv: srv.v1 …` — greyelephant by default,
    or any command (`cmd=`) with its readiness path."""

    def __init__(self, args: list[str] = (), *, port: int | None = None, log_path: Path | None = None,
                 cmd: list[str] | None = None, ready_path: str = "/ready", timeout: float = 600,
                 cwd: str | None = None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.v1 = f"{self.base}/v1"
        self.cmd = cmd or [sys.executable, "-m", "greyelephant", "serve"]
        self.cmd = [*self.cmd, "--port", str(self.port), *args]
        self.ready_path = ready_path
        self.timeout = timeout
        self.log_path = Path(log_path) if log_path else Path(os.devnull)
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> LocalServer:
        self._log = open(self.log_path, "w")
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.cwd, env=env, start_new_session=True)
        deadline = time.time() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return self
            except Exception:
                pass
            if time.time() > deadline:
                self.stop()
                raise TimeoutError(f"server not ready after {self.timeout} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        finally:
            self._log.close()
            self.proc = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
