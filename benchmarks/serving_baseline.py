"""Baseline serving benchmark: greyelephant vs vLLM's own OpenAI server, same model, same
engine flags, same machine, same run, both driven by vLLM's serving benchmark client
(`vllm.benchmarks.serve`, random dataset). Servers are measured alternately for
--rounds rounds; the report gives every round and the median ratio.

    python -m greyelephant.benchmarks.serving_baseline --rounds 2

Writes benchmarks/results/serving_baseline.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ENGINE_FLAGS = ["--enforce-eager", "--max-model-len", "2048", "--gpu-memory-utilization", "0.4",
                "--dtype", "bfloat16"]
METRICS = ["output_throughput", "request_throughput", "mean_ttft_ms", "median_ttft_ms",
           "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "completed"]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(1)
    raise TimeoutError(url)


def start(kind: str, model_path: str, name: str, port: int, log: Path) -> subprocess.Popen:
    if kind == "greyelephant":
        cmd = [sys.executable, "-m", "greyelephant", "serve", "--model", model_path,
               "--served-model-name", name, "--port", str(port), *ENGINE_FLAGS]
        ready = f"http://127.0.0.1:{port}/ready"
    else:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
               "--served-model-name", name, "--port", str(port), "--host", "127.0.0.1",
               *ENGINE_FLAGS]
        ready = f"http://127.0.0.1:{port}/health"
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_ready(ready, proc)
    return proc, cmd


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def bench(model_path: str, name: str, port: int, args, out_dir: Path, tag: str) -> dict:
    result_file = f"{tag}.json"
    cmd = [sys.executable, "-c",
           "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
           "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
           "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))",
           "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}",
           "--endpoint", "/v1/completions", "--model", name, "--tokenizer", model_path,
           "--dataset-name", "random", "--random-input-len", str(args.input_len),
           "--random-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts),
           "--max-concurrency", str(args.concurrency), "--ignore-eos", "--seed", "0",
           "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", "50,90,99",
           "--save-result", "--result-dir", str(out_dir), "--result-filename", result_file]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    data = json.loads((out_dir / result_file).read_text())
    return {k: data.get(k) for k in METRICS}, cmd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="model dir (default: the embedded model)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from greyelephant.server.model_store import resolve_model

    model_path, name = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="ge-bench-"))
    rounds = []
    commands = {}
    for r in range(args.rounds):
        order = ["greyelephant", "vllm"] if r % 2 == 0 else ["vllm", "greyelephant"]
        row = {}
        for kind in order:
            proc, server_cmd = start(kind, model_path, name, args.port, work / f"{kind}-{r}.log")
            try:
                bench(model_path, name, args.port, args, work, f"warmup-{kind}-{r}")
                row[kind], bench_cmd = bench(model_path, name, args.port, args, work, f"{kind}-{r}")
            finally:
                stop(proc)
            commands[kind] = {"server": server_cmd, "client": bench_cmd}
            print(kind, r, json.dumps(row[kind]), flush=True)
        row["ratio_output_throughput"] = (row["greyelephant"]["output_throughput"]
                                          / row["vllm"]["output_throughput"])
        rounds.append(row)

    def med(kind, key):
        return statistics.median(r[kind][key] for r in rounds)

    summary = {k: {m: med(k, m) for m in METRICS} for k in ("greyelephant", "vllm")}
    summary["ratio_output_throughput_median"] = statistics.median(
        r["ratio_output_throughput"] for r in rounds)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, CPU-only",
        "command": "python -m greyelephant.benchmarks.serving_baseline " + " ".join(sys.argv[1:]),
        "workload": vars(args) | {"out": str(args.out), "model": name},
        "engine_flags": ENGINE_FLAGS,
        "rounds": rounds,
        "median": summary,
        "commands": commands,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving_baseline.json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Serving baseline: greyelephant vs vLLM's OpenAI server",
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
        for kind in ("greyelephant", "vllm"):
            m = row[kind]
            lines.append(f"| {i} | {kind} | {m['output_throughput']:.1f} | {m['median_ttft_ms']:.1f} "
                         f"| {m['p99_ttft_ms']:.1f} | {m['median_tpot_ms']:.2f} | {m['p99_tpot_ms']:.2f} |")
    per_round = ", ".join(f"{r['ratio_output_throughput']:.3f}" for r in rounds)
    lines += ["", f"Median output-throughput ratio greyelephant / vLLM: "
                  f"**{summary['ratio_output_throughput_median']:.3f}** "
                  f"(per round: {per_round})", ""]
    (args.out / "serving_baseline.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
