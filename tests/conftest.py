"""Shared fixtures. One real server (vLLM engine + the embedded model) per test session,
started as a subprocess through the public CLI and shared by integration and e2e tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
ADMIN_KEY = "test-admin-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def model_dir() -> str:
    """The embedded model, converted once (idempotent)."""
    from greyelephant.server.model_store import prepare_embedded_model

    return str(prepare_embedded_model().path)


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory):
    """Base URL (…/v1) of a real greyelephant server; its log is printed on failure to start."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [sys.executable, "-m", "greyelephant", "serve", "--port", str(port),
           "--enforce-eager", "--max-model-len", "2048", "--admin-key", ADMIN_KEY,
           "--max-body-bytes", str(256 * 1024), "--seed", "0"]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"server not ready:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield {"base": base, "v1": f"{base}/v1", "model": "SmolLM2-135M-Instruct",
               "admin_key": ADMIN_KEY, "log": log_path}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="session")
def http(server):
    with httpx.Client(base_url=server["base"], timeout=120) as client:
        yield client
