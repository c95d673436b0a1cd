"""Drive a server with vLLM's own serving benchmark client (`vllm.benchmarks.serve`,
random dataset, /v1/completions streaming) and return its headline metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

METRICS = ["output_throughput", "request_throughput", "mean_ttft_ms", "median_ttft_ms",
           "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "completed"]


@dataclass
class Workload:
    input_len: int = 128
    output_len: int = 64
    num_prompts: int = 64
    concurrency: int = 16


def run_vllm_bench(base_url: str, model_name: str, tokenizer: str, workload: Workload,
                   out_dir: Path, tag: str, extra_body: dict | None = None
                   ) -> tuple[dict, list[str]]:
    result_file = f"{tag}.json"
    cmd = [sys.executable, "-c",
           "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
           "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
           "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))",
           "--backend", "openai", "--base-url", base_url,
           "--endpoint", "/v1/completions", "--model", model_name, "--tokenizer", tokenizer,
           "--dataset-name", "random", "--random-input-len", str(workload.input_len),
           "--random-output-len", str(workload.output_len),
           "--num-prompts", str(workload.num_prompts),
           "--max-concurrency", str(workload.concurrency), "--ignore-eos", "--seed", "0",
           "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", "50,90,99",
           "--save-result", "--result-dir", str(out_dir), "--result-filename", result_file]
    if extra_body:
        cmd += ["--extra-body", json.dumps(extra_body)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    data = json.loads((out_dir / result_file).read_text())
    if not data.get("completed"):
        raise RuntimeError(f"benchmark {tag}: no request completed ({data.get('failed')} failed); "
                           f"errors: {[e for e in data.get('errors', []) if e][:3]}")
    return {k: data.get(k) for k in METRICS}, cmd
