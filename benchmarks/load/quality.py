"""``greyelephant bench quality``: the steering eval (benchmarks/steering_eval.py) as a
benchmark family — any eval file in the DESIGN.md format, a table per strategy x model /
adapter: mention, near-miss, prefer and degenerate rates, latency, revisions and rollbacks.
Writes quality-<preset>.{json,md}, a PNG per run and every answer (…-cases.jsonl) to
benchmarks/results/<date>-<machine>/, compared with the previous run of the preset.

    greyelephant bench quality --preset small        # dev set, 4 strategies, base + adapter
    greyelephant bench quality --preset full         # + held-out entities, 5 strategies
    greyelephant bench quality --data FILE.jsonl --rows none,logits --models base
    greyelephant bench quality --base-url http://127.0.0.1:8000/v1   # a running server

One server is started (unless --base-url): greyelephant at its defaults, which serve the
shipped adapter grey-dpo (adapters/grey-dpo; older servers get --adapter grey-dpo=...), so
the base model and the adapter are measured on the same server.
Greedy decoding; the rows run one after another (latencies stay comparable).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from greyelephant.cpu_features import machine_description
from greyelephant.benchmarks import steering_eval

from . import history, scenarios as sc
from .servers import ADAPTER, SERVERS, kv_cache_share, server_command

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--preset", choices=sorted(sc.PRESETS), default="small")
    ap.add_argument("--data", type=Path, action="append", default=[],
                    help="eval file(s) in the DESIGN.md format (repeatable; default: the "
                         "preset's files in benchmarks/data/)")
    ap.add_argument("--rows", default=None,
                    help="strategies, comma-separated; each 'none' or strategies joined by "
                         "'+' (default: the preset's)")
    ap.add_argument("--models", default="base,grey-dpo",
                    help="'base' (the served model) and/or adapter names (default: "
                         "base,grey-dpo)")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--max-revisions", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--base-url", default=None, help="use a running server instead")
    ap.add_argument("--api-key", default=os.environ.get("GREYELEPHANT_API_KEY"))
    ap.add_argument("--kv-share", type=float, default=None)
    ap.add_argument("--out", type=Path, default=history.RESULTS)
    ap.add_argument("--note", default="")


def table_rows(results: dict[tuple[str, str], dict[str, list[dict]]]) -> list[dict]:
    """(file, model) -> row -> records  ==>  one summary row per file x model x strategy
    (steering_eval.summarise)."""
    out = []
    for (file, model), rows in results.items():
        for row, records in rows.items():
            out.append({"file": file, "model": model, "row": row,
                        **steering_eval.summarise(records)})
    return out


def quality_markdown(result: dict) -> str:
    from .report import comparison_lines, fmt, table

    lines = [f"# Steering quality — preset `{result['preset']}`", "",
             f"- date: {result['date']} · machine: {result['machine']}"
             + (f" · {result['note']}" if result.get("note") else ""),
             f"- command: `{result['command']}` ({result['duration_min']} min)",
             f"- server: {result['server']}",
             f"- decoding: greedy, max_tokens {result['max_tokens']}, concurrency "
             f"{result['concurrency']}; rates over the file's cases (a mention: the answer "
             "names the avoided entity or an alias; near miss: names it misspelt or bent, "
             "without a mention; prefer: names the preferred entity; degenerate: "
             "control/quality.py)", ""]
    if result.get("plot"):
        lines += [f"![quality per strategy]({result['plot']})", ""]
    rows = [[r["file"], r["model"], f"`{r['row']}`", r["cases"], fmt(r["mention_rate"], 3),
             fmt(r["near_miss_rate"], 3), fmt(r["prefer_rate"], 3), fmt(r["degenerate_rate"], 3),
             fmt(r["latency_p50_s"], 2), fmt(r["latency_p95_s"], 2), r["revisions"],
             fmt(r["rollbacks_per_case"], 2)] for r in result["table"]]
    lines += table(["file", "model", "strategies", "cases", "mention", "near miss", "prefer",
                    "degenerate", "latency p50 s", "latency p95 s", "revisions",
                    "rollbacks / case"], rows)
    lines += [""] + comparison_lines(result)
    lines += ["Every answer is in the `-cases.jsonl` file next to this one.", ""]
    return "\n".join(lines)


async def _evaluate_all(base_url: str, files: list[Path], models: list[str], base_name: str,
                        args) -> dict:
    out = {}
    for path in files:
        cases = steering_eval.load_cases(path)
        for m in models:
            model = base_name if m == "base" else m
            _, results = await steering_eval.evaluate(base_url, model, cases, args)
            out[(path.name, m if m != "base" else base_name)] = results
            print(f"  {path.name} x {model}: done", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="greyelephant bench quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    args = ap.parse_args(argv)
    preset = sc.PRESETS[args.preset]
    files = args.data or [DATA / f for f in preset.quality_files]
    args.rows = args.rows or preset.quality_rows
    args.max_tokens = args.max_tokens or preset.quality_max_tokens
    args.concurrency = args.concurrency or preset.quality_concurrency
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.time()

    from greyelephant.model_store import resolve_model

    model_path, base_name = resolve_model(None)
    if args.base_url:
        server_desc = args.base_url
        results = asyncio.run(_evaluate_all(args.base_url, files, models, base_name, args))
    else:
        from greyelephant.launcher import LocalServer

        from .run import _node_memory

        share = args.kv_share or kv_cache_share(*_node_memory())
        adapters = [m for m in models if m != "base"]
        spec = SERVERS["greyelephant" if adapters else "greyelephant-like"]
        if adapters and adapters != [ADAPTER[0]]:
            raise SystemExit(f"only the shipped adapter {ADAPTER[0]} is started here; use "
                             "--base-url for others")
        cmd, srv_args, ready = server_command(spec, model_path, base_name, share, REPO)
        work = Path(tempfile.mkdtemp(prefix="ge-bench-quality-"))
        server_desc = " ".join(["greyelephant serve", *srv_args])
        with LocalServer(srv_args, cmd=cmd, ready_path=ready, log_path=work / "server.log",
                         timeout=900, cwd=str(REPO)) as srv:
            results = asyncio.run(_evaluate_all(srv.v1, files, models, base_name, args))
    machine = history.machine_slug()
    out_dir = history.run_dir(args.out, started, machine)
    rows = table_rows(results)
    result = {
        "family": "quality", "preset": preset.name,
        "date": started.isoformat(timespec="seconds"),
        "machine": machine_description(),
        "machine_slug": machine, "note": args.note,
        "command": "greyelephant bench quality " + " ".join(argv if argv is not None
                                                              else sys.argv[1:]),
        "duration_min": round((time.time() - t0) / 60, 1),
        "server": server_desc, "files": [str(f) for f in files], "rows": args.rows,
        "models": models, "max_tokens": args.max_tokens, "concurrency": args.concurrency,
        "table": rows,
        "quality": {f"{r['file']}|{r['model']}|{r['row']}": r for r in rows},
    }
    hist = history.read_history(args.out)
    prev = history.previous_run(hist, "quality", preset.name, before=result["date"])
    from . import plots, report

    result["previous"] = {"date": prev["date"], "machine": prev.get("machine")} if prev else None
    result["comparison"] = history.compare(
        {k: {m: v.get(m) for m in ("mention_rate", "prefer_rate", "latency_p50_s")}
         for k, v in result["quality"].items()}, prev)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"quality-{preset.name}"
    if plots.quality_plot(result, out_dir / f"{stem}.png"):
        result["plot"] = f"{stem}.png"
    with open(out_dir / f"{stem}-cases.jsonl", "w") as f:
        for (file, model), by_row in results.items():
            for records in by_row.values():
                for r in records:
                    f.write(json.dumps({"file": file, "model": model, **r},
                                       ensure_ascii=False) + "\n")
    report.write_json(out_dir / f"{stem}.json", result)
    (out_dir / f"{stem}.md").write_text(quality_markdown(result))
    history.append_history(args.out, report.history_entry(result))
    removed = history.prune(args.out, "quality", preset.name, keep=out_dir)
    print((out_dir / f"{stem}.md").read_text())
    if removed:
        print("pruned", *map(str, removed), sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
