"""Soak test: a bounded run of mixed traffic against one server, on loopback only.

    python -m greyelephant.benchmarks.soak --preset short            # starts its own server
    python -m greyelephant.benchmarks.soak --preset full
    python -m greyelephant.benchmarks.soak --preset short --base-url http://127.0.0.1:8000

Presets: ``short`` (2 minutes of traffic, concurrency 8, warm-up 30 s; runs in CI through
tests/integration/test_soak.py) and ``full`` (20 minutes, concurrency 32, warm-up 3 min).
``--minutes`` and ``--concurrency`` override a preset up to the bounds (20 minutes, 32).

Traffic (each of C workers loops until the deadline; prompts and entities from the dev set,
benchmarks/data/pink_elephant_dev.jsonl):

* ``chat`` — plain /v1/chat/completions (greedy or sampled);
* ``steered`` — chat with ``steering: {avoid, prefer, strategies: [directive, logits]}``;
* ``stream`` — chat over SSE, half of them steered (directive + logits);
* ``critique_revise`` — chat with ``strategies: [critique_revise]``, a third streamed;
* ``completions`` — /v1/completions: one prompt or a batch of two, streamed or not, steered
  or not;
* ``cancel`` — requests the client abandons: a stream closed after 1–6 content chunks
  (plain / steered chat, completions), or a request dropped after 0.5–3 s before any
  content (non-streaming chat, a critique-revise stream). Cancelled requests ask for
  1,500 tokens with ``ignore_eos``, so one the server failed to free would still be running
  long after the traffic stops;
* ``invalid`` — a few malformed requests (expected 400).

Reported: request outcomes (5xx, connection failures and timeouts, truncated streams
separately from the expected 4xx), p50/p99 latency per 30 s window (by completion time,
completed requests only), resident memory over time (VmRSS from /proc/<pid>/status of the
server and all its descendants — the vLLM EngineCore and worker processes), and vLLM's
gauges ``vllm:num_requests_running`` / ``vllm:num_requests_waiting`` plus the server's
``greyelephant_requests_in_flight``, sampled through the run.

Criteria (exit status 1 when one fails):

* no 5xx, no connection failure or timeout, no truncated stream, no unexpected 4xx;
* every cancelled request freed: after the traffic stops (every worker's last request
  answered), the three gauges read 0 within ``--drain-seconds`` (default 10);
* the server still answers /ready;
* memory (full preset; reported only for short): the max of the samples after the warm-up
  is within 10% of the sample at the end of the warm-up.

Writes soak.json, summary.md and a plot (soak.png with matplotlib, else a hand-written
soak.svg) to benchmarks/results/soak-<preset>/ (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from greyelephant.benchmarks.datasets import dev_set

RESULTS = Path(__file__).resolve().parent / "results"
MAX_MINUTES = 20.0
MAX_CONCURRENCY = 32
PRESETS = {
    "short": {"minutes": 2.0, "concurrency": 8, "warmup_minutes": 0.5},
    "full": {"minutes": 20.0, "concurrency": 32, "warmup_minutes": 3.0},
}
# Server flags when the soak starts its own server (the benchmarks' usual CPU flags).
SERVER_FLAGS = ["--enforce-eager", "--max-model-len", "2048"]
MIX = {"chat": 0.17, "steered": 0.17, "stream": 0.17, "critique_revise": 0.10,
       "completions": 0.15, "cancel": 0.21, "invalid": 0.03}
MEMORY_TOLERANCE = 0.10
CANCEL_MAX_TOKENS = 1500
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting",
          "greyelephant_requests_in_flight")


@dataclasses.dataclass
class SoakConfig:
    preset: str = "short"
    minutes: float | None = None
    concurrency: int | None = None
    warmup_minutes: float | None = None
    base_url: str | None = None
    server_pid: int | None = None
    server_log: Path | None = None
    out_dir: Path | None = None
    seed: int = 0
    window_s: float = 30.0
    sample_s: float = 5.0
    drain_s: float = 10.0
    request_timeout_s: float = 600.0
    serve_args: list[str] = dataclasses.field(default_factory=list)
    mix: dict[str, float] | None = None  # request kind -> weight; None: MIX
    command: str = ""

    def resolved(self) -> SoakConfig:
        p = PRESETS[self.preset]
        c = dataclasses.replace(self)
        c.minutes = p["minutes"] if self.minutes is None else self.minutes
        c.concurrency = p["concurrency"] if self.concurrency is None else self.concurrency
        c.warmup_minutes = (p["warmup_minutes"] if self.warmup_minutes is None
                            else self.warmup_minutes)
        if not 0 < c.minutes <= MAX_MINUTES:
            raise ValueError(f"--minutes must be in (0, {MAX_MINUTES:g}]")
        if not 1 <= c.concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"--concurrency must be in [1, {MAX_CONCURRENCY}]")
        if not 0 <= c.warmup_minutes < c.minutes:
            raise ValueError("--warmup-minutes must be in [0, minutes)")
        if c.base_url:
            host = urlsplit(c.base_url).hostname
            if host not in LOOPBACK:
                raise ValueError(f"loopback only: {c.base_url!r} is not 127.0.0.1/localhost/::1")
            c.base_url = c.base_url.rstrip("/").removesuffix("/v1")
        if c.mix is not None and (not c.mix or set(c.mix) - set(MIX)
                                  or any(w < 0 for w in c.mix.values())
                                  or not sum(c.mix.values())):
            raise ValueError(f"--mix: weights >= 0 (not all 0) for kinds among {sorted(MIX)}")
        c.out_dir = Path(c.out_dir) if c.out_dir else RESULTS / f"soak-{c.preset}"
        return c


# --------------------------------------------------------------------------- /proc, /metrics

def vm_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return 0  # a zombie has no VmRSS line


def descendants(pid: int) -> list[int]:
    """The process's descendants: psutil when installed, else /proc/<pid>/task/*/children."""
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:
        return []
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def memory_sample(pid: int) -> dict | None:
    """VmRSS of the server and its descendants, in MiB (total and per process)."""
    root = vm_rss_kib(pid)
    if root is None:
        return None
    procs = {pid: root}
    for child in descendants(pid):
        kib = vm_rss_kib(child)
        if kib is not None:
            procs[child] = kib
    return {"rss_mib": round(sum(procs.values()) / 1024, 1),
            "processes": {f"{p} {proc_name(p)}": round(k / 1024, 1) for p, k in procs.items()}}


def mem_available_mib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def find_server_pid(base_url: str) -> int | None:
    """The PID listening on the URL's port (the server's main process), if visible."""
    port = urlsplit(base_url).port
    if port is None:
        return None
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port \
                    and conn.pid:
                return conn.pid
    except Exception:
        pass
    # Fallback: a process whose command line says --port <port>.
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"--port" and argv[i + 1] == str(port).encode():
                return int(d.name)
    return None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, list[tuple[dict, float]]]:
    out: dict[str, list[tuple[dict, float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, value))
    return out


def metric_sum(parsed: dict, name: str) -> float | None:
    rows = parsed.get(name)
    return None if rows is None else sum(v for _, v in rows)


def metric_by(parsed: dict, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in parsed.get(name, []):
        key = labels.get(label, "")
        out[key] = out.get(key, 0.0) + v
    return out


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(before) | set(after))
            if after.get(k, 0.0) - before.get(k, 0.0)}


async def scrape(client: httpx.AsyncClient, base: str) -> dict | None:
    try:
        r = await client.get(f"{base}/metrics", timeout=30)
        r.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse_metrics(r.text)


def gauges(parsed: dict | None) -> dict[str, float | None]:
    return {g: (metric_sum(parsed, g) if parsed else None) for g in GAUGES}


# --------------------------------------------------------------------------- traffic

def load_cases() -> list[dict]:
    return [json.loads(line) for line in dev_set().read_text().splitlines() if line.strip()]


def entity(case: dict) -> dict | str:
    aliases = case.get("avoid_aliases") or []
    return {"entity": case["avoid"], "aliases": aliases} if aliases else case["avoid"]


def steering_for(rng: random.Random, cases: list[dict], case: dict, strategies: list[str]) -> dict:
    avoid = [entity(case)]
    others = [c for c in rng.sample(cases, 3) if c["id"] != case["id"]]
    if rng.random() < 0.3:  # sometimes several entities at once
        avoid += [entity(c) for c in others[:2]]
    return {"avoid": avoid, "prefer": [case["prefer"]], "strategies": strategies}


def sampling(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        return {"temperature": 0}
    return {"temperature": 0.8, "top_p": 0.95, "seed": rng.randrange(1 << 30)}


@dataclasses.dataclass
class Outcome:
    kind: str
    variant: str
    request_id: str
    start: float  # seconds since traffic start
    end: float = 0.0
    status: int | None = None
    outcome: str = "ok"  # ok | cancelled | expected_4xx | unexpected_4xx | server_5xx |
    #                      connection_error | timeout | truncated_stream | stream_error_event |
    #                      bad_response | throttled_429
    ttft: float | None = None
    detail: str = ""
    worker: int = -1
    body: dict | None = dataclasses.field(default=None, repr=False)  # kept for failures

    @property
    def latency(self) -> float:
        return self.end - self.start


def exception_chain(exc: BaseException) -> str:
    """"ReadError:  <- BrokenResourceError:  <- ConnectionResetError: [Errno 104] ...": the
    exception and its causes, which tell a reset by the server from a local close."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen and len(parts) < 6:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)


def previous_of_worker(outcomes: list[Outcome], o: Outcome) -> dict | None:
    """The request the same worker made just before `o` (whether `o` could have reused its
    connection: a cancelled or failed one closes it)."""
    before = [p for p in outcomes if p.worker == o.worker and p.start < o.start]
    if not before:
        return None
    p = max(before, key=lambda p: p.start)
    return {"request_id": p.request_id, "kind": p.kind, "variant": p.variant,
            "outcome": p.outcome, "status": p.status, "start": round(p.start, 3),
            "end": round(p.end, 3), "detail": p.detail[:200]}


class Traffic:
    def __init__(self, base: str, model: str, cases: list[dict], t0: float, timeout_s: float):
        self.base, self.model, self.cases, self.t0 = base, model, cases, t0
        self.timeout_s = timeout_s
        self.outcomes: list[Outcome] = []
        self.seq = 0
        self.worker: contextvars.ContextVar[int] = contextvars.ContextVar("worker", default=-1)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def new(self, kind: str, variant: str) -> Outcome:
        self.seq += 1
        o = Outcome(kind, variant, f"soak-{kind}-{self.seq}", self.now(),
                    worker=self.worker.get())
        self.outcomes.append(o)
        return o

    # ---- one request of each kind

    async def run_one(self, client: httpx.AsyncClient, rng: random.Random, kind: str) -> Outcome:
        case = rng.choice(self.cases)
        return await getattr(self, f"_{kind}")(client, rng, case)

    def chat_body(self, rng, case, *, steering=None, stream=False, max_tokens=None, **kw):
        body = {"model": self.model, "messages": case["messages"],
                "max_tokens": max_tokens or rng.randint(16, 80), **sampling(rng), **kw}
        if steering:
            body["steering"] = steering
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def _chat(self, client, rng, case):
        o = self.new("chat", "plain")
        return await self.post(client, o, "/v1/chat/completions", self.chat_body(rng, case))

    async def _steered(self, client, rng, case):
        o = self.new("steered", "directive+logits")
        steering = steering_for(rng, self.cases, case, ["directive", "logits"])
        return await self.post(client, o, "/v1/chat/completions",
                               self.chat_body(rng, case, steering=steering), want_report=True)

    async def _stream(self, client, rng, case):
        steered = rng.random() < 0.5
        o = self.new("stream", "steered" if steered else "plain")
        steering = steering_for(rng, self.cases, case, ["directive", "logits"]) if steered \
            else None
        return await self.stream(client, o, "/v1/chat/completions",
                                 self.chat_body(rng, case, steering=steering, stream=True))

    async def _critique_revise(self, client, rng, case):
        streamed = rng.random() < 1 / 3
        o = self.new("critique_revise", "stream" if streamed else "json")
        steering = steering_for(rng, self.cases, case, ["critique_revise"])
        body = self.chat_body(rng, case, steering=steering, stream=streamed,
                              max_tokens=rng.randint(32, 64))
        if streamed:
            return await self.stream(client, o, "/v1/chat/completions", body)
        return await self.post(client, o, "/v1/chat/completions", body, want_report=True)

    async def _completions(self, client, rng, case):
        prompt = f"Question: {case['messages'][-1]['content']}\nAnswer:"
        batch = rng.random() < 0.25
        streamed = not batch and rng.random() < 0.3
        steered = rng.random() < 0.3
        o = self.new("completions", ("batch" if batch else "stream" if streamed else "single")
                     + ("+steered" if steered else ""))
        body = {"model": self.model, "max_tokens": rng.randint(16, 64), **sampling(rng),
                "prompt": [prompt, f"Question: {rng.choice(self.cases)['messages'][-1]['content']}"
                                   "\nAnswer:"] if batch else prompt}
        if steered:
            body["steering"] = steering_for(rng, self.cases, case, ["directive", "logits"])
        if streamed:
            body["stream"] = True
            return await self.stream(client, o, "/v1/completions", body)
        return await self.post(client, o, "/v1/completions", body, want_report=steered)

    async def _cancel(self, client, rng, case):
        long = {"max_tokens": CANCEL_MAX_TOKENS, "ignore_eos": True}
        r = rng.random()
        if r < 0.3:
            o = self.new("cancel", "stream-chat-plain")
            body = self.chat_body(rng, case, stream=True, **long)
        elif r < 0.6:
            o = self.new("cancel", "stream-chat-steered")
            body = self.chat_body(rng, case, stream=True, steering=steering_for(
                rng, self.cases, case, ["directive", "logits"]), **long)
        elif r < 0.75:
            o = self.new("cancel", "stream-completions")
            body = {"model": self.model, "prompt": case["messages"][-1]["content"],
                    "stream": True, **sampling(rng), **long}
            return await self.stream(client, o, "/v1/completions", body,
                                     cancel_after_chunks=rng.randint(1, 6))
        elif r < 0.9:
            o = self.new("cancel", "timed-json-chat")
            body = self.chat_body(rng, case, **long)
            return await self.post(client, o, "/v1/chat/completions", body,
                                   cancel_after_s=rng.uniform(0.5, 3.0))
        else:
            o = self.new("cancel", "timed-stream-critique_revise")
            body = self.chat_body(rng, case, stream=True, steering=steering_for(
                rng, self.cases, case, ["critique_revise"]), **long)
            return await self.stream(client, o, "/v1/chat/completions", body,
                                     cancel_after_s=rng.uniform(0.5, 3.0))
        return await self.stream(client, o, "/v1/chat/completions", body,
                                 cancel_after_chunks=rng.randint(1, 6))

    async def _invalid(self, client, rng, case):
        bad = rng.choice(["temperature", "unknown_field", "empty_steering", "tools"])
        o = self.new("invalid", bad)
        body = self.chat_body(rng, case, max_tokens=8)
        if bad == "temperature":
            body["temperature"] = -1
        elif bad == "unknown_field":
            body["frobnicate"] = True
        elif bad == "empty_steering":
            body["steering"] = {"avoid": [], "prefer": []}
        else:
            body["tools"] = [{"type": "function", "function": {"name": "f"}}]
        return await self.post(client, o, "/v1/chat/completions", body, expect_status=400)

    # ---- transport

    def classify_status(self, o: Outcome, status: int, text: str, expect_status: int) -> bool:
        """Record a non-expected status; True when the response is a success to go on with."""
        o.status = status
        if status == expect_status:
            o.outcome = "ok" if status < 400 else "expected_4xx"
            return status < 400
        o.detail = text[:300]
        if status >= 500:
            o.outcome = "server_5xx"
        elif status == 429:
            o.outcome = "throttled_429"  # admission control shed it (reported, not a failure)
        elif status >= 400:
            o.outcome = "unexpected_4xx"
        else:
            o.outcome = "bad_response"  # e.g. 200 where a 400 was expected
        return False

    def transport_error(self, o: Outcome, exc: BaseException) -> None:
        o.outcome = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
        o.detail = exception_chain(exc)[:300]

    async def post(self, client, o: Outcome, path: str, body: dict, *, want_report=False,
                   expect_status=200, cancel_after_s: float | None = None) -> Outcome:
        headers = {"X-Request-Id": o.request_id}
        o.body = body
        try:
            call = client.post(path, json=body, headers=headers)
            if cancel_after_s is not None:
                try:
                    r = await asyncio.wait_for(call, cancel_after_s)
                except asyncio.TimeoutError:
                    o.outcome, o.detail = "cancelled", f"dropped after {cancel_after_s:.1f} s"
                    return o
            else:
                r = await call
        except httpx.HTTPError as exc:
            self.transport_error(o, exc)
            return o
        finally:
            o.end = self.now()
        if cancel_after_s is not None:
            # Answered before the client gave up: not a cancellation.
            o.detail = "completed before the cancel"
        if self.classify_status(o, r.status_code, r.text, expect_status):
            try:
                data = r.json()
                if not data.get("choices"):
                    raise ValueError("no choices")
                if want_report and "steering" not in data:
                    raise ValueError("no steering report")
            except ValueError as exc:
                o.outcome, o.detail = "bad_response", f"{exc}: {r.text[:200]}"
        return o

    async def stream(self, client, o: Outcome, path: str, body: dict, *,
                     cancel_after_chunks: int | None = None,
                     cancel_after_s: float | None = None) -> Outcome:
        headers = {"X-Request-Id": o.request_id}
        o.body = body
        chunks = 0
        done = False
        try:
            async with asyncio.timeout(cancel_after_s):
                async with client.stream("POST", path, json=body, headers=headers) as r:
                    if r.status_code != 200:
                        text = (await r.aread()).decode(errors="replace")
                        self.classify_status(o, r.status_code, text, 200)
                        return o
                    o.status = 200
                    async for line in r.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        payload = line[6:]
                        if payload == "[DONE]":
                            done = True
                            break
                        event = json.loads(payload)
                        if "error" in event:
                            o.outcome, o.detail = "stream_error_event", payload[:300]
                            return o
                        if any((c.get("delta") or {}).get("content") or c.get("text")
                               for c in event.get("choices") or []):
                            chunks += 1
                            if o.ttft is None:
                                o.ttft = self.now() - o.start
                            if cancel_after_chunks is not None and chunks >= cancel_after_chunks:
                                # Leaving the block closes the connection mid-stream.
                                o.outcome = "cancelled"
                                o.detail = f"closed after {chunks} content chunks"
                                return o
        except TimeoutError:
            o.outcome = "cancelled"
            o.detail = f"dropped after {cancel_after_s:.1f} s, {chunks} content chunks"
            return o
        except httpx.HTTPError as exc:
            self.transport_error(o, exc)
            if chunks or o.status == 200:
                o.outcome = "truncated_stream"
            return o
        except json.JSONDecodeError as exc:
            o.outcome, o.detail = "bad_response", f"bad SSE JSON: {exc}"
            return o
        finally:
            o.end = self.now()
        if cancel_after_chunks is not None or cancel_after_s is not None:
            o.detail = f"stream ended after {chunks} chunks before the cancel"
        if not done:
            o.outcome, o.detail = "truncated_stream", f"no [DONE] after {chunks} content chunks"
        return o


# --------------------------------------------------------------------------- the run

def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return round(s[k], 3)


async def sampler(base: str, pid: int | None, t0: float, every: float, stop: asyncio.Event,
                  memory: list, engine: list) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            t = round(time.monotonic() - t0, 1)
            if pid is not None:
                m = await asyncio.to_thread(memory_sample, pid)
                if m is not None:
                    memory.append({"t": t, **m})
            parsed = await scrape(client, base)
            engine.append({"t": t, **gauges(parsed), "load1": round(os.getloadavg()[0], 2),
                           "mem_available_mib": mem_available_mib(),
                           "kv_cache_usage": metric_sum(parsed, "vllm:kv_cache_usage_perc")
                           if parsed else None})
            try:
                await asyncio.wait_for(stop.wait(), every)
                return
            except asyncio.TimeoutError:
                pass


async def loop_lag_monitor(stop: asyncio.Event, lags: list, every: float = 0.1) -> None:
    """How late this (the client's) event loop wakes from `every`-second sleeps: a stalled
    client can make a server's keep-alive close look like a server fault."""
    while not stop.is_set():
        start = time.monotonic()
        await asyncio.sleep(every)
        lags.append(time.monotonic() - start - every)


async def drain_check(base: str, limit_s: float) -> dict:
    """After the traffic: how long until running, waiting and in-flight all read 0."""
    start = time.monotonic()
    last: dict = {}
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            parsed = await scrape(client, base)
            last = gauges(parsed)
            waited = time.monotonic() - start
            if parsed is not None and all(v == 0 for v in last.values() if v is not None) \
                    and last["vllm:num_requests_running"] is not None:
                return {"freed": True, "seconds": round(waited, 2), "gauges": last}
            if waited > limit_s:
                return {"freed": False, "seconds": round(waited, 2), "gauges": last}
            await asyncio.sleep(0.25)


async def soak_traffic(cfg: SoakConfig, base: str, pid: int | None) -> dict:
    cases = load_cases()
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        model = (await c.get("/v1/models")).json()["data"][0]["id"]
        before = await scrape(c, base)
    if before is None:
        raise RuntimeError(f"{base}/metrics is not readable")
    t0 = time.monotonic()
    deadline = t0 + cfg.minutes * 60
    traffic = Traffic(base, model, cases, t0, cfg.request_timeout_s)
    memory: list[dict] = []
    engine: list[dict] = []
    stop = asyncio.Event()
    sampler_task = asyncio.create_task(sampler(base, pid, t0, cfg.sample_s, stop, memory, engine))
    client_lags: list[float] = []
    lag_task = asyncio.create_task(loop_lag_monitor(stop, client_lags))
    mix = cfg.mix or MIX
    kinds, weights = list(mix), list(mix.values())
    limits = httpx.Limits(max_connections=cfg.concurrency + 4,
                          max_keepalive_connections=cfg.concurrency + 4)
    timeout = httpx.Timeout(cfg.request_timeout_s, connect=10)

    async def worker(i: int) -> None:
        rng = random.Random(cfg.seed * 1000 + i)
        traffic.worker.set(i)
        async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as client:
            while time.monotonic() < deadline:
                o = await traffic.run_one(client, rng, rng.choices(kinds, weights)[0])
                if o.outcome in ("connection_error", "timeout"):
                    await asyncio.sleep(0.5)  # do not spin on a dead server

    await asyncio.gather(*(worker(i) for i in range(cfg.concurrency)))
    traffic_end = round(time.monotonic() - t0, 1)
    drain = await drain_check(base, cfg.drain_s)
    stop.set()
    await sampler_task
    await lag_task
    engine.append({"t": round(time.monotonic() - t0, 1), **drain["gauges"], "after_drain": True})
    if pid is not None:
        m = await asyncio.to_thread(memory_sample, pid)
        if m is not None:
            memory.append({"t": round(time.monotonic() - t0, 1), **m, "after_drain": True})
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        after = await scrape(c, base)
        try:
            ready = (await c.get("/ready")).status_code
        except httpx.HTTPError as exc:
            ready = f"{type(exc).__name__}"
    return {"model": model, "outcomes": traffic.outcomes, "memory": memory, "engine": engine,
            "traffic_end_s": traffic_end, "drain": drain, "ready_after": ready,
            "client_loop_max_lag_s": round(max(client_lags, default=0.0), 3),
            "before": before, "after": after}


FAILURES = ("server_5xx", "connection_error", "timeout", "truncated_stream",
            "stream_error_event", "unexpected_4xx", "bad_response")


def analyse(cfg: SoakConfig, raw: dict, pid: int | None) -> dict:
    outcomes: list[Outcome] = raw["outcomes"]
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
    by_kind: dict[str, dict] = {}
    for o in outcomes:
        k = by_kind.setdefault(o.kind, {"requests": 0, "outcomes": {}, "_lat": [], "_ttft": []})
        k["requests"] += 1
        k["outcomes"][o.outcome] = k["outcomes"].get(o.outcome, 0) + 1
        if o.outcome == "ok":
            k["_lat"].append(o.latency)
            if o.ttft is not None:
                k["_ttft"].append(o.ttft)
    for k in by_kind.values():
        lat, ttft = k.pop("_lat"), k.pop("_ttft")
        k.update(p50_s=pct(lat, 50), p99_s=pct(lat, 99), max_s=pct(lat, 100),
                 ttft_p50_s=pct(ttft, 50), ttft_p99_s=pct(ttft, 99))

    windows = []
    n_windows = max(1, math.ceil(raw["traffic_end_s"] / cfg.window_s))
    for w in range(n_windows):
        lo, hi = w * cfg.window_s, (w + 1) * cfg.window_s
        inside = [o for o in outcomes if lo <= o.end < hi or (w == n_windows - 1 and o.end >= hi)]
        lat = [o.latency for o in inside if o.outcome == "ok"]
        eng = [e for e in raw["engine"] if lo <= e["t"] < hi]
        mem = [m for m in raw["memory"] if lo <= m["t"] < hi]
        windows.append({
            "t0_s": lo, "t1_s": hi, "completed": len(lat),
            "cancelled": sum(o.outcome == "cancelled" for o in inside),
            "failures": sum(o.outcome in FAILURES for o in inside),
            "p50_s": pct(lat, 50), "p99_s": pct(lat, 99),
            "rss_mib": mem[-1]["rss_mib"] if mem else None,
            "max_running": max((e["vllm:num_requests_running"] or 0 for e in eng), default=None),
            "max_waiting": max((e["vllm:num_requests_waiting"] or 0 for e in eng), default=None),
        })

    # Memory: the sample at the end of the warm-up vs the max of the samples after it.
    warm_s = cfg.warmup_minutes * 60
    mem = raw["memory"]
    memory_result: dict = {"warmup_s": warm_s, "tolerance": MEMORY_TOLERANCE,
                           "pid": pid, "measured": bool(mem)}
    if mem:
        at_warm = [m for m in mem if m["t"] <= warm_s] or mem[:1]
        rest = [m for m in mem if m["t"] > warm_s]
        base_mib = at_warm[-1]["rss_mib"]
        max_rest = max((m["rss_mib"] for m in rest), default=base_mib)
        growth = max_rest / base_mib - 1
        memory_result.update(
            start_mib=mem[0]["rss_mib"], at_warmup_end_mib=base_mib,
            at_warmup_end_t=at_warm[-1]["t"],
            max_after_warmup_mib=max_rest, end_mib=mem[-1]["rss_mib"],
            growth=round(growth, 4), flat=growth <= MEMORY_TOLERANCE,
            processes_start=mem[0]["processes"], processes_end=mem[-1]["processes"])
        if len(rest) >= 2:
            xs, ys = [m["t"] / 60 for m in rest], [m["rss_mib"] for m in rest]
            mx, my = statistics.fmean(xs), statistics.fmean(ys)
            den = sum((x - mx) ** 2 for x in xs)
            memory_result["slope_mib_per_min_after_warmup"] = round(
                sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den, 2) \
                if den else 0.0

    eng = raw["engine"]
    loads = [e["load1"] for e in eng if e.get("load1") is not None]
    machine_load = {"load1_median": round(statistics.median(loads), 2) if loads else None,
                    "load1_max": max(loads, default=None),
                    "mem_available_min_mib": min((e["mem_available_mib"] for e in eng
                                                  if e.get("mem_available_mib") is not None),
                                                 default=None),
                    # the longest this client's own event loop was late (see loop_lag_monitor)
                    "client_loop_max_lag_s": raw.get("client_loop_max_lag_s")}
    during = {g: max((e[g] for e in eng if e[g] is not None), default=None) for g in GAUGES}
    before, after = raw["before"], raw["after"] or {}
    server_side = {
        "vllm_finished_by_reason": counter_delta(
            metric_by(before, "vllm:request_success_total", "finished_reason"),
            metric_by(after, "vllm:request_success_total", "finished_reason")),
        "greyelephant_requests_by_status": counter_delta(
            metric_by(before, "greyelephant_requests_total", "status"),
            metric_by(after, "greyelephant_requests_total", "status")),
        "rollbacks": (metric_sum(after, "greyelephant_steering_rollbacks_total") or 0)
        - (metric_sum(before, "greyelephant_steering_rollbacks_total") or 0),
        "revisions": (metric_sum(after, "greyelephant_steering_revisions_total") or 0)
        - (metric_sum(before, "greyelephant_steering_revisions_total") or 0),
    }
    errors = {
        "server_5xx": counts.get("server_5xx", 0),
        "connection_failures": counts.get("connection_error", 0),
        "timeouts": counts.get("timeout", 0),
        "truncated_streams": counts.get("truncated_stream", 0),
        "stream_error_events": counts.get("stream_error_event", 0),
        "unexpected_4xx": counts.get("unexpected_4xx", 0),
        "bad_responses": counts.get("bad_response", 0),
        "expected_4xx": counts.get("expected_4xx", 0),
        "throttled_429": counts.get("throttled_429", 0),
    }
    failed = [dataclasses.asdict(o) | {"latency_s": round(o.latency, 3),
                                       "worker_previous": previous_of_worker(outcomes, o)}
              for o in outcomes if o.outcome in FAILURES]
    for o in outcomes:
        if o.outcome not in FAILURES:
            o.body = None
    cancelled = [o for o in outcomes if o.outcome == "cancelled"]
    criteria = {
        # A stream that already answered 200 reports a server error as an SSE error event.
        "no_server_errors": {
            "pass": errors["server_5xx"] + errors["stream_error_events"] == 0,
            "value": errors["server_5xx"] + errors["stream_error_events"],
            "http_5xx": errors["server_5xx"], "stream_error_events": errors["stream_error_events"]},
        "no_connection_failures": {
            "pass": errors["connection_failures"] + errors["timeouts"] == 0,
            "value": errors["connection_failures"] + errors["timeouts"]},
        "streams_complete": {"pass": errors["truncated_streams"] == 0,
                             "value": errors["truncated_streams"]},
        "no_unexpected_4xx_or_bad_response": {
            "pass": errors["unexpected_4xx"] + errors["bad_responses"] == 0,
            "value": errors["unexpected_4xx"] + errors["bad_responses"]},
        "cancellations_freed": {"pass": raw["drain"]["freed"], "cancelled": len(cancelled),
                                **raw["drain"]},
        "server_ready_after": {"pass": raw["ready_after"] == 200, "value": raw["ready_after"]},
        "memory_flat": {"pass": bool(memory_result.get("flat")),
                        "asserted": cfg.preset == "full",
                        "value": memory_result.get("growth")},
    }
    ok = all(c["pass"] for c in criteria.values() if c.get("asserted", True))
    return {"ok": ok, "criteria": criteria, "requests": len(outcomes), "outcomes": counts,
            "errors": errors, "failed_requests": failed[:200], "by_kind": by_kind,
            "windows": windows, "memory": memory_result, "engine_gauges_max_during": during,
            "machine_load": machine_load,
            "server_side": server_side,
            "memory_samples": [{k: v for k, v in m.items() if k != "processes"} for m in mem],
            "engine_samples": eng}


def server_log_errors(path: Path | None, limit: int = 300) -> list[str]:
    """Error-looking lines of a server log, one line per event: ERROR/CRITICAL lines and each
    traceback folded into "Traceback: <exception> (last project frame)"."""
    if path is None or not Path(path).exists():
        return []
    lines = Path(path).read_text(errors="replace").splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines) and len(out) < limit:
        line = lines[i]
        if line.startswith("Traceback (most recent call last)"):
            frame, j = "", i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                m = re.match(r'\s+File "([^"]+)", line (\d+), in (\S+)', lines[j])
                if m and "site-packages" not in m.group(1) and "/lib/python" not in m.group(1):
                    frame = f"{Path(m.group(1)).parent.name}/{Path(m.group(1)).name}:" \
                            f"{m.group(2)} {m.group(3)}"
                j += 1
            exc = lines[j].strip() if j < len(lines) else "?"
            out.append(f"Traceback: {exc}" + (f" (last project frame {frame})" if frame else ""))
            i = j + 1
            continue
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Engine.*(died|dead)|EngineDeadError", line):
            out.append(line.strip()[:400])
        i += 1
    return out


# --------------------------------------------------------------------------- outputs

def plot_svg(result: dict, path: Path) -> None:
    """Three stacked panels (p99/p50 latency per window, server RSS, engine gauges)."""
    W, H, L, R, T, PH, GAP = 900, 720, 70, 20, 30, 180, 50
    win = result["windows"]
    mem = result["memory_samples"]
    eng = result["engine_samples"]
    warm = result["config"]["warmup_minutes"] * 60
    tmax = max([result["traffic_end_s"]] + [m["t"] for m in mem] + [e["t"] for e in eng]
               + [w["t1_s"] for w in win]) or 1
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>']

    def panel(i: int, title: str, series: list[tuple[str, list[tuple[float, float]]]],
              unit: str, hlines: list[tuple[str, float]] = ()):
        y0 = T + i * (PH + GAP)
        vals = [v for _, pts in series for _, v in pts] + [v for _, v in hlines]
        vmax = max(vals, default=1) * 1.1 or 1
        vmin = 0.0
        if unit == "MiB" and vals:
            vmin = min(vals) * 0.95
        sx = lambda t: L + (W - L - R) * t / tmax  # noqa: E731
        sy = lambda v: y0 + PH - PH * (v - vmin) / ((vmax - vmin) or 1)  # noqa: E731
        out.append(f'<text x="{L}" y="{y0 - 8}" font-weight="bold">{title}</text>')
        out.append(f'<rect x="{L}" y="{y0}" width="{W - L - R}" height="{PH}" fill="none" '
                   'stroke="#999"/>')
        for frac in (0, 0.5, 1):
            v = vmin + (vmax - vmin) * frac
            out.append(f'<text x="{L - 5}" y="{sy(v) + 4:.1f}" text-anchor="end">'
                       f'{v:.4g}</text>')
        for tt in range(0, int(tmax) + 1, 60 if tmax <= 600 else 120):
            out.append(f'<line x1="{sx(tt):.1f}" y1="{y0 + PH}" x2="{sx(tt):.1f}" '
                       f'y2="{y0 + PH + 4}" stroke="#999"/><text x="{sx(tt):.1f}" '
                       f'y="{y0 + PH + 15}" text-anchor="middle">{tt // 60} min</text>')
        if warm:
            out.append(f'<line x1="{sx(warm):.1f}" y1="{y0}" x2="{sx(warm):.1f}" '
                       f'y2="{y0 + PH}" stroke="#aaa" stroke-dasharray="4 3"/>')
        for j, (label, v) in enumerate(hlines):
            out.append(f'<line x1="{L}" y1="{sy(v):.1f}" x2="{W - R}" y2="{sy(v):.1f}" '
                       f'stroke="#888" stroke-dasharray="6 3"/><text x="{W - R - 4}" '
                       f'y="{sy(v) - 4 - 12 * j:.1f}" text-anchor="end" fill="#555">{label}</text>')
        for j, (label, pts) in enumerate(series):
            if not pts:
                continue
            c = colors[j % len(colors)]
            poly = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in pts)
            out.append(f'<polyline points="{poly}" fill="none" stroke="{c}" stroke-width="1.5"/>')
            out.append(f'<text x="{L + 10 + 150 * j}" y="{y0 + 14}" fill="{c}">{label}</text>')
        out.append(f'<text x="12" y="{y0 + PH / 2}" transform="rotate(-90 12 {y0 + PH / 2})" '
                   f'text-anchor="middle">{unit}</text>')

    mid = lambda w: (w["t0_s"] + w["t1_s"]) / 2  # noqa: E731
    panel(0, "Latency per 30 s window (completed requests)",
          [("p99", [(mid(w), w["p99_s"]) for w in win if w["p99_s"] is not None]),
           ("p50", [(mid(w), w["p50_s"]) for w in win if w["p50_s"] is not None])], "s")
    m = result["memory"]
    h = []
    if m.get("at_warmup_end_mib"):
        h = [(f"warm-up end +{MEMORY_TOLERANCE:.0%}",
              m["at_warmup_end_mib"] * (1 + MEMORY_TOLERANCE))]
    panel(1, "Resident memory: server + engine processes (VmRSS sum)",
          [("RSS", [(s["t"], s["rss_mib"]) for s in mem])], "MiB", h)
    panel(2, "vLLM gauges and server in-flight requests",
          [(g.split(":")[-1], [(e["t"], e[g]) for e in eng if e[g] is not None])
           for g in GAUGES], "requests")
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def plot_png(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    win = result["windows"]
    mid = [(w["t0_s"] + w["t1_s"]) / 120 for w in win]
    axes[0].plot(mid, [w["p99_s"] for w in win], label="p99")
    axes[0].plot(mid, [w["p50_s"] for w in win], label="p50")
    axes[0].set_ylabel("latency (s)")
    mem = result["memory_samples"]
    axes[1].plot([s["t"] / 60 for s in mem], [s["rss_mib"] for s in mem], label="RSS")
    if result["memory"].get("at_warmup_end_mib"):
        axes[1].axhline(result["memory"]["at_warmup_end_mib"] * (1 + MEMORY_TOLERANCE),
                        ls="--", c="gray", label="warm-up end +10%")
    axes[1].set_ylabel("MiB")
    for g in GAUGES:
        eng = [e for e in result["engine_samples"] if e[g] is not None]
        axes[2].plot([e["t"] / 60 for e in eng], [e[g] for e in eng], label=g)
    axes[2].set_ylabel("requests")
    axes[2].set_xlabel("minutes")
    for ax in axes:
        ax.axvline(result["config"]["warmup_minutes"], ls=":", c="gray")
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib  # noqa: F401

        plot_png(result, out / "soak.png")
        result["plot"] = "soak.png"
    except ImportError:
        plot_svg(result, out / "soak.svg")
        result["plot"] = ("soak.svg (matplotlib is not installed in the venv, so the plot is a "
                          "hand-written SVG, not a PNG)")
    if result.get("server_log_errors"):
        (out / "server-log-errors.txt").write_text("\n".join(result["server_log_errors"]) + "\n")
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "summary.md").write_text(summary_md(result))


def fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def summary_md(r: dict) -> str:
    c = r["config"]
    m = r["memory"]
    lines = [f"# Soak ({c['preset']})", "",
             f"- verdict: **{'PASS' if r['ok'] else 'FAIL'}**",
             f"- date: {r['date']}", f"- machine: {r['machine']}",
             f"- command: `{r['command']}`",
             f"- server: {r['server']}",
             f"- git: HEAD {r['git'].get('head', '?')[:12]}, "
             f"{len(r['git'].get('uncommitted', []))} uncommitted paths (listed in soak.json)",
             f"- machine load during the run (other work shares the CPUs): "
             f"`{json.dumps(r['machine_load'])}`",
             f"- traffic: {c['minutes']:g} min at concurrency {c['concurrency']}, warm-up "
             f"{c['warmup_minutes']:g} min, seed {c['seed']}; mix {json.dumps(c.get('mix') or MIX)}",
             f"- requests: {r['requests']} ({json.dumps(r['outcomes'])})",
             f"- plot: {r['plot']}", "", "## Criteria", "",
             "| criterion | pass | value |", "|---|---|---|"]
    for name, crit in r["criteria"].items():
        extra = {k: v for k, v in crit.items() if k != "pass"}
        flag = "yes" if crit["pass"] else ("no (reported only)" if not crit.get("asserted", True)
                                           else "**no**")
        lines.append(f"| {name} | {flag} | `{json.dumps(extra)}` |")
    lines += ["", "## Errors", "", "| class | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["errors"].items()]
    if r["failed_requests"]:
        lines += ["", "Failed requests (first 20; t = start; bodies in soak.json):", "",
                  "| t (s) | request id | worker | kind/variant | outcome | status | detail |",
                  "|---|---|---|---|---|---|---|"]
        for f in r["failed_requests"][:20]:
            detail = f["detail"].replace("|", "\\|").replace("\n", " ")[:160]
            lines.append(f"| {f['start']:.1f} | {f['request_id']} | {f['worker']} "
                         f"| {f['kind']}/{f['variant']} "
                         f"| {f['outcome']} | {f['status']} | {detail} |")
    lines += ["", "## Per kind (latency of completed requests)", "",
              "| kind | requests | outcomes | p50 s | p99 s | max s | TTFT p50 s | TTFT p99 s |",
              "|---|---|---|---|---|---|---|---|"]
    for k, v in sorted(r["by_kind"].items()):
        lines.append(f"| {k} | {v['requests']} | `{json.dumps(v['outcomes'])}` | "
                     f"{fmt(v['p50_s'])} | {fmt(v['p99_s'])} | {fmt(v['max_s'])} | "
                     f"{fmt(v['ttft_p50_s'])} | {fmt(v['ttft_p99_s'])} |")
    lines += ["", "## Memory (VmRSS, server + descendants)", ""]
    if m["measured"]:
        lines += [f"- start {m['start_mib']} MiB; end of warm-up (t = {m['at_warmup_end_t']} s) "
                  f"{m['at_warmup_end_mib']} MiB; max after warm-up {m['max_after_warmup_mib']} "
                  f"MiB; end {m['end_mib']} MiB; growth {m['growth']:+.2%} (limit "
                  f"+{MEMORY_TOLERANCE:.0%}); slope after warm-up "
                  f"{m.get('slope_mib_per_min_after_warmup', '–')} MiB/min",
                  f"- processes at the end: `{json.dumps(m['processes_end'])}`"]
    else:
        lines.append("- not measured (server PID unknown: pass --server-pid)")
    lines += ["", "## Engine", "",
              f"- max during the run: `{json.dumps(r['engine_gauges_max_during'])}`",
              f"- after the traffic: `{json.dumps(r['criteria']['cancellations_freed'])}`",
              f"- server-side counters over the run: `{json.dumps(r['server_side'])}`",
              "", "## Per 30 s window", "",
              "| window | completed | cancelled | failures | p50 s | p99 s | RSS MiB "
              "| max running | max waiting |", "|---|---|---|---|---|---|---|---|---|"]
    for w in r["windows"]:
        lines.append(f"| {w['t0_s']:.0f}–{w['t1_s']:.0f} s | {w['completed']} | {w['cancelled']} "
                     f"| {w['failures']} | {fmt(w['p50_s'])} | {fmt(w['p99_s'])} | "
                     f"{fmt(w['rss_mib'], 1)} | {fmt(w['max_running'], 0)} | "
                     f"{fmt(w['max_waiting'], 0)} |")
    if r.get("failed_request_log_lines"):
        lines += ["", "## Server log lines of the failed requests", ""]
        for rid, rows in r["failed_request_log_lines"].items():
            lines += [f"`{rid}`:", "", "```", *(rows or ["(no line names it)"]), "```", ""]
    if r.get("server_log_kept"):
        lines += ["", f"The whole server log is in {r['server_log_kept']} (kept because a "
                      "criterion failed)."]
    if r.get("server_log_error_counts"):
        lines += ["", "## Server log: warnings and errors (count × line; the first 300 in "
                      "order in server-log-errors.txt)", "", "```",
                  *[f"{n} × {line}" for line, n in r["server_log_error_counts"].items()], "```"]
    return "\n".join(lines) + "\n"


def log_lines_for(path: Path | None, request_ids: list[str], per_id: int = 40) -> dict:
    """Server log lines that name each request id (the server logs the client's
    X-Request-Id; rollback sub-requests add a suffix, e.g. "-rb1")."""
    if not request_ids or path is None or not Path(path).exists():
        return {}
    out: dict[str, list[str]] = {r: [] for r in request_ids}
    pat = re.compile("|".join(re.escape(r) + r"(?![0-9])" for r in request_ids))
    with open(path, errors="replace") as f:
        for line in f:
            for m in pat.finditer(line):
                rows = out[m.group(0)]
                if len(rows) < per_id and (not rows or rows[-1] != line.rstrip()[:600]):
                    rows.append(line.rstrip()[:600])
    return out


def git_state() -> dict:
    """HEAD and the files that differ from it (the server under test may be uncommitted)."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True,
                               text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"head": head, "uncommitted": [line[3:] for line in dirty]}


def run_soak(cfg: SoakConfig) -> dict:
    """Run the soak (starting a server unless cfg.base_url), write the outputs, return the
    result (``result["ok"]``: every asserted criterion passed)."""
    cfg = cfg.resolved()
    tmp = None
    srv = None
    git = git_state()
    try:
        if cfg.base_url:
            base = cfg.base_url
            pid = cfg.server_pid or find_server_pid(base)
            log = cfg.server_log
            server_desc = f"external, {base} (pid {pid})"
        else:
            from greyelephant.launcher import LocalServer

            tmp = Path(tempfile.mkdtemp(prefix="soak-"))
            log = tmp / "server.log"
            flags = [*SERVER_FLAGS, *cfg.serve_args]
            srv = LocalServer(flags, log_path=log, timeout=900).start()
            base, pid = srv.base, srv.proc.pid
            server_desc = f"started by the soak: greyelephant serve {' '.join(flags)} (pid {pid})"
        started = dt.datetime.now(dt.timezone.utc)
        raw = asyncio.run(soak_traffic(cfg, base, pid))
        if srv is not None:
            srv.stop()  # the whole log, shutdown included
            srv = None
        result = analyse(cfg, raw, pid)
        events = server_log_errors(log, limit=100_000)
        result["server_log_errors"] = events[:300]
        # grouped without timestamps and process ids
        stamp = re.compile(r"\d{4}-\d\d-\d\d[ T][\d:,.]+\s+|\b\d\d-\d\d \d\d:\d\d:\d\d\s+"
                           r"|(?<=pid=)\d+")
        result["server_log_error_counts"] = dict(
            Counter(stamp.sub("", e) for e in events).most_common(50))
        result["failed_request_log_lines"] = log_lines_for(
            log, [f["request_id"] for f in result["failed_requests"]])
        if tmp is not None and not result["ok"]:
            cfg.out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, cfg.out_dir / "server.log")  # kept when a criterion failed
            result["server_log_kept"] = "server.log"
    finally:
        if srv is not None:
            srv.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "date": started.isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{platform.python_version()}",
        "command": cfg.command or "run_soak(...)",
        "server": server_desc,
        "config": {k: (str(v) if isinstance(v, Path) else v)
                   for k, v in dataclasses.asdict(cfg).items()},
        "git": git,
        "traffic_end_s": raw["traffic_end_s"],
        "model": raw["model"],
        **result,
    }
    write_outputs(result, cfg.out_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m greyelephant.benchmarks.soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="short")
    ap.add_argument("--minutes", type=float, help=f"traffic duration (<= {MAX_MINUTES:g})")
    ap.add_argument("--concurrency", type=int, help=f"workers (<= {MAX_CONCURRENCY})")
    ap.add_argument("--warmup-minutes", type=float, help="memory warm-up (preset: 3 / 0.5)")
    ap.add_argument("--base-url", help="a running server on loopback (default: start one)")
    ap.add_argument("--server-pid", type=int,
                    help="with --base-url: the server's PID (default: whoever listens on the port)")
    ap.add_argument("--server-log", type=Path, help="with --base-url: its log, scanned for errors")
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results/"
                                             "soak-<preset>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--drain-seconds", type=float, default=10.0,
                    help="how long the engine gauges may take to reach 0 after the traffic")
    ap.add_argument("--mix", help="focus the traffic, e.g. 'stream=3,cancel=1' (default: "
                                  "the documented mix)")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra flag for the server the soak starts (repeatable)")
    args = ap.parse_args(argv)
    mix = None
    if args.mix:
        try:
            mix = {k.strip(): float(v) for k, v in (kv.split("=") for kv in args.mix.split(","))}
        except ValueError:
            ap.error("--mix takes kind=weight[,kind=weight...]")
    cfg = SoakConfig(mix=mix, preset=args.preset, minutes=args.minutes, concurrency=args.concurrency,
                     warmup_minutes=args.warmup_minutes, base_url=args.base_url,
                     server_pid=args.server_pid, server_log=args.server_log, out_dir=args.out,
                     seed=args.seed, drain_s=args.drain_seconds, serve_args=args.serve_arg,
                     command="python -m greyelephant.benchmarks.soak "
                             + " ".join(argv if argv is not None else sys.argv[1:]))
    try:
        cfg.resolved()
    except ValueError as exc:
        ap.error(str(exc))
    result = run_soak(cfg)
    print(summary_md(result))
    print(f"results: {cfg.resolved().out_dir}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
