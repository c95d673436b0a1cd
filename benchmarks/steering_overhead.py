"""What steering costs a serving engine, measured against the same server unsteered.

1. Throughput: vLLM's serving benchmark client (random dataset, input 128, output 64,
   64 prompts, concurrency 16, /v1/completions streaming) without steering and with
   `steering: {avoid: 30 entities, strategies: ["logits"]}` in every request, alternating
   for --rounds rounds on one server. Ratio = steered / unsteered output tok/s.
2. Critique-revise latency when the draft is clean: sequential greedy chat requests
   (64 tokens, ignore_eos) with `strategies: ["critique_revise"]` avoiding entities the
   prompts never lead to, vs the same requests without steering, interleaved.
   Ratio = median latency with / without.

    python -m greyelephant.benchmarks.steering_overhead --rounds 3

Writes benchmarks/results/steering_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from greyelephant.cpu_features import machine_description
from greyelephant.benchmarks.serve_client import Workload, run_vllm_bench
from greyelephant.launcher import LocalServer

RESULTS = Path(__file__).resolve().parent / "results"
# no --gpu-memory-utilization: the server's CPU default (0.2 of the node's memory) leaves room
# for the KV cache; a fixed 0.1 left none and the engine refused to start
ENGINE_FLAGS = ["--enforce-eager", "--max-model-len", "2048"]
DEV = Path(__file__).resolve().parents[1].parent / "shared" / "evals" / "pink_elephant_dev.jsonl"
FALLBACK_ENTITIES = [
    "Eiffel Tower", "Nike", "Coca-Cola", "iPhone", "Tesla", "Amazon", "Google", "Beatles",
    "Shakespeare", "Einstein", "McDonald's", "Starbucks", "Windows", "Netflix", "Lego",
    "Harry Potter", "Star Wars", "Real Madrid", "Michael Jordan", "Mount Everest",
    "Great Wall of China", "Taj Mahal", "Statue of Liberty", "Big Ben", "Colosseum",
    "Mona Lisa", "Titanic", "Pikachu", "Minecraft", "Bitcoin",
]
CLEAN_PROMPTS = [
    "Give me three tips for keeping basil alive on a windowsill.",
    "How do I boil an egg so the yolk stays soft?",
    "Explain what a prime number is to a ten-year-old.",
    "What is a good warm-up before a short jog?",
    "How can I make my handwriting neater?",
    "Suggest a name for a grey cat.",
    "What should I pack for a rainy weekend hike?",
    "How do I remove a coffee stain from a cotton shirt?",
]


def thirty_entities() -> list[dict]:
    if DEV.is_file():
        cases = [json.loads(line) for line in DEV.read_text().splitlines() if line.strip()]
        ents = [{"entity": c["avoid"], "aliases": c.get("avoid_aliases", [])} for c in cases]
        if len(ents) >= 30:
            return ents[:30]
    return [{"entity": e} for e in FALLBACK_ENTITIES]


def clean_draft_latency(v1: str, model: str, rounds: int) -> dict:
    steering = {"avoid": ["pink elephant", "Eiffel Tower"], "strategies": ["critique_revise"]}
    plain, revised, revisions = [], [], 0
    with httpx.Client(base_url=v1, timeout=120) as c:
        def once(prompt, with_steering):
            body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 64, "temperature": 0, "ignore_eos": True}
            if with_steering:
                body["steering"] = steering
            t = time.perf_counter()
            r = c.post("/chat/completions", json=body)
            r.raise_for_status()
            return time.perf_counter() - t, r.json().get("steering")

        once(CLEAN_PROMPTS[0], False)  # warm-up
        for r in range(rounds):
            for i, prompt in enumerate(CLEAN_PROMPTS):
                order = (False, True) if (i + r) % 2 == 0 else (True, False)
                for with_steering in order:
                    dt_s, report = once(prompt, with_steering)
                    if with_steering:
                        revised.append(dt_s)
                        revisions += report["revisions"]
                    else:
                        plain.append(dt_s)
    return {"requests_per_condition": len(plain),
            "plain_median_s": statistics.median(plain),
            "critique_revise_median_s": statistics.median(revised),
            "ratio": statistics.median(revised) / statistics.median(plain),
            "revisions_made": revisions}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--skip-latency", action="store_true",
                    help="only the throughput comparison")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from greyelephant.model_store import resolve_model

    model_path, name = resolve_model(None)
    work = Path(tempfile.mkdtemp(prefix="ge-steer-"))
    workload = Workload(num_prompts=args.num_prompts)
    entities = thirty_entities()
    steered_body = {"steering": {"avoid": entities, "strategies": ["logits"]}}
    rounds = []
    with LocalServer(["--model", model_path, "--served-model-name", name, *ENGINE_FLAGS],
                     log_path=work / "server.log") as srv:
        dtype = httpx.get(srv.base + "/ready", timeout=10).json().get("dtype")
        run_vllm_bench(srv.base, name, model_path, workload, work, "warmup")
        for r in range(args.rounds):
            row = {}
            for kind in (("plain", "steered") if r % 2 == 0 else ("steered", "plain")):
                extra = steered_body if kind == "steered" else None
                row[kind], _ = run_vllm_bench(srv.base, name, model_path, workload, work,
                                              f"{kind}-{r}", extra_body=extra)
                print(kind, r, json.dumps(row[kind]), flush=True)
            row["ratio"] = row["steered"]["output_throughput"] / row["plain"]["output_throughput"]
            rounds.append(row)
        latency = None if args.skip_latency else clean_draft_latency(srv.v1, name,
                                                                     max(1, args.rounds - 1))

    ratio = statistics.median(r["ratio"] for r in rounds)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "command": "python -m greyelephant.benchmarks.steering_overhead " + " ".join(sys.argv[1:]),
        "engine_flags": ENGINE_FLAGS, "engine_dtype": dtype, "workload": vars(workload),
        "steering": {"entities": len(entities), "strategies": ["logits"]},
        "throughput_rounds": rounds, "throughput_ratio_median": ratio,
        "clean_draft_critique_revise": latency,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "steering_overhead.json").write_text(json.dumps(report, indent=2))
    lines = ["# Steering overhead (same server, same run)", "",
             f"- date: {report['date']}", f"- machine: {report['machine']}",
             f"- command: `{report['command']}`",
             f"- engine flags: `{' '.join(ENGINE_FLAGS)}`; dtype {dtype} (the server's, from "
             "/ready)",
             f"- throughput workload: random, input {workload.input_len}, output "
             f"{workload.output_len} (ignore_eos), {workload.num_prompts} prompts, concurrency "
             f"{workload.concurrency}, vLLM's bench client; steered = every request avoids "
             f"{len(entities)} entities with the `logits` strategy", "",
             "| round | plain tok/s | steered tok/s | ratio | plain TPOT p50 ms | steered TPOT p50 ms |",
             "|---|---|---|---|---|---|"]
    for i, r in enumerate(rounds):
        lines.append(f"| {i} | {r['plain']['output_throughput']:.1f} | "
                     f"{r['steered']['output_throughput']:.1f} | {r['ratio']:.3f} | "
                     f"{r['plain']['median_tpot_ms']:.2f} | {r['steered']['median_tpot_ms']:.2f} |")
    lines += ["", f"Median steered/plain throughput ratio: **{ratio:.3f}**", ""]
    if latency:
        lines += ["Critique-revise with clean drafts (sequential greedy chat, 64 tokens): "
                  f"median {latency['critique_revise_median_s']:.3f} s vs plain "
                  f"{latency['plain_median_s']:.3f} s → ratio **{latency['ratio']:.3f}** over "
                  f"{latency['requests_per_condition']} requests each; revisions made: "
                  f"{latency['revisions_made']}", ""]
    (args.out / "steering_overhead.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
