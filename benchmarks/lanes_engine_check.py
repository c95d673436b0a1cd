"""The lanes in the real engine: 80 concurrent greedy steered chats against a running
server, answers and steering reports written as JSON; given a second such file (the same
requests against another build, e.g. one with the lanes off), it counts identical answers.

    greyelephant serve --port 8535 --max-num-seqs 96        # (a CPU server's default
    python benchmarks/lanes_engine_check.py 8535 new.json   #  batch stays below 64 rows)
    python benchmarks/lanes_engine_check.py 8536 old.json --against new.json

With ``--distinct``, each request brings its own spec: 3 of :data:`ENTITIES` drawn for it
(the same draws every run), so the batch's rows hold many specs at once (the lanes'
per-spec arrays, the specs' bounds, one compiled call over many specs).

What the engine's steering processor did over the run comes from the server's
``/metrics`` (its step counters, ``greyelephant_steering_*_total``, read before and after;
docs/steering.md, "The processor's step counters"): steered steps, row steps, the share
on the lanes' fast path and from the plan pool, rollback signals. They are printed, and
are the whole server's: run nothing else against it meanwhile. (Before those counters,
the docs' lane figures came from a scratch clone whose ``Lanes.advance`` wrote its counts
to a file.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

import httpx

from greyelephant.control.step_stats import NAMES as COUNTERS

MODEL = "SmolLM2-135M-Instruct"
STEERING = {"avoid": ["Disneyland", "McDonald's", "Burger King"],
            "prefer": ["Knott's Berry Farm"], "strategies": ["logits"]}
# --distinct: each request avoids 3 of these, drawn by random.Random(its index)
ENTITIES = ["Disneyland", "McDonald's", "Burger King", "Universal Studios", "Six Flags",
            "Wendy's", "Taco Bell", "SeaWorld", "KFC", "Legoland", "Subway", "Starbucks"]
PROMPTS = ([f"Write two sentences about theme parks in California, number {i}."
            for i in range(40)]
           + [f"Name a famous fast food chain and describe it, take {i}." for i in range(40)])


def steering_for(i: int, distinct: bool) -> dict:
    """Request ``i``'s steering: :data:`STEERING`, or with ``distinct`` its own 3
    entities."""
    if not distinct:
        return STEERING
    return {**STEERING, "avoid": random.Random(i).sample(ENTITIES, 3)}


async def _one(client: httpx.AsyncClient, prompt: str, steering: dict) -> dict:
    r = await client.post("/v1/chat/completions", json={
        "model": MODEL, "temperature": 0, "max_tokens": 48, "steering": steering,
        "messages": [{"role": "user", "content": prompt}]})
    body = r.json()
    report = body.get("steering", {}) if r.status_code == 200 else {}
    return {"status": r.status_code,
            "text": body["choices"][0]["message"]["content"] if r.status_code == 200 else body,
            "violations": report.get("violations"), "rollbacks": report.get("rollbacks")}




def steering_counters(metrics_text: str) -> dict[str, float]:
    """The processor's step counters in a /metrics text, summed over engine processes."""
    out = dict.fromkeys(COUNTERS, 0.0)
    for line in metrics_text.splitlines():
        for name in COUNTERS:
            if line.startswith(f"greyelephant_steering_{name}_total{{"):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


def describe_counters(delta: dict[str, float]) -> str:
    rows = delta["row_steps"] or 1.0
    return (f"engine: {delta['steps']:.0f} steered steps, {delta['row_steps']:.0f} row "
            f"steps, {delta['fast_row_steps']:.0f} on the fast path "
            f"({100 * delta['fast_row_steps'] / rows:.1f}%), {delta['pooled_row_steps']:.0f} "
            f"pooled ({100 * delta['pooled_row_steps'] / rows:.1f}%), "
            f"{delta['rollback_signals']:.0f} rollback signals, "
            f"{delta['anticipated_starts']:.0f} anticipated starts, V2 staged "
            f"{delta['v2_staged_steps']:.0f} / read back {delta['v2_read_back_steps']:.0f}")


async def run(port: int, distinct: bool = False) -> list[dict]:
    async with httpx.AsyncClient(base_url=f"http://localhost:{port}", timeout=900) as client:
        return list(await asyncio.gather(*(_one(client, p, steering_for(i, distinct))
                                           for i, p in enumerate(PROMPTS))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("port", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("--against", type=Path, help="an earlier run's JSON to compare with")
    ap.add_argument("--distinct", action="store_true",
                    help="each request its own spec (3 of ENTITIES)")
    args = ap.parse_args(argv)
    metrics = f"http://localhost:{args.port}/metrics"
    before = steering_counters(httpx.get(metrics, timeout=60).text)
    results = asyncio.run(run(args.port, args.distinct))
    after = steering_counters(httpx.get(metrics, timeout=60).text)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print("statuses", sorted({r["status"] for r in results}),
          "violations", sum(r["violations"] or 0 for r in results),
          "rollbacks", sum(r["rollbacks"] or 0 for r in results))
    print(describe_counters({k: after[k] - before[k] for k in COUNTERS}))
    if args.against:
        other = json.loads(args.against.read_text())
        same = sum(a["text"] == b["text"] for a, b in zip(results, other, strict=True))
        print(f"identical answers: {same} of {len(results)}")
    return 0 if all(r["status"] == 200 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
