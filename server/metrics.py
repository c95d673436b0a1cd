"""Prometheus metrics. /metrics serves these plus vLLM's own engine metrics (vllm:*, e.g.
vllm:num_requests_waiting — the scheduler's queue), which share the default registry, and
the steering processor's step counters, which the engine's processes write
(:mod:`greyelephant.control.step_stats`; read at each scrape)."""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from greyelephant.control.step_stats import FIELDS, STATS_DIR_ENV, read_stats

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    _instance: Metrics | None = None

    def __new__(cls):
        # prometheus_client registers globally; one set per process.
        if cls._instance is None:
            self = super().__new__(cls)
            self.requests = Counter("greyelephant_requests_total", "HTTP requests",
                                    ["route", "status"])
            self.latency = Histogram("greyelephant_request_latency_seconds",
                                     "End-to-end request latency", ["route"],
                                     buckets=_LATENCY_BUCKETS)
            self.ttft = Histogram("greyelephant_time_to_first_token_seconds",
                                  "Time to first generated token", ["route"],
                                  buckets=_LATENCY_BUCKETS)
            self.prompt_tokens = Counter("greyelephant_prompt_tokens_total", "Prompt tokens")
            self.completion_tokens = Counter("greyelephant_completion_tokens_total",
                                             "Generated tokens")
            self.in_flight = Gauge("greyelephant_requests_in_flight",
                                   "Generation requests being served")
            self.queue_depth = Gauge("greyelephant_queue_depth",
                                     "Generation requests admitted but without a first token yet")
            self.steering = Counter("greyelephant_steering_requests_total",
                                    "Requests with steering, by strategy", ["strategy"])
            self.revisions = Counter("greyelephant_steering_revisions_total",
                                     "Critique-revise revisions generated")
            self.rollbacks = Counter("greyelephant_steering_rollbacks_total",
                                     "Rollbacks of logits-steered choices to where an "
                                     "avoided form began")
            self.prepared = Counter("greyelephant_steering_prepared_continuations_total",
                                    "Rollback continuations submitted while a choice was "
                                    "inside an avoided form, by outcome (used: its rollback "
                                    "came; discarded: the text left the form, or the "
                                    "choice ended)", ["outcome"])
            self.admitted = Gauge("greyelephant_requests_admitted",
                                  "Generation requests admitted and not finished (engine "
                                  "sequences: a request with n choices counts n)")
            self.admission_limit = Gauge("greyelephant_admission_limit",
                                         "--max-num-seqs + --max-queued-requests (0: no limit)")
            self.rejected = Counter("greyelephant_requests_rejected_total",
                                    "Generation requests refused before any work", ["reason"])
            self.timeouts = Counter("greyelephant_request_timeouts_total",
                                    "Generation requests aborted at --request-timeout")
            self.draining = Gauge("greyelephant_draining",
                                  "1 while the server drains in-flight requests on shutdown")
            self.violations = Counter("greyelephant_steering_violations_total",
                                      "Avoided-entity mentions found", ["stage"])
            self.loop_lag = Histogram("greyelephant_event_loop_lag_seconds",
                                      "How late the server's event loop ran its 0.1 s "
                                      "heartbeat (time it could serve nothing)",
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                               2.5, 5, 10, 30, 60))
            self.loop_stalls = Counter("greyelephant_event_loop_stalls_total",
                                       "Event-loop stalls of 1 s or more (each is logged with "
                                       "the loop's stack)")
            REGISTRY.register(SteeringStepCollector())
            cls._instance = self
        return cls._instance


class SteeringStepCollector:
    """``greyelephant_steering_<field>_total{pid}`` for each of
    :data:`greyelephant.control.step_stats.FIELDS`: the totals each engine process that
    steers wrote to its stats file in the directory :class:`.engine.EngineHandle` made
    (named by :data:`~greyelephant.control.step_stats.STATS_DIR_ENV`), read at each
    scrape."""

    def describe(self):
        return [CounterMetricFamily(_steering_name(name), text, labels=["pid"])
                for name, text in FIELDS]

    def collect(self):
        stats = read_stats(os.environ.get(STATS_DIR_ENV))
        for name, text in FIELDS:
            family = CounterMetricFamily(_steering_name(name), text, labels=["pid"])
            for pid, values in stats.items():
                family.add_metric([pid], values[name])
            yield family


def _steering_name(field: str) -> str:
    return f"greyelephant_steering_{field}"  # (exported with the suffix _total)
