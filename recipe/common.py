"""Shared plumbing for the recipe stages: JSONL, deterministic splits, provenance, and a
served model to talk to (an existing server via ``--base-url``, or one started here).

Every stage talks to the project's own server over HTTP, so the data is generated with
exactly the prompts, directive and ban that the server applies at inference time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from greyelephant.invocation import command_line

from .data_check import load_jsonl

__all__ = ["load_jsonl", "write_jsonl", "unit_hash", "split_gold", "provenance",
           "served", "wait_ready", "text_of", "ChatClient", "add_server_args", "SERVER_ARGS"]

REPO = Path(__file__).resolve().parents[1]
# A small KV cache (the shared CPU box has little free memory) and eager mode (fast start).
# A stage's server serves exactly the adapters the stage names (not the shipped ones: the
# eval names the adapter it measures, the data and label stages use the base model), and
# reports a steered text that still names an avoided entity instead of failing the request
# (the data stage's filters and the eval's detector count it; one 500 would end a batch).
SERVER_ARGS = ["--enforce-eager", "--max-model-len", "2048", "--gpu-memory-utilization", "0.12",
               "--seed", "0", "--no-shipped-adapters", "--on-violation", "report"]


START_ATTEMPTS = 3


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def unit_hash(*parts: Any) -> float:
    """A stable number in [0, 1) from the parts (sha256; independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_gold(records: list[dict[str, Any]], held_out: float = 0.3,
               salt: str = "gold-split-v1") -> tuple[list[dict], list[dict]]:
    """(train, held-out): a record is held out when ``unit_hash(salt, id) < held_out``.
    Deterministic, and stable when records are added or reordered."""
    train, test = [], []
    for r in records:
        (test if unit_hash(salt, r["id"]) < held_out else train).append(r)
    return train, test


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "command": command_line(argv),
        "git_commit": git_commit(),
    }


def add_server_args(ap) -> None:
    ap.add_argument("--base-url", default=None,
                    help="use a running server (…/v1); default: start one for this command")
    ap.add_argument("--api-key", default=os.environ.get("GREYELEPHANT_API_KEY"))
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra flag for the started server (repeatable)")
    ap.add_argument("--model", default=None,
                    help="model or adapter name to query (default: the server's base model)")
    ap.add_argument("--concurrency", type=int, default=8)


@contextlib.contextmanager
def served(base_url: str | None, extra_args: list[str] = (), log_path: Path | None = None
           ) -> Iterator[str]:
    """Yield a ``…/v1`` URL: ``base_url`` as is, or a server started for the block."""
    if base_url:
        base_url = base_url.rstrip("/")
        wait_ready(base_url)
        yield base_url
        return
    import time

    from greyelephant.launcher import LocalServer

    # On a shared box the engine can fail to start when others hold the memory for a
    # moment ("Available memory ... is less than desired"): try a few times.
    for attempt in range(1, START_ATTEMPTS + 1):
        srv = LocalServer([*SERVER_ARGS, *extra_args], log_path=log_path, cwd=str(REPO),
                          timeout=900)
        try:
            srv.start()
            break
        except RuntimeError as exc:
            if attempt == START_ATTEMPTS:
                raise
            print(f"server start failed (attempt {attempt}), retrying in 60 s: "
                  f"{str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
            time.sleep(60)
    try:
        yield srv.v1
    finally:
        srv.stop()


def wait_ready(v1_url: str, timeout: float = 900) -> None:
    """Block until ``GET <root>/ready`` answers 200 (a server that is still starting)."""
    import time
    import urllib.request

    root = v1_url[:-3] if v1_url.endswith("/v1") else v1_url
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(root + "/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{root} not ready after {timeout} s")
        time.sleep(1)


class ChatClient:
    """Async chat completions through the official ``openai`` SDK (the project's client
    builds the request: every field but ``messages``/``model`` travels in ``extra_body``),
    with bounded concurrency; returns the response as a dict, the server's ``steering``
    report included."""

    def __init__(self, base_url: str, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 900):
        from greyelephant.client import AsyncClient

        self._client = AsyncClient(base_url, api_key, timeout=timeout, max_retries=0)
        self._limit = asyncio.Semaphore(concurrency)
        self.model: str | None = None

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self._client.close()

    async def base_model(self) -> str:
        if self.model is None:
            models = await self._client.models()
            self.model = next(m.id for m in models if m.parent is None)
        return self.model

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        model = body.pop("model", None) or await self.base_model()
        async with self._limit:
            try:
                return await self._client.chat_json(body.pop("messages"), model=model, **body)
            except Exception as exc:  # the SDK's typed errors, with the server's message
                raise RuntimeError(f"chat request failed: {exc}") from exc


def text_of(response: dict[str, Any]) -> str:
    return response["choices"][0]["message"]["content"] or ""
