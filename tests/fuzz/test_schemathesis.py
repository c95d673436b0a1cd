"""API fuzzing with schemathesis against the server's own OpenAPI schema (`/openapi.json`).

Every operation of the schema (generation routes with their request bodies, the steering
extension included; /v1/models; the admin routes /v1/adapters/load|unload with the admin
key; /health, /ready, /metrics) gets cases generated from the schema (positive: fit the
schema) and against it (negative: break it). The checks:

* no server error: no 5xx, no connection error, no stream that ends in an error event of a
  5xx kind or without ``data: [DONE]``;
* every 4xx is JSON in OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}``.

Failures are collected, not raised inside Hypothesis, so one run reports every 5xx with the
request that caused it (no shrinking, no early stop) and the case count is exact.

Cost: the fetched schema is patched (the server is not changed) so that positive cases
generate at most ``MAX_TOKENS`` tokens with ``n`` <= ``MAX_N``; negative cases that happen to
be server-valid but expensive (``max_tokens`` 9..2000, ``n`` 3..16, chat without a token
budget) are clamped to the same bounds before they are sent (counted in the report).
"""

from __future__ import annotations

import collections
import copy
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET

MAX_TOKENS = 4
MAX_N = 2
MAX_BATCH = 3  # prompts in one completions request
MIN_CASES = 1000
ADAPTER_NAMES = ("fuzz-lora-a", "fuzz-lora-b")  # loaded explicitly, then fuzzed
FRESH_NAME = "fuzz-lora-c"  # a name only the fuzzed loads use (so their paths are checked)
GENERATION = ("/v1/chat/completions", "/v1/completions")
ADMIN = ("/v1/adapters/load", "/v1/adapters/unload")

# Hypothesis examples per (path, mode). Operations without inputs (GET /health, ...) run
# until Hypothesis finds nothing new to generate, usually one case each. Positive
# generation cases are the expensive ones (a real generation of up to MAX_TOKENS tokens,
# ~1-2 s on a busy 2-core machine); rejected ones take milliseconds.
BUDGET: dict[tuple[str, GenerationMode], int] = {
    ("/v1/chat/completions", GenerationMode.POSITIVE): 80,
    ("/v1/chat/completions", GenerationMode.NEGATIVE): 340,
    ("/v1/completions", GenerationMode.POSITIVE): 80,
    ("/v1/completions", GenerationMode.NEGATIVE): 340,
    ("/v1/adapters/load", GenerationMode.POSITIVE): 60,
    ("/v1/adapters/load", GenerationMode.NEGATIVE): 40,
    ("/v1/adapters/unload", GenerationMode.POSITIVE): 50,
    ("/v1/adapters/unload", GenerationMode.NEGATIVE): 30,
    ("/v1/models/{name}", GenerationMode.POSITIVE): 40,
    ("/v1/models/{name}", GenerationMode.NEGATIVE): 30,
}
DEFAULT_BUDGET = 10
DERANDOMIZE = True  # the same cases every run (False: explore, when hunting by hand)
# adapters are loaded first, so that generation cases can use them, and unloaded last
ORDER = {"/v1/adapters/load": 0, "/v1/models": 1, "/v1/models/{name}": 2,
         "/v1/chat/completions": 3, "/v1/completions": 4, "/v1/adapters/unload": 5}
# the 5xx-kind `type`s of server/errors.py, as a stream's error event carries them
SERVER_ERROR_TYPES = {"internal_server_error", "server_error", "service_unavailable",
                      "timeout_error"}


# -- the schema ---------------------------------------------------------------------------
# Positive cases would rarely get past validation with the schema as it is (any string for
# `model`, entity names, logit_bias keys, ...), so the patched schema offers known-good values
# next to strings that are certainly odd. The branches of each `anyOf` must be disjoint: the
# generator merges a branch into a wider one (an `enum` next to `type: string` is dropped).
PLAIN_NAMES = [{"type": "string", "pattern": "^[A-Z][a-z][a-z0-9' -]{0,20}$"},
               {"type": "string", "pattern": "^[A-Z][A-Z0-9]{1,6}$"},
               {"type": "string", "pattern": "^[a-z][a-z0-9 ]{0,20}$"}]
# at least one character no plain name has: control characters, other scripts, punctuation
ODD_NAME = {"type": "string", "pattern": "[^A-Za-z0-9 '-]"}
ODD_PATH = {"type": "string", "pattern": "[^A-Za-z0-9/._ -]"}
STRATEGIES = ("directive", "logits", "critique_revise")
UNSUPPORTED = ("tools", "tool_choice", "functions", "audio", "modalities", "suffix")


def _int_bound(maximum: int, nullable: bool) -> dict[str, Any]:
    bounded = {"type": "integer", "minimum": 1, "maximum": maximum}
    return {"anyOf": [bounded, {"type": "null"}]} if nullable else bounded


def _known_or_odd(values: list[str], odd: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"enum": values}, odd]}


def _json_body(paths: dict[str, Any], route: str) -> dict[str, Any]:
    return paths[route]["post"]["requestBody"]["content"]["application/json"]["schema"]


def _steering(original: dict[str, Any]) -> dict[str, Any]:
    """A steering object with a few plainly named entities (an alias may be odd), and what
    the schema cannot say: strategies do not repeat, no_repeat_ngram is not 1, and the
    strict integer fields take no 4.0 (the parser's own fuzzing is
    tests/fuzz/test_spec_properties.py)."""
    spec = copy.deepcopy(next(b for b in original["anyOf"] if b.get("type") == "object"))
    props = spec["properties"]
    for key, most in (("avoid", 2), ("prefer", 2)):
        entity = props[key]["items"]
        entity["properties"]["entity"] = {"anyOf": PLAIN_NAMES}
        entity["properties"]["aliases"] = {"type": "array", "maxItems": 1,
                                           "items": {"anyOf": [*PLAIN_NAMES, ODD_NAME]}}
        props[key] = {"type": "array", "minItems": 1, "maxItems": most, "items": entity}
    props["strategies"] = {"type": "array", "minItems": 1, "maxItems": 3, "uniqueItems": True,
                           "items": {"enum": list(STRATEGIES)}}
    props["no_repeat_ngram"] = {"enum": [None, 0, 2, 3, 4, 8, 32]}
    props["max_rollbacks"] = {"enum": [None, 0, 1, 2, 8, 32]}
    spec["required"] = ["avoid"]  # at least one entity
    return spec


def _prompt() -> dict[str, Any]:
    """Completions prompts: text, a small batch, token ids (some outside the vocabulary)."""
    text = {"type": "string", "minLength": 1, "maxLength": 200}
    ids = {"type": "array", "minItems": 1, "maxItems": 24,
           "items": {"type": "integer", "minimum": 0, "maximum": 60000}}
    return {"anyOf": [text, {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": text},
                      ids, {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": ids}]}


def bounded_schema(raw: dict[str, Any], *, model: str, adapter_path: str,
                   outside_path: str) -> dict[str, Any]:
    """The server's schema with cheap generation bounds and useful values."""
    schema = copy.deepcopy(raw)
    paths = schema["paths"]
    for route in GENERATION:
        body = _json_body(paths, route)
        props = body["properties"]
        props["max_tokens"] = _int_bound(MAX_TOKENS, nullable=False)
        props["n"] = {"type": "integer", "minimum": 1, "maximum": MAX_N}
        props["min_tokens"] = {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS}
        if "max_completion_tokens" in props:
            props["max_completion_tokens"] = _int_bound(MAX_TOKENS, nullable=True)
        # served names, a name the fuzzer may load, an unknown one (404); GET
        # /v1/models/{name} fuzzes the names themselves
        props["model"] = {"enum": [model, model, "grey-dpo", *ADAPTER_NAMES, FRESH_NAME,
                                   "no-such-model"]}
        # token ids as keys, or keys that are no number
        props["logit_bias"] = {"anyOf": [
            {"type": "object", "maxProperties": 8,
             "propertyNames": {"pattern": "^[0-9]{1,4}$"},
             "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}},
            {"type": "object", "minProperties": 1, "maxProperties": 2,
             "propertyNames": {"pattern": "[^0-9-]"}, "additionalProperties": {"type": "number"}},
            {"type": "null"}]}
        # steered half the time (an optional field would be present in a few cases only)
        props["steering"] = {"anyOf": [{"type": "null"}, _steering(props["steering"])]}
        # rejected whenever present (400 "not supported"): left to the negative cases
        for name in UNSUPPORTED:
            if name in props:
                props[name] = {"type": "null"}
        if "prompt" in props:
            props["prompt"] = _prompt()
        # chat's default budget is the rest of the context: every case names one
        # (negative cases without one are clamped, see `clamp`)
        body["required"] = sorted({*body.get("required", []), "max_tokens", "steering"})
    load = _json_body(paths, "/v1/adapters/load")["properties"]
    load["name"] = _known_or_odd([*ADAPTER_NAMES, FRESH_NAME, model, "grey-dpo", "fuzz:colon"],
                                 ODD_NAME)
    load["path"] = _known_or_odd([adapter_path, outside_path, adapter_path + "/../..",
                                  "/etc", "relative/path"], ODD_PATH)
    unload = _json_body(paths, "/v1/adapters/unload")["properties"]
    unload["name"] = _known_or_odd([*ADAPTER_NAMES, FRESH_NAME, "not-loaded"], ODD_NAME)
    for param in paths["/v1/models/{name}"]["get"]["parameters"]:
        if param["name"] == "name":
            param["schema"] = _known_or_odd([model, "grey-dpo", *ADAPTER_NAMES], ODD_NAME)
    return schema


def consistent(path: str, case):
    """Positive cases: make the fields that depend on each other agree (what a JSON schema
    cannot say), so that more of them get past validation and generate."""
    body = case.body
    if path not in GENERATION or not isinstance(body, dict):
        return case
    if body.get("top_logprobs") is not None and path == "/v1/chat/completions":
        body["logprobs"] = True
    if body.get("stream_options") is not None:
        body["stream"] = True
    if path == "/v1/completions" and body.get("echo") and body.get("logprobs") is not None:
        body["echo"] = False
    if body.get("temperature") == 0 and body.get("n", 1) > 1:
        body["n"] = 1  # greedy sampling has one choice
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        inner = fmt.get("json_schema")
        if not isinstance(inner, dict):
            inner = fmt["json_schema"] = {}
        if inner.get("schema") is None:
            inner["schema"] = {"type": "object", "properties": {"a": {"type": "integer"}}}
    return case


# -- cost guard for negative cases ----------------------------------------------------------
def _number(v: Any) -> float | None:
    """What pydantic's lax mode would read as a number (bools and junk: None)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def clamp(path: str, body: Any) -> bool:
    """Bound a generation body the server would accept but that would generate long; True
    when something was changed."""
    if path not in GENERATION or not isinstance(body, dict):
        return False
    changed = False
    for key, bound in (("max_tokens", MAX_TOKENS), ("max_completion_tokens", MAX_TOKENS),
                       ("n", MAX_N), ("best_of", MAX_N)):
        value = _number(body.get(key))
        if value is not None and bound < value <= 4096:
            body[key] = bound
            changed = True
    # the default budget: chat's is the rest of the context, completions' 16 tokens
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = MAX_TOKENS
        changed = True
    # a completions batch the server accepts (at most 64 prompts) but long to generate
    prompt = body.get("prompt")
    if isinstance(prompt, list) and MAX_BATCH < len(prompt) <= 64 \
            and all(isinstance(p, (str, list)) for p in prompt):
        body["prompt"] = prompt[:MAX_BATCH]
        changed = True
    return changed


# -- the checks ---------------------------------------------------------------------------
def header(response, name: str) -> str:
    """A header of schemathesis' response (its values are lists)."""
    value = response.headers.get(name)
    return ", ".join(value) if isinstance(value, list) else (value or "")


def _json(response) -> tuple[bool, Any]:
    try:
        return True, json.loads(response.content)
    except ValueError:
        return False, None


def _openai_error_problem(response) -> str | None:
    ok, payload = _json(response)
    if not ok:
        return f"not JSON: {response.text_lossy()[:200]!r}"
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        return f"no 'error' object: {payload!r:.200}"
    if set(err) != {"message", "type", "param", "code"}:
        return f"error keys {sorted(err)} != ['code', 'message', 'param', 'type']"
    if not isinstance(err["message"], str) or not err["message"]:
        return "error.message is not a non-empty string"
    if not isinstance(err["type"], str):
        return "error.type is not a string"
    if err["param"] is not None and not isinstance(err["param"], str):
        return "error.param is not a string or null"
    if err["code"] is not None and not isinstance(err["code"], str):
        return "error.code is not a string or null"
    if "application/json" not in header(response, "content-type"):
        return f"content-type {header(response, 'content-type')!r}"
    return None


_SSE_LINES = re.compile(r"\r\n|\r|\n")


def _stream_problem(response) -> str | None:
    if response.stream_cut_short:
        return "the event stream was not read to its end (timeout or too many events)"
    # lines end at CR, LF or CRLF only (the SSE format): str.splitlines() also splits at
    # U+0085, U+2028, U+001C..U+001E, which JSON strings may hold unescaped (a token's text)
    events = [line[6:] for line in _SSE_LINES.split(response.text_lossy())
              if line.startswith("data: ")]
    if not events:
        return "empty event stream"
    for data in events:
        if data == "[DONE]":
            continue
        try:
            event = json.loads(data)
        except ValueError:
            return f"event is not JSON: {data[:200]!r}"
        err = event.get("error") if isinstance(event, dict) else None
        if isinstance(err, dict) and err.get("type") in SERVER_ERROR_TYPES:
            return f"server error event in the stream: {data[:2000]}"
    if events[-1] != "[DONE]" and '"error"' not in events[-1]:
        return f"stream ends without [DONE]: {events[-1][:200]!r}"
    return None


def problem(path: str, response) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with a response, None when it is fine."""
    status = response.status_code
    if status >= 500:
        return "server_error", f"{status}: {response.text_lossy()[:3000]}"
    if 400 <= status < 500:
        bad = _openai_error_problem(response)
        return ("bad_4xx", f"{status}: {bad}") if bad else None
    if path == "/metrics":
        return None
    if "text/event-stream" in header(response, "content-type"):
        bad = _stream_problem(response)
        return ("bad_stream", bad) if bad else None
    if not _json(response)[0]:
        return "bad_2xx", f"{status}: not JSON: {response.text_lossy()[:200]!r}"
    return None


# -- the run ------------------------------------------------------------------------------
@dataclass
class Report:
    cases: int = 0
    clamped: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    by_operation: dict[str, collections.Counter] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    rejected: collections.Counter = field(default_factory=collections.Counter)  # 4xx by param
    examples: dict = field(default_factory=dict)  # one message per rejected key
    seconds_by: collections.Counter = field(default_factory=collections.Counter)
    # fields (and steering strategies) of the generation requests that were answered 200
    generated_with: collections.Counter = field(default_factory=collections.Counter)
    skipped: list[str] = field(default_factory=list)
    # ERROR / traceback lines the server logged during the run, with the request they name
    log_errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"{self.cases} cases in {self.seconds:.0f} s ({self.clamped} clamped); "
                 f"statuses {dict(sorted(self.statuses.items()))}"]
        for label, counter in self.by_operation.items():
            lines.append(f"  {label}: {dict(sorted(counter.items()))}")
        lines.extend(f"  skipped {s}" for s in self.skipped)
        lines.append(f"  generated (200) with: {dict(self.generated_with.most_common())}")
        lines.extend(f"  server log: {json.dumps(e, default=str)[:1500]}"
                     for e in self.log_errors[:20])
        return "\n".join(lines)


def run_fuzz(base: str, *, model: str, admin_key: str, adapter_path: str,
             outside_path: str, log_path: str | None = None, budget_scale: float = 1.0,
             timeout: float = 120) -> Report:
    """Every operation of the server's schema, positive then negative cases; the report
    holds every failure (nothing is raised for a bad response)."""
    raw = httpx.get(base + "/openapi.json", timeout=30).json()
    # streams are read to their end (schemathesis stops after 20 events by default)
    config = schemathesis.Config.from_dict({"max-stream-events": 100_000,
                                            "request-timeout": timeout})
    schema = schemathesis.openapi.from_dict(
        bounded_schema(raw, model=model, adapter_path=adapter_path, outside_path=outside_path),
        config=config)
    before = {m["id"] for m in httpx.get(base + "/v1/models", timeout=30).json()["data"]}
    sender = _Sender(base, admin_key, before, timeout)
    operations = sorted((result.ok() for result in schema.get_all_operations()),
                        key=lambda op: ORDER.get(op.path, len(ORDER)))
    started = time.monotonic()
    log_offset = Path(log_path).stat().st_size if log_path else 0
    try:
        for operation in operations:
            # the fuzzed names seldom name a real adapter: load (unload) the two fuzz
            # adapters explicitly first, and once more (already loaded: 400; not loaded: 404)
            explicit = _admin_bodies(operation.path, adapter_path)
            for body in [*explicit, *explicit[:1]]:
                sender.send(operation.Case(body=body),
                            f"{operation.method.upper()} {operation.path} [explicit]")
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                label = f"{operation.method.upper()} {operation.path} [{mode.value}]"
                examples = max(1, int(BUDGET.get((operation.path, mode), DEFAULT_BUDGET)
                                      * budget_scale))
                try:
                    strategy = operation.as_strategy(generation_mode=mode)
                    if mode is GenerationMode.POSITIVE:
                        strategy = strategy.map(lambda case, p=operation.path:
                                                consistent(p, case))
                    _fuzz_operation(strategy, examples,
                                    lambda case, label=label: sender.send(case, label))
                except Unsatisfiable:
                    # negative mode of a route without inputs: nothing to break
                    sender.report.skipped.append(f"{label}: no case to generate")
    finally:
        sender.report.seconds = time.monotonic() - started
        sender.session.close()
        _unload_fuzz_adapters(base, admin_key, before)
        if log_path:
            sender.report.log_errors = _log_errors(log_path, log_offset, sender.sent)
    return sender.report


LOG_ERROR = re.compile(r"\bERROR\b|Traceback|\bCRITICAL\b")
REQUEST_ID = re.compile(r"\b((?:chatcmpl|cmpl)-[0-9a-f]{8,})")


def _log_errors(log_path: str, offset: int, sent: dict[str, Any]) -> list[dict[str, Any]]:
    """The server's ERROR lines (and tracebacks) written since ``offset``, each with the
    fuzz request it names (the server's request ids are in its log lines)."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        if LOG_ERROR.search(line):
            ids = REQUEST_ID.findall(line)
            out.append({"line": line.strip()[:600],
                        "request": next((sent[i] for i in ids if i in sent), None)})
    return out


def _admin_bodies(path: str, adapter_path: str) -> list[dict[str, str]]:
    if path == "/v1/adapters/load":
        return [{"name": name, "path": adapter_path} for name in ADAPTER_NAMES]
    if path == "/v1/adapters/unload":
        return [{"name": name} for name in ADAPTER_NAMES]
    return []


def _fuzz_operation(strategy, examples: int, send) -> None:
    # no shrinking: `send` never raises for a bad response, it records it
    @settings(derandomize=DERANDOMIZE, database=None, max_examples=examples, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
              print_blob=False)
    @given(case=strategy)
    def fuzz(case):
        send(case)

    fuzz()


class _Sender:
    """Sends one case, checks the response and records the outcome."""

    def __init__(self, base: str, admin_key: str, protected: set[str], timeout: float):
        self.base = base
        self.admin_headers = {"Authorization": f"Bearer {admin_key}"}
        self.protected = protected  # models the session served before: never unloaded
        self.timeout = timeout
        self.session = requests.Session()
        self.report = Report()
        self.sent: dict[str, Any] = {}  # request id -> (label, request) of generation cases

    def send(self, case, label: str) -> None:
        report = self.report
        path = case.operation.path
        counter = report.by_operation.setdefault(label, collections.Counter())
        body = None if case.body is NOT_SET else case.body
        if clamp(path, body):
            report.clamped += 1
        if path == "/v1/adapters/unload" and isinstance(body, dict) \
                and isinstance(body.get("name"), str) and body["name"] in self.protected:
            body["name"] = ADAPTER_NAMES[0]
        report.cases += 1
        sent = time.monotonic()
        try:
            response = case.call(base_url=self.base, session=self.session,
                                 headers=self.admin_headers if path in ADMIN else None,
                                 timeout=self.timeout)
        except requests.RequestException as exc:
            counter["error"] += 1
            report.statuses["error"] += 1
            report.failures.append({"operation": label, "kind": "connection_error",
                                    "detail": repr(exc), "request": _request_of(case, body)})
            return
        status = response.status_code
        request_id = header(response, "x-request-id")
        if request_id:
            self.sent[request_id] = {"operation": label, "status": status,
                                     "request": _request_of(case, body)}
        counter[status] += 1
        report.statuses[status] += 1
        report.seconds_by[(label, status)] += time.monotonic() - sent
        if status == 200 and path in GENERATION and isinstance(body, dict):
            report.generated_with.update(k for k, v in body.items() if v not in (None, False))
            steering = body.get("steering")
            if isinstance(steering, dict):
                report.generated_with.update(f"steering.{s}"
                                             for s in steering.get("strategies") or ["default"])
        if 400 <= status < 500:
            payload = _json(response)[1]
            err = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(err, dict):
                key = (label, status, err.get("param") or err.get("code"))
                report.rejected[key] += 1
                report.examples.setdefault(key, str(err.get("message"))[:300])
        found = problem(path, response)
        if found:
            kind, detail = found
            report.failures.append({"operation": label, "kind": kind, "detail": detail,
                                    "request": _request_of(case, body),
                                    "request_id": header(response, "x-request-id")})


def _request_of(case, body) -> dict[str, Any]:
    return {"method": case.method, "path": case.formatted_path, "query": case.query,
            "body": body}


def _unload_fuzz_adapters(base: str, admin_key: str, before: set[str]) -> None:
    """Leave the shared session server with the models it had."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    now = {m["id"] for m in httpx.get(base + "/v1/models", timeout=30).json()["data"]}
    for name in sorted(now - before):
        httpx.post(base + "/v1/adapters/unload", json={"name": name}, headers=headers,
                   timeout=60)


# -- the test -----------------------------------------------------------------------------
@pytest.mark.engine
def test_schemathesis_finds_no_server_errors(server, tmp_path_factory):
    from greyelephant.shipped import shipped_root

    adapter_path = str(Path(shipped_root()) / "grey-dpo")
    # a path outside the server's adapter roots: must be refused (400)
    outside = Path(tmp_path_factory.getbasetemp()).parent / "fuzz-outside-adapter"
    report = run_fuzz(server["base"], model=server["model"], admin_key=server["admin_key"],
                      adapter_path=adapter_path, outside_path=str(outside),
                      log_path=str(server["log"]) if server.get("log") else None)
    print(report.summary())
    # kept beside the session's other files (pytest's base temp) for the record
    (Path(tmp_path_factory.getbasetemp()) / "schemathesis-summary.txt").write_text(
        report.summary() + "\n")
    log = Path(server["log"]).read_text(errors="replace") if server.get("log") else ""
    assert not report.failures, (
        report.summary() + "\n" + "\n".join(json.dumps(f, default=str)[:3000]
                                            for f in report.failures[:20])
        + "\nserver log tail:\n" + log[-4000:])
    assert report.cases >= MIN_CASES, report.summary()
    # the generation routes really generated (not only 4xx)
    for route in GENERATION:
        assert report.by_operation[f"POST {route} [positive]"][200] > 0, report.summary()
    # the models the session had are all still there
    listed = {m["id"] for m in httpx.get(server["v1"] + "/models", timeout=30).json()["data"]}
    assert {server["model"], "grey-dpo"} <= listed


def test_a_stream_event_whose_text_holds_a_unicode_line_separator_is_one_event():
    """SSE lines end at CR, LF or CRLF only: a token's text with U+0085 or U+2028 (JSON
    leaves them unescaped) stays inside its event, as the official client reads it."""

    class Streamed:
        stream_cut_short = False

        def __init__(self, text):
            self._text = text

        def text_lossy(self):
            return self._text

    event = json.dumps({"choices": [{"text": "a\x85b\u2028c\x1cd"}]}, ensure_ascii=False)
    assert _stream_problem(Streamed(f"data: {event}\r\n\r\ndata: [DONE]\n\n")) is None
    assert _stream_problem(Streamed("data: {\"cut\n\ndata: [DONE]\n\n")).startswith(
        "event is not JSON")
