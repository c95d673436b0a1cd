"""Per-run statistics from per-request measurements (pure).

One run = one load-generator pass at one concurrency or request rate. From each request's
TTFT, inter-token latencies, end-to-end latency and output length (vLLM's serving benchmark
saves them all) this computes the percentiles, the throughput and the goodput:

* TPOT of a request = (e2e - TTFT) / (output tokens - 1), as vLLM and guidellm define it;
* goodput = requests per second that completed *and* met every SLO (TTFT <= slo_ttft_ms and
  TPOT <= slo_tpot_ms), over the run's duration (DistServe's definition, the one
  ``vllm bench serve --goodput`` uses); also as output tokens/s of those requests.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class SLO:
    # an interactive chat on a CPU: the first token within 2 s, then >= 5 tokens/s
    ttft_ms: float = 2000.0
    tpot_ms: float = 200.0

    def label(self) -> str:
        return f"TTFT <= {self.ttft_ms:g} ms and TPOT <= {self.tpot_ms:g} ms"


def percentile(values: list[float], p: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    xs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def tpot_s(ttft: float, latency: float, output_len: int) -> float | None:
    if output_len is None or output_len < 2:
        return None
    return (latency - ttft) / (output_len - 1)


def summarize(requests: list[dict], duration_s: float, slo: SLO) -> dict:
    """``requests``: one dict per request with ``ok`` (bool), ``ttft_s``, ``latency_s``,
    ``itl_s`` (list), ``output_len``, ``error`` (str or None). Times in seconds; the summary's
    latencies are in milliseconds."""
    ok = [r for r in requests if r.get("ok")]
    failed = len(requests) - len(ok)
    errors = sorted({(r.get("error") or "").strip().splitlines()[0][:200]
                     for r in requests if not r.get("ok") and r.get("error")})
    ttft = [r["ttft_s"] * 1e3 for r in ok]
    e2e = [r["latency_s"] * 1e3 for r in ok]
    tpot = [t * 1e3 for t in (tpot_s(r["ttft_s"], r["latency_s"], r["output_len"]) for r in ok)
            if t is not None]
    itl = [x * 1e3 for r in ok for x in (r.get("itl_s") or [])]
    out_tokens = sum(r["output_len"] for r in ok)
    good = [r for r in ok if r["ttft_s"] * 1e3 <= slo.ttft_ms
            and (tpot_s(r["ttft_s"], r["latency_s"], r["output_len"]) or 0.0) * 1e3
            <= slo.tpot_ms]
    dur = max(duration_s, 1e-9)
    s = {
        "requests": len(requests), "completed": len(ok), "failed": failed,
        "error_rate": round(failed / len(requests), 4) if requests else 0.0,
        "errors": errors[:5],
        "duration_s": round(duration_s, 3),
        "output_tokens": out_tokens,
        "output_throughput": round(out_tokens / dur, 3),
        "request_throughput": round(len(ok) / dur, 4),
        "goodput_rps": round(len(good) / dur, 4),
        "goodput_tok_s": round(sum(r["output_len"] for r in good) / dur, 3),
        "slo_attained": round(len(good) / len(requests), 4) if requests else 0.0,
    }
    for name, xs in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2e", e2e)):
        s[f"mean_{name}_ms"] = round(statistics.fmean(xs), 3) if xs else None
        for p in PERCENTILES:
            v = percentile(xs, p)
            s[f"p{p}_{name}_ms"] = round(v, 3) if v is not None else None
    return s


def from_vllm_result(result: dict) -> tuple[list[dict], float]:
    """Per-request records and duration from ``vllm.benchmarks.serve.main``'s result."""
    reqs = []
    n = len(result.get("ttfts", []))
    errors = result.get("errors") or [""] * n
    for i in range(n):
        err = errors[i] if i < len(errors) else ""
        reqs.append({"ok": not err, "ttft_s": result["ttfts"][i],
                     "latency_s": result["latencies"][i], "itl_s": result["itls"][i],
                     "output_len": result["output_lens"][i], "error": err or None})
    return reqs, float(result["duration"])


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 4)


def median_or_none(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(statistics.median(vals), 4) if vals else None


def quartiles(xs: list[float | None]) -> list[float] | None:
    """[first, third] quartile of the values (numpy's linear interpolation), None for
    fewer than 2: the middle half of a scenario's per-round ratios, how far they spread."""
    vals = [x for x in xs if x is not None]
    if len(vals) < 2:
        return None
    return [round(percentile(vals, 25), 4), round(percentile(vals, 75), 4)]


def saturation(points: list[dict]) -> dict | None:
    """The sweep point with the highest output throughput (the knee of the curve)."""
    pts = [p for p in points if p.get("output_throughput")]
    return max(pts, key=lambda p: p["output_throughput"]) if pts else None


def poisson_rates(saturation_rps: float, fractions: tuple[float, ...]) -> list[float]:
    """Request rates for a Poisson sweep up to (and past) the measured saturation rate."""
    if not saturation_rps or saturation_rps <= 0:
        return []
    return [round(saturation_rps * f, 3) for f in fractions if f > 0]
