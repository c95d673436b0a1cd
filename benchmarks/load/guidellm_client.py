"""guidellm (the package from the registry, in its own environment ``.venv-guidellm``,
made by ``scripts/install.sh guidellm``) as the second load generator: a Poisson sweep up
to saturation — guidellm's ``sweep`` profile runs a synchronous pass (one request at a
time), a throughput pass (all at once: the saturation rate), then Poisson rates spread
between the two.

The run is described by a guidellm scenario file (JSON) written next to the results; the
``steering`` object rides in every request's body (``backend.extras.body``). Output: the
JSON report guidellm writes, reduced here to one point per strategy (rate, throughput,
TTFT/TPOT/ITL/e2e percentiles, goodput under the same SLOs, errors).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .stats import SLO

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".venv-guidellm"


def guidellm_bin(venv: Path | None = None) -> Path | None:
    venv = Path(venv or os.environ.get("GUIDELLM_VENV") or DEFAULT_VENV)
    exe = venv / "bin" / "guidellm"
    return exe if exe.exists() else None


def scenario_config(target: str, model: str, tokenizer: str, out_json: Path, *,
                    input_len: int, output_len: int, sweep_size: int, max_seconds: float,
                    max_requests: int, slo: SLO, body: dict | None = None,
                    seed: int = 0, max_concurrency: int = 16) -> dict:
    """The guidellm scenario (``guidellm run -c FILE``) of one Poisson sweep."""
    extras = {"body": {"ignore_eos": True, "temperature": 0, **(body or {})}}
    return {
        "metadata": {"name": "greyelephant-bench-load",
                     "description": "Poisson sweep up to saturation"},
        "spec": {
            "backend": {"kind": "openai_http", "target": target, "model": model,
                        "request_format": "/v1/completions", "extras": extras,
                        "timeout": 600},
            # the throughput pass runs max_concurrency streams at once: bounded so that its
            # requests finish within max_seconds on a small CPU server
            "profile": {"kind": "sweep", "sweep_size": sweep_size, "strategy_type": "poisson",
                        "max_concurrency": max_concurrency},
            "data": [{"kind": "synthetic_text", "prompt_tokens": input_len,
                      "output_tokens": output_len}],
            "tokenizer": {"kind": "huggingface_auto", "model": tokenizer},
            "constraints": [{"kind": "max_duration", "seconds": max_seconds},
                            {"kind": "max_requests", "count": max_requests}],
            "metrics": {"kind": "generative", "sample_size": 0,
                        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms}},
            "seed": {"kind": "static", "value": seed},
            "outputs": [{"kind": "json", "path": str(out_json)}],
        },
    }


def run(config: dict, config_path: Path, log: Path, venv: Path | None = None,
        timeout: float = 1800) -> dict:
    exe = guidellm_bin(venv)
    if exe is None:
        raise FileNotFoundError("guidellm is not installed: run scripts/install.sh guidellm")
    config_path.write_text(json.dumps(config, indent=2))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "GUIDELLM__LOGGING__CONSOLE_LOG_LEVEL": "WARNING"}
    cmd = [str(exe), "run", "-c", str(config_path), "--disable-console-interactive"]
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=True,
                       timeout=timeout)
    out = Path(config["spec"]["outputs"][0]["path"])
    return json.loads(out.read_text())


def _get(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def _dist(metrics: dict, name: str, scale: float = 1.0) -> dict:
    """guidellm's distribution summary (successful requests) -> mean / p50 / p90 / p99."""
    d = _get(metrics, name, "successful") or {}
    pct = d.get("percentiles") or {}

    def g(*keys):
        for k in keys:
            if k in pct and pct[k] is not None:
                return round(pct[k] * scale, 3)
            if k in d and d[k] is not None:
                return round(d[k] * scale, 3)
        return None

    return {"mean": g("mean"), "p50": g("p50", "median"), "p90": g("p90"), "p99": g("p99")}


def points(report: dict) -> list[dict]:
    """One point per benchmark (strategy) of guidellm's JSON report."""
    out = []
    for b in report.get("benchmarks", []):
        m = b.get("metrics", {})
        strategy = _get(b, "config", "strategy") or {}
        kind = strategy.get("type_") or strategy.get("kind") or "?"
        rate = strategy.get("rate")
        if kind == "throughput":
            rate = None  # all at once: the saturation point
        totals = _get(m, "request_totals") or _get(b, "request_totals") or {}
        point = {
            "generator": "guidellm", "strategy": kind, "target_rate": rate,
            "request_throughput": _get(m, "requests_per_second", "successful", "mean"),
            "output_throughput": _get(m, "output_tokens_per_second", "successful", "mean"),
            "completed": totals.get("successful"), "failed": totals.get("errored"),
            "incomplete": totals.get("incomplete"),
        }
        for name, key, scale in (("ttft", "time_to_first_token_ms", 1.0),
                                 ("tpot", "time_per_output_token_ms", 1.0),
                                 ("itl", "inter_token_latency_ms", 1.0),
                                 ("e2e", "request_latency", 1000.0)):
            d = _dist(m, key, scale)
            point[f"mean_{name}_ms"] = d["mean"]
            for p in (50, 90, 99):
                point[f"p{p}_{name}_ms"] = d[f"p{p}"]
        point["goodput_rps"] = _get(m, "request_goodput", "successful", "mean")
        point["slo_attained"] = m.get("slo_attainment")
        point["errors"] = point["failed"] or 0
        out.append(point)
    return out
