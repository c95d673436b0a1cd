"""What rollback decoding costs a serving engine, on prompts that do trigger rollbacks.

One server; vLLM's own serving benchmark client drives /v1/chat/completions (streaming)
with the dev set's 30 prompts (each leads the model toward one of 30 well-known entities),
greedy, a fixed number of output tokens (ignore_eos), at a fixed concurrency. Rounds
alternate on the same server:

* plain — no steering;
* steered — every request avoids all 30 dev-set entities (aliases included) with the
  `logits` strategy: the word-end ban with rollback (the server's defaults).

Reported per round: output tok/s (accepted tokens only: rolled-back tokens are work the
server did that the client never sees), TTFT/TPOT, and the rollbacks the server made
(its /metrics counter), per request. The headline is the median steered/plain ratio.

    python -m greyelephant.benchmarks.rollback_throughput --rounds 3
    python -m greyelephant.benchmarks.rollback_throughput --rounds 3 --block-size 32

Writes benchmarks/results/rollback_throughput[-<tag>].{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from greyelephant.benchmarks.datasets import dev_set
from greyelephant.launcher import LocalServer

RESULTS = Path(__file__).resolve().parent / "results"
ENGINE_FLAGS = ["--enforce-eager", "--max-model-len", "2048"]
METRICS = ["output_throughput", "request_throughput", "median_ttft_ms", "p99_ttft_ms",
           "median_tpot_ms", "p99_tpot_ms", "completed", "failed"]


def cases() -> list[dict]:
    return [json.loads(line) for line in dev_set().read_text().splitlines() if line.strip()]


def steering_body(all_cases: list[dict]) -> dict:
    return {"avoid": [{"entity": c["avoid"], "aliases": c.get("avoid_aliases", [])}
                      for c in all_cases], "strategies": ["logits"]}


def counter(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def run_bench(v1: str, model: str, tokenizer: str, dataset: Path, args, out: Path, tag: str,
              extra_body: dict) -> dict:
    cmd = [sys.executable, "-c",
           "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
           "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
           "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))",
           "--backend", "openai-chat", "--base-url", v1.removesuffix("/v1"),
           "--endpoint", "/v1/chat/completions", "--model", model, "--tokenizer", tokenizer,
           "--dataset-name", "custom", "--dataset-path", str(dataset), "--skip-chat-template",
           "--custom-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts),
           "--max-concurrency", str(args.concurrency), "--ignore-eos", "--temperature", "0",
           "--seed", "0", "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles",
           "50,99", "--save-result", "--result-dir", str(out), "--result-filename",
           f"{tag}.json", "--extra-body", json.dumps(extra_body)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    data = json.loads((out / f"{tag}.json").read_text())
    if not data.get("completed"):
        raise RuntimeError(f"{tag}: no request completed; errors: {data.get('errors', [])[:3]}")
    return {k: data.get(k) for k in METRICS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-prompts", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--output-len", type=int, default=160)
    ap.add_argument("--block-size", type=int, default=None,
                    help="KV block size (prefix caching granularity); default: vLLM's")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--serve-arg", action="append", default=[])
    args = ap.parse_args(argv)

    all_cases = cases()
    flags = [*ENGINE_FLAGS, *args.serve_arg]
    if args.block_size:
        flags += ["--block-size", str(args.block_size)]
    name = "rollback_throughput" + (f"-{args.tag}" if args.tag else "")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        dataset = tmpd / "prompts.jsonl"
        dataset.write_text("".join(json.dumps({"prompt": c["messages"][-1]["content"]}) + "\n"
                                   for c in all_cases))
        with LocalServer(flags, log_path=tmpd / "server.log", timeout=900) as srv:
            model = httpx.get(f"{srv.v1}/models", timeout=30).json()["data"][0]
            tokenizer = model.get("root") or model["id"]
            for r in range(args.rounds):
                row = {"round": r}
                for mode in ("plain", "steered"):
                    body = {} if mode == "plain" else {"steering": steering_body(all_cases)}
                    before = counter(srv.base, "greyelephant_steering_rollbacks_total")
                    m = run_bench(srv.v1, model["id"], tokenizer, dataset, args, tmpd,
                                  f"{mode}-{r}", body)
                    m["rollbacks"] = counter(srv.base, "greyelephant_steering_rollbacks_total") \
                        - before
                    m["rollbacks_per_request"] = round(m["rollbacks"] / max(1, m["completed"]), 3)
                    row[mode] = m
                    print(mode, r, json.dumps(m), flush=True)
                row["ratio"] = row["steered"]["output_throughput"] / row["plain"]["output_throughput"]
                rounds.append(row)
    ratios = [r["ratio"] for r in rounds]
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "command": "python -m greyelephant.benchmarks.rollback_throughput "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "engine_flags": flags,
        "workload": {"prompts": "dev set (30 prompts, repeated)", "num_prompts": args.num_prompts,
                     "concurrency": args.concurrency, "output_len": args.output_len,
                     "decoding": "greedy, ignore_eos", "endpoint": "/v1/chat/completions (stream)",
                     "steered": "avoid the 30 dev-set entities (with aliases), strategies "
                                "[logits], server default max_rollbacks"},
        "rounds": rounds,
        "median_ratio": statistics.median(ratios),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Rollback throughput ({name})", "",
             f"- date: {result['date']}", f"- machine: {result['machine']}",
             f"- command: `{result['command']}`", f"- engine flags: `{' '.join(flags)}`",
             f"- workload: {json.dumps(result['workload'])}", "",
             "| round | plain tok/s | steered tok/s | ratio | rollbacks / request | plain TPOT p50 ms "
             "| steered TPOT p50 ms | plain TTFT p50 ms | steered TTFT p50 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        p, s = r["plain"], r["steered"]
        lines.append(f"| {r['round']} | {p['output_throughput']:.1f} | {s['output_throughput']:.1f} "
                     f"| {r['ratio']:.3f} | {s['rollbacks_per_request']} "
                     f"| {p['median_tpot_ms']:.1f} | {s['median_tpot_ms']:.1f} "
                     f"| {p['median_ttft_ms']:.0f} | {s['median_ttft_ms']:.0f} |")
    lines += ["", f"Median steered/plain output throughput: **{result['median_ratio']:.3f}**"]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
