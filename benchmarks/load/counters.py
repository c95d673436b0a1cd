"""The steering events a run caused, from the server's Prometheus counters (pure parsing).

Read before and after each run on a greyelephant server; the difference is what that run
made happen: steered requests by strategy, rollbacks (a ban that fired inside an avoided
form and rewound the choice), their continuations prepared ahead (used, or discarded),
critique-revise revisions, and the avoided-entity mentions
the detector found in drafts and in final answers.
"""

from __future__ import annotations

import re

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+([-+0-9.eEinfNa]+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

EVENTS = {
    "rollbacks": ("greyelephant_steering_rollbacks_total", {}),
    # rollback continuations submitted ahead of their rollback: used, or aborted unused
    "prepared_used": ("greyelephant_steering_prepared_continuations_total", {"outcome": "used"}),
    "prepared_discarded": ("greyelephant_steering_prepared_continuations_total",
                           {"outcome": "discarded"}),
    "revisions": ("greyelephant_steering_revisions_total", {}),
    "draft_mentions": ("greyelephant_steering_violations_total", {"stage": "draft"}),
    "final_mentions": ("greyelephant_steering_violations_total", {"stage": "final"}),
}


def parse_prometheus(text: str) -> dict[tuple[str, tuple], float]:
    """Samples of a Prometheus text exposition: (name, sorted label pairs) -> value."""
    out: dict[tuple[str, tuple], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line.strip())
        if not m:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(3) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            continue
    return out


# vLLM's own engine counters (the same names on greyelephant's /metrics): the work behind
# a run's output — steps, tokens computed, tokens generated (a rollback discards some),
# prompt tokens and the prefix cache's share of them, engine requests (a rollback starts one)
ENGINE = {
    "steps": ("vllm:iteration_tokens_total_count", {}),
    "computed_tokens": ("vllm:iteration_tokens_total_sum", {}),
    "generated_tokens": ("vllm:generation_tokens_total", {}),
    "prompt_tokens": ("vllm:prompt_tokens_total", {}),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total", {}),
    "requests": ("vllm:request_success_total", {}),
    # prompt tokens computed, counted with the prefills that ran (the prefix cache's hits
    # are counted at scheduling, also for requests aborted before their first token)
    "prompt_computed": ("vllm:prompt_tokens_by_source_total", {"source": "local_compute"}),
}


def _value(samples: dict, name: str, labels: dict) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def steering_events(before: dict, after: dict) -> dict:
    """Counter differences between two scrapes: the events and the steered requests per
    strategy."""
    out = {k: round(_value(after, n, ls) - _value(before, n, ls), 3)
           for k, (n, ls) in EVENTS.items()}
    strategies = {}
    for (name, labels), v in after.items():
        if name == "greyelephant_steering_requests_total":
            d = v - before.get((name, labels), 0.0)
            if d:
                strategies[dict(labels).get("strategy", "?")] = round(d, 3)
    out["steered_requests"] = strategies
    out["engine"] = engine_work(before, after)
    return out


def engine_work(before: dict, after: dict) -> dict:
    """The engine's work between two scrapes (:data:`ENGINE`), with ``prefill_tokens``:
    prompt tokens the prefix cache did not serve (vLLM's own count where it has one, else
    prompt tokens minus prefix-cache hits)."""
    out = {k: round(_value(after, n, ls) - _value(before, n, ls), 3)
           for k, (n, ls) in ENGINE.items()}
    name = ENGINE["prompt_computed"][0]
    counted = any(n == name for n, _ in after)
    computed = out.pop("prompt_computed")
    out["prefill_tokens"] = (computed if counted
                             else round(out["prompt_tokens"] - out["prefix_cache_hits"], 3))
    return out


def per_request(events: dict, requests: int) -> dict:
    n = max(1, requests)
    return {f"{k}_per_request": round(events.get(k, 0) / n, 3)
            for k in ("rollbacks", "revisions", "draft_mentions", "final_mentions")}


def session_cpu_seconds(session: int, proc: str = "/proc") -> float:
    """User + system CPU seconds of every live process in a session (a server started with
    ``start_new_session``: its API process, engine core and workers). On a machine shared
    with other work, wall-clock throughput moves with everybody's load; the CPU time the
    server spends per generated token moves much less."""
    return sum(session_cpu_by_process(session, proc).values())


def session_cpu_by_process(session: int, proc: str = "/proc") -> dict[str, float]:
    """:func:`session_cpu_seconds` per process name (the kernel's ``comm``, 15 characters:
    the API process — ``python`` under ``python -m``, ``greyelephant`` from the console
    script —, ``VLLM::EngineCor`` the engine core, ``VLLM::Worker`` the model runner),
    processes of one name summed."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        head, tail = stat.rsplit(")", 1)
        fields = tail.split()
        if len(fields) > 12 and int(fields[3]) == session:
            name = head.split("(", 1)[1] if "(" in head else "?"
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out
