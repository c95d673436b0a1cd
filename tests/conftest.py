"""Shared fixtures. One real server (vLLM engine + the embedded model) per test session,
started as a subprocess through the public CLI and shared by integration, e2e and client
tests."""

from __future__ import annotations

import os
from pathlib import Path

# Kernel tests run Triton through its CPU interpreter. The flag must be set before the
# first @triton.jit function is defined anywhere in the session (vLLM and the kernels
# package define some on import), so it is set here, before any test module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import httpx
import pytest
from hypothesis import settings

from greyelephant.launcher import LocalServer

# Hypothesis runs without its per-example deadline: timings belong in benchmarks, not in
# tests, and `make test` runs the engine tests beside the others (scripts/test.sh), so an
# example's wall-clock time says nothing about the code.
settings.register_profile("greyelephant", deadline=None)
settings.load_profile("greyelephant")

REPO = Path(__file__).resolve().parents[1]
ADMIN_KEY = "test-admin-key"
# LoRA is enabled so that adapters can be loaded at run time (tests/integration/test_adapters.py).
SERVER_ARGS = ["--enforce-eager", "--max-model-len", "2048", "--admin-key", ADMIN_KEY,
               "--max-body-bytes", str(256 * 1024), "--seed", "0",
               "--enable-lora", "--max-lora-rank", "16"]


@pytest.fixture(scope="session")
def model_dir() -> str:
    """The embedded model, converted once (idempotent)."""
    from greyelephant.model_store import prepare_embedded_model

    return str(prepare_embedded_model().path)


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory):
    """A real greyelephant server; its log tail is in the error if it fails to start."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    # run-time adapter loads may read from the session's temporary directory (the tests'
    # adapters live there) and the shipped adapters
    from greyelephant.shipped import shipped_root

    roots = ["--adapter-root", str(tmp_path_factory.getbasetemp()),
             "--adapter-root", str(shipped_root())]
    with LocalServer([*SERVER_ARGS, *roots], log_path=log, cwd=str(REPO), timeout=600) as srv:
        yield {"base": srv.base, "v1": srv.v1, "model": "SmolLM2-135M-Instruct",
               "admin_key": ADMIN_KEY, "log": log, "pid": srv.proc.pid}


@pytest.fixture(scope="session")
def http(server):
    with httpx.Client(base_url=server["base"], timeout=120) as client:
        yield client


def pytest_collection_modifyitems(config, items):
    """Every test that uses the shared server carries the `engine` marker.

    `make test` (scripts/test.sh) selects on that marker to run the engine tests in one
    process and the rest in another; an unmarked test using the server would start a
    second engine in the other process. Failing at collection keeps the split honest.
    """
    unmarked = [item.nodeid for item in items
                if "server" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("engine") is None]
    if unmarked:
        raise pytest.UsageError(
            "tests that use the shared server must be marked `engine` "
            f"(pytestmark = pytest.mark.engine): {unmarked}")
