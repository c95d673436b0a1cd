"""The loop guard's table rebuilds (``control/ngram_table.py``), against an older commit's,
on the CPU, in the same run.

``NgramTable`` keeps every steered row's n-grams in one hash table; when more than half
of it is full, the push that would pass that rebuilds it, keeping the open rows' entries
only. That rebuild runs inside one decode step: at B=256 a table of 2^18 entries (6 MB),
a stall of that step that the per-step means of ``steering_step`` spread thin. This script
times the rebuilds alone.

B rows guard 4-grams (the ``no_repeat_ngram`` default) and take one random token a step
from SmolLM2's vocabulary size; each row restarts (closed, a new one opened) with
probability ``1 / --answer-tokens`` a step, as requests end and new ones come. Both
versions get the same tokens and restarts; their pushes are interleaved step by step, each
version taking each place in turn, and every step's bans are checked equal. Reported per
version: the rebuilds' median and largest time, how many there were, and the mean time
of a push step (rebuilds included).

    python -m greyelephant.benchmarks.ngram_rebuild --ref ae7dd75 --out DIR

Writes ``ngram_rebuild.json`` and ``.md`` to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from greyelephant.benchmarks.ref_module import REPO, git_rev, load_ref_module, run_meta

N = 4  # the loop guard's default n-gram size
VOCAB = 49_152  # SmolLM2's vocabulary size


def _timed_rebuilds(table, into: list[float]) -> None:
    """Record each of ``table``'s rebuilds' seconds in ``into``."""
    rebuild = table._rebuild

    def timed(extra: int) -> None:
        t0 = time.perf_counter()
        rebuild(extra)
        into.append(time.perf_counter() - t0)

    table._rebuild = timed


def run(versions: dict, b: int, steps: int, answer_tokens: int, seed: int) -> dict:
    """Each version's rebuild times and mean push step over the same workload."""
    rng = np.random.default_rng(seed)
    names = list(versions)
    tables = {name: versions[name].NgramTable() for name in names}
    handles = {name: np.array([t.open(N) for _ in range(b)], dtype=np.int64)
               for name, t in tables.items()}
    rebuilds: dict[str, list[float]] = {name: [] for name in names}
    pushes: dict[str, float] = dict.fromkeys(names, 0.0)
    for name, table in tables.items():
        table.warm_up()
        _timed_rebuilds(table, rebuilds[name])
    for step in range(steps):
        tokens = rng.integers(0, VOCAB, b, dtype=np.int64)
        restart = (rng.random(b) < 1 / answer_tokens).nonzero()[0].tolist()
        shift = step % len(names)
        hits = {}
        for name in names[shift:] + names[:shift]:
            table, hs = tables[name], handles[name]
            for k in restart:
                table.close(int(hs[k]))
                hs[k] = table.open(N)
            t0 = time.perf_counter()
            hits[name] = table.push_hits(hs, tokens)
            pushes[name] += time.perf_counter() - t0
        if len({json.dumps(h) for h in hits.values()}) != 1:
            raise RuntimeError(f"the versions' bans differ at step {step}")
    return {name: {"rebuilds": len(rebuilds[name]),
                   "rebuild_median_ms": statistics.median(rebuilds[name]) * 1e3
                   if rebuilds[name] else None,
                   "rebuild_max_ms": max(rebuilds[name], default=0.0) * 1e3,
                   "push_step_mean_us": pushes[name] / steps * 1e6}
            for name in names}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="the older commit to compare against")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--answer-tokens", type=int, default=85,
                    help="mean tokens before a row restarts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    from greyelephant.control import ngram_table

    ref, head = git_rev(args.ref), git_rev("HEAD")
    versions = {"ref": load_ref_module(ref, "control/ngram_table.py", "_ngram_table_ref"),
                "current": ngram_table}
    batches = [int(x) for x in args.batches.split(",")]
    rounds = []
    for r in range(args.rounds):
        got = {str(b): run(versions, b, args.steps, args.answer_tokens, r) for b in batches}
        rounds.append(got)
        print(json.dumps({"round": r, **got}), flush=True)

    def median(b: int, name: str, key: str) -> float:
        return statistics.median(x[str(b)][name][key] for x in rounds)

    rows = [{"B": b, **{f"{name}_{key}": round(median(b, name, key), 2)
                        for name in versions
                        for key in ("rebuild_median_ms", "rebuild_max_ms",
                                    "push_step_mean_us")},
             "rebuilds": [x[str(b)]["current"]["rebuilds"] for x in rounds],
             "rebuild_ratio_rounds": [round(x[str(b)]["current"]["rebuild_median_ms"]
                                            / x[str(b)]["ref"]["rebuild_median_ms"], 2)
                                      for x in rounds]}
            for b in batches]
    meta = run_meta("ngram_rebuild", ref, head, argv,
                    f"B rows of {N}-grams, one random token of {VOCAB} a step, each row "
                    f"restarting with probability 1/{args.answer_tokens} a step; "
                    f"{args.steps} steps per round, the versions interleaved, bans "
                    "checked equal every step; medians over the rounds")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ngram_rebuild.json").write_text(
        json.dumps({**meta, "rows": rows, "rounds": rounds}, indent=1) + "\n")
    short = ref[:7]
    md = [f"# Loop-guard table rebuilds: current vs {short} (cpu)", "",
          *(f"- {k}: {v}" for k, v in meta.items()), "",
          f"| B | rebuilds per round | rebuild median ms {short} → current | per round "
          f"| largest ms {short} → current | push step mean µs {short} → current |",
          "|---|---|---|---|---|---|",
          *(f"| {r['B']} | {', '.join(map(str, r['rebuilds']))} | "
            f"{r['ref_rebuild_median_ms']} → {r['current_rebuild_median_ms']} | "
            + ", ".join(f"{x:.2f}" for x in r["rebuild_ratio_rounds"]) + " | "
            f"{r['ref_rebuild_max_ms']} → {r['current_rebuild_max_ms']} | "
            f"{r['ref_push_step_mean_us']} → {r['current_push_step_mean_us']} |"
            for r in rows), ""]
    (args.out / "ngram_rebuild.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
