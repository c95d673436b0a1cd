"""Baseline serving benchmark: two servers, same model, same engine flags, same machine,
same run, both driven by vLLM's serving benchmark client (`vllm.benchmarks.serve`, random
dataset, base-model requests only). Servers are measured alternately for --rounds rounds;
the report gives every round and the median ratio of the first to the second.

* ``--pair vllm`` (default): greyelephant (no adapter served, so LoRA off) vs vLLM's own
  OpenAI server;
* ``--pair lora``: greyelephant serving its shipped adapters (LoRA on, the default) vs
  greyelephant with ``--no-shipped-adapters``: what enabling LoRA costs base-model requests;
* ``--pair dtype``: greyelephant with ``--dtype float32`` vs ``--dtype bfloat16`` (both
  without adapters): what the CPU dtype default (``greyelephant/cpu_features.py``)
  rests on.

    python -m greyelephant.benchmarks.serving_baseline --rounds 2
    python -m greyelephant.benchmarks.serving_baseline --pair lora --rounds 3
    python -m greyelephant.benchmarks.serving_baseline --pair dtype --rounds 2

Writes benchmarks/results/serving_baseline.{json,md} (``serving_baseline-lora.*``,
``serving_baseline-dtype.*`` for the other pairs). Every server runs in bfloat16 unless its
kind says otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
from pathlib import Path

from greyelephant.cpu_features import machine_description
from greyelephant.benchmarks.serve_client import METRICS, Workload, run_vllm_bench
from greyelephant.launcher import LocalServer

RESULTS = Path(__file__).resolve().parent / "results"


def _kv_flags() -> list[str]:
    """--gpu-memory-utilization sized to the machine (greyelephant.benchmarks.load.servers):
    on CPU it is a share of the node's memory, worker included, so a fixed small value
    leaves no KV cache and the engine refuses to start."""
    from greyelephant.benchmarks.load.run import _node_memory
    from greyelephant.benchmarks.load.servers import kv_cache_share

    return ["--gpu-memory-utilization", str(kv_cache_share(*_node_memory()))]


ENGINE_FLAGS = ["--enforce-eager", "--max-model-len", "2048", "--dtype", "bfloat16"]


PAIRS = {"vllm": ("greyelephant", "vllm"), "lora": ("greyelephant+lora", "greyelephant"),
         "dtype": ("greyelephant-fp32", "greyelephant")}
LABELS = {"greyelephant": "greyelephant, no adapter (--no-shipped-adapters)",
          "greyelephant+lora": "greyelephant serving its shipped adapters (LoRA on)",
          "greyelephant-fp32": "greyelephant, no adapter, --dtype float32",
          "vllm": "vLLM's OpenAI server"}


def server_for(kind: str, model_path: str, name: str, port: int, log: Path) -> LocalServer:
    common = ["--model", model_path, "--served-model-name", name, *ENGINE_FLAGS, *_kv_flags()]
    if kind == "greyelephant-fp32":  # the last --dtype wins
        return LocalServer([*common, "--dtype", "float32", "--no-shipped-adapters"], port=port,
                           log_path=log)
    if kind == "greyelephant":
        return LocalServer([*common, "--no-shipped-adapters"], port=port, log_path=log)
    if kind == "greyelephant+lora":
        return LocalServer(common, port=port, log_path=log)
    return LocalServer(["--host", "127.0.0.1", *common], port=port, log_path=log,
                       cmd=[sys.executable, "-m", "vllm.entrypoints.openai.api_server"],
                       ready_path="/health")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="model dir (default: the embedded model)")
    ap.add_argument("--pair", choices=sorted(PAIRS), default="vllm")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from greyelephant.model_store import resolve_model

    model_path, name = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="ge-bench-"))
    workload = Workload(args.input_len, args.output_len, args.num_prompts, args.concurrency)
    rounds = []
    commands = {}
    first, second = PAIRS[args.pair]
    for r in range(args.rounds):
        order = [first, second] if r % 2 == 0 else [second, first]
        row = {}
        for kind in order:
            with server_for(kind, model_path, name, args.port, work / f"{kind}-{r}.log") as srv:
                run_vllm_bench(srv.base, name, model_path, workload, work, f"warmup-{kind}-{r}")
                row[kind], bench_cmd = run_vllm_bench(srv.base, name, model_path, workload, work,
                                                      f"{kind}-{r}")
            commands[kind] = {"server": srv.cmd, "client": bench_cmd}
            print(kind, r, json.dumps(row[kind]), flush=True)
        row["ratio_output_throughput"] = (row[first]["output_throughput"]
                                          / row[second]["output_throughput"])
        rounds.append(row)

    def med(kind, key):
        return statistics.median(r[kind][key] for r in rounds)

    summary = {k: {m: med(k, m) for m in METRICS} for k in (first, second)}
    summary["ratio_output_throughput_median"] = statistics.median(
        r["ratio_output_throughput"] for r in rounds)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "command": "python -m greyelephant.benchmarks.serving_baseline " + " ".join(sys.argv[1:]),
        "workload": vars(args) | {"out": str(args.out), "model": name},
        "servers": {k: LABELS[k] for k in (first, second)},
        "engine_flags": ENGINE_FLAGS,
        "rounds": rounds,
        "median": summary,
        "commands": commands,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "serving_baseline" if args.pair == "vllm" else f"serving_baseline-{args.pair}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Serving baseline: {LABELS[first]} vs {LABELS[second]}",
        "",
        f"- date: {report['date']}",
        f"- machine: {report['machine']}",
        f"- command: `{report['command']}`",
        f"- workload: random dataset, input {args.input_len}, output {args.output_len} "
        f"(ignore_eos), {args.num_prompts} prompts, concurrency {args.concurrency}, "
        f"/v1/completions streaming, engine flags `{' '.join(ENGINE_FLAGS)}`; "
        f"one warm-up pass per server start, servers alternated over {args.rounds} rounds",
        "",
        "| round | server | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(rounds):
        for kind in (first, second):
            m = row[kind]
            lines.append(f"| {i} | {kind} | {m['output_throughput']:.1f} | {m['median_ttft_ms']:.1f} "
                         f"| {m['p99_ttft_ms']:.1f} | {m['median_tpot_ms']:.2f} | {m['p99_tpot_ms']:.2f} |")
    per_round = ", ".join(f"{r['ratio_output_throughput']:.3f}" for r in rounds)
    lines += ["", f"Median output-throughput ratio {first} / {second}: "
                  f"**{summary['ratio_output_throughput_median']:.3f}** "
                  f"(per round: {per_round})", ""]
    (args.out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
