"""Steering-quality eval on any file in the DESIGN.md eval format (JSONL: id, domain,
avoid, avoid_aliases, prefer, messages).

For every case and every row (a set of strategies, or `none` for no steering) it sends one
greedy chat request to a server and measures, with the project's one detector:
mention_rate (a surface form of `avoid` in the answer), near_miss_rate (the entity named
misspelt or bent, the detector's near-miss mode; an answer with both counts as a mention),
prefer_rate (`prefer` named),
degenerate_rate (control/quality.py), latency. Writes `summary.json`, `summary.md` and
`cases.jsonl` (every output) to --out.

    greyelephant eval --data ../shared/evals/pink_elephant_dev.jsonl --serve
    greyelephant eval --data FILE --base-url http://127.0.0.1:8000/v1 --rows none,logits
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from greyelephant.client import AsyncClient
from greyelephant.invocation import command_line
from greyelephant.control.detector import detector_for
from greyelephant.control.quality import degeneracy

DOC = __doc__
DEFAULT_ROWS = "none,directive,logits,directive+logits"
REQUIRED = ("id", "avoid", "prefer", "messages")


def load_cases(path: Path) -> list[dict]:
    cases = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        case = json.loads(line)
        missing = [k for k in REQUIRED if k not in case]
        if missing:
            raise ValueError(f"{path}:{n}: missing {missing}")
        case.setdefault("avoid_aliases", [])
        cases.append(case)
    return cases


def parse_rows(spec: str) -> list[tuple[str, list[str]]]:
    rows = []
    for name in spec.split(","):
        name = name.strip()
        strategies = [] if name == "none" else name.split("+")
        rows.append((name, strategies))
    return rows


def steering_for(case: dict, strategies: list[str], max_revisions: int | None) -> dict | None:
    if not strategies:
        return None
    spec = {"avoid": [{"entity": case["avoid"], "aliases": case["avoid_aliases"]}],
            "prefer": [case["prefer"]], "strategies": strategies}
    if max_revisions is not None:
        spec["max_revisions"] = max_revisions
    return spec


async def run_case(client: AsyncClient, model: str, case: dict, row: str,
                   strategies: list[str], args) -> dict:
    fields = {"temperature": 0, "max_tokens": args.max_tokens}
    steering = steering_for(case, strategies, args.max_revisions)
    if steering:
        fields["steering"] = steering
    started = time.perf_counter()
    data = await client.chat_json(case["messages"], model=model, **fields)
    latency = time.perf_counter() - started
    text = data["choices"][0]["message"]["content"]
    det = detector_for([(case["avoid"], tuple(case["avoid_aliases"]))])
    spans = det.find(text)
    near = det.near_misses(text, spans)
    prefer_spans = detector_for([case["prefer"]]).find(text)
    return {
        "id": case["id"], "row": row, "strategies": strategies, "avoid": case["avoid"],
        "prefer": case["prefer"], "text": text, "mention": bool(spans),
        "mentions": [s.text for s in spans],
        # a text with both counts once, as a mention
        "near_miss": bool(near) and not spans, "near_misses": [n.text for n in near],
        "prefer_named": bool(prefer_spans),
        "degenerate": degeneracy(text), "latency_s": round(latency, 4),
        "completion_tokens": data["usage"]["completion_tokens"],
        "finish_reason": data["choices"][0]["finish_reason"],
        "steering": data.get("steering"),
    }


def summarise(records: list[dict]) -> dict:
    n = len(records)
    lat = sorted(r["latency_s"] for r in records)
    return {
        "cases": n,
        "mention_rate": round(sum(r["mention"] for r in records) / n, 4),
        "near_miss_rate": round(sum(r["near_miss"] for r in records) / n, 4),
        "prefer_rate": round(sum(r["prefer_named"] for r in records) / n, 4),
        "degenerate_rate": round(sum(r["degenerate"] is not None for r in records) / n, 4),
        "latency_p50_s": round(statistics.median(lat), 3),
        "latency_p95_s": round(lat[min(n - 1, int(0.95 * n))], 3),
        "mean_completion_tokens": round(sum(r["completion_tokens"] for r in records) / n, 1),
        "revisions": sum((r["steering"] or {}).get("revisions", 0) for r in records),
        "rollbacks_per_case": round(sum((r["steering"] or {}).get("rollbacks", 0)
                                        for r in records) / n, 3),
    }


async def evaluate(base_url: str, model: str | None, cases: list[dict], args) -> dict:
    rows = parse_rows(args.rows)
    async with AsyncClient(base_url, args.api_key, timeout=600, max_retries=0) as client:
        if model is None:
            model = await client.default_model()
        limit = asyncio.Semaphore(args.concurrency)

        async def bounded(case, row, strategies):
            async with limit:
                return await run_case(client, model, case, row, strategies, args)

        results = {}
        for row, strategies in rows:  # rows run one after another: latencies stay comparable
            results[row] = await asyncio.gather(*(bounded(c, row, strategies) for c in cases))
    return model, results


def write_report(out: Path, data_path: Path, model: str, results: dict, args) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = {row: summarise(records) for row, records in results.items()}
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "command": command_line(),
        "data": str(data_path), "model": model, "decoding": "greedy (temperature 0)",
        "max_tokens": args.max_tokens,
    }
    (out / "summary.json").write_text(json.dumps({**meta, "rows": summary}, indent=2))
    with open(out / "cases.jsonl", "w") as f:
        for records in results.values():
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    lines = [f"# Steering eval: {data_path.name}", "",
             *(f"- {k}: {v}" for k, v in meta.items()), "",
             "| row | cases | mention_rate | near_miss_rate | prefer_rate | degenerate_rate "
             "| latency p50 s | latency p95 s | mean tokens | revisions | rollbacks / case |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row, s in summary.items():
        lines.append(f"| {row} | {s['cases']} | {s['mention_rate']:.3f} "
                     f"| {s['near_miss_rate']:.3f} | {s['prefer_rate']:.3f} "
                     f"| {s['degenerate_rate']:.3f} | {s['latency_p50_s']} | {s['latency_p95_s']} "
                     f"| {s['mean_completion_tokens']} | {s['revisions']} "
                     f"| {s['rollbacks_per_case']} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", type=Path, required=True, help="eval JSONL (DESIGN.md format)")
    ap.add_argument("--rows", default=DEFAULT_ROWS,
                    help=f"comma-separated rows; each 'none' or strategies joined by '+' "
                         f"(default {DEFAULT_ROWS})")
    ap.add_argument("--base-url", default=os.environ.get("GREYELEPHANT_BASE_URL",
                                                         "http://127.0.0.1:8000/v1"))
    ap.add_argument("--api-key", default=os.environ.get("GREYELEPHANT_API_KEY"))
    ap.add_argument("--serve", action="store_true",
                    help="start a local server for the eval (embedded model unless --serve-arg)")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra flag for the started server, e.g. --serve-arg=--adapter=a=PATH")
    ap.add_argument("--model", default=None, help="model or adapter name (default: first listed)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-revisions", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("runs/eval"))


def run(args: argparse.Namespace) -> int:
    cases = load_cases(args.data)
    if args.serve:
        from greyelephant.launcher import LocalServer

        args.out.mkdir(parents=True, exist_ok=True)
        server_args = ["--enforce-eager", "--max-model-len", "2048", *args.serve_arg]
        with LocalServer(server_args, log_path=args.out / "server.log") as srv:
            model, results = asyncio.run(evaluate(srv.v1, args.model, cases, args))
    else:
        model, results = asyncio.run(evaluate(args.base_url, args.model, cases, args))
    write_report(args.out, args.data, model, results, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="greyelephant eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
