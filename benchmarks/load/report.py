"""The reports: JSON (everything), a markdown summary with the plots, the history entry,
and README.md's headline block (pure apart from writing the files)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

README_BEGIN = "<!-- bench-load:begin -->"
README_END = "<!-- bench-load:end -->"
HISTORY_KEYS = ("output_throughput", "goodput_rps", "p50_ttft_ms", "p50_tpot_ms",
                "p99_e2e_ms", "ratio", "rollbacks_per_request", "revisions_per_request")


def fmt(v, nd: int = 1, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if pct:
        return f"{100 * v:.0f}%"
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{nd}f}"


def table(headers: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def headline_numbers(result: dict) -> dict[str, dict]:
    """scenario -> the numbers kept in the history and compared with the previous run."""
    out = {}
    for name, s in result.get("scenarios", {}).items():
        out[name] = {k: s.get(k) for k in HISTORY_KEYS if s.get(k) is not None}
    for row in result.get("vs_vllm", []):
        key = f"vs-{row['configuration']}@c{row['concurrency']}"
        out[key] = {"ratio": row["ratio"], "output_throughput": row["greyelephant_tok_s"]}
    for name, q in (result.get("quality") or {}).items():
        out[name] = {k: q.get(k) for k in ("mention_rate", "prefer_rate", "latency_p50_s")
                     if q.get(k) is not None}
    return out


def history_entry(result: dict) -> dict:
    return {"family": result["family"], "preset": result["preset"], "date": result["date"],
            "machine": result["machine"], "machine_slug": result["machine_slug"],
            "command": result["command"], "note": result.get("note", ""),
            "scenarios": headline_numbers(result)}


def targets(result: dict) -> list[dict]:
    """The done-when targets, checked on this run."""
    s = result.get("scenarios", {})
    out = []

    def add(what, value, goal, ok, spread=""):
        out.append({"target": what, "value": value, "goal": goal,
                    "met": None if value is None else ok(value), "spread": spread})

    for key, what, goal in (("logits-30/random", "random prompts", 0.95),
                            ("logits-30/chat", "prompts that trigger bans", 0.90)):
        row = s.get(key) or {}
        add(f"steered/plain throughput, 30 names, {what} (wall clock)", row.get("ratio"),
            f">= {goal:.2f}", lambda v, g=goal: v >= g,
            _spread(row.get("ratio_rounds"), row.get("ratio_quartiles")))
        add(f"steered/plain throughput, 30 names, {what} (server CPU time per token)",
            row.get("cpu_ratio"), f">= {goal:.2f}", lambda v, g=goal: v >= g,
            _spread(row.get("cpu_ratio_rounds"), row.get("cpu_ratio_quartiles")))
        add(f"steered/plain throughput, 30 names, {what} (steady state: concurrency × "
            "tokens per request / mean latency)", row.get("steady_ratio"), f">= {goal:.2f}",
            lambda v, g=goal: v >= g,
            _spread(row.get("steady_ratio_rounds"), row.get("steady_ratio_quartiles")))
    cr = s.get("critique-revise/chat") or {}
    ev = cr.get("events") or {}
    add("critique-revise p50 latency with dirty drafts (s), revisions made",
        None if cr.get("p50_e2e_ms") is None else round(cr["p50_e2e_ms"] / 1000, 2),
        f"reported: {fmt(ev.get('revisions'), 0)} revisions over "
        f"{fmt((ev.get('steered_requests') or {}).get('critique_revise'), 0)} requests",
        lambda v: True)
    for row in result.get("vs_vllm", []):
        if row["concurrency"] == result["workloads"]["headline_concurrency"]:
            add(f"greyelephant / vLLM throughput, {row['configuration']}, c={row['concurrency']}"
                " (wall clock)", row["ratio"], "reported", lambda v: True)
            add(f"greyelephant / vLLM, {row['configuration']}, c={row['concurrency']} (server "
                "CPU time per token, vLLM's / greyelephant's)", row.get("cpu_ratio"),
                "reported", lambda v: True)
    return out


def _spread(rounds: list | None, q: list | None) -> str:
    """'12 rounds, middle half 0.93–0.99': how many paired rounds a median ratio has, and
    the interquartile range of their ratios."""
    n = len([r for r in rounds or [] if r is not None])
    if not n:
        return ""
    return f"{n} round{'s' if n > 1 else ''}" + (
        f", middle half {q[0]:.3f}–{q[1]:.3f}" if q else "")


def _events_cell(s: dict) -> str:
    ev = s.get("events") or {}
    if not ev:
        return "–"
    parts = []
    steered = sum((ev.get("steered_requests") or {}).values())
    if steered:
        parts.append(f"{steered:g} steered")
    for k, label in (("rollbacks", "rollbacks"), ("prepared_used", "prepared used"),
                     ("prepared_discarded", "prepared discarded"), ("revisions", "revisions"),
                     ("draft_mentions", "draft mentions")):
        if ev.get(k):
            parts.append(f"{ev[k]:g} {label}")
    return ", ".join(parts) or "0"


def engine_rows(scenarios: dict) -> list[list]:
    """Per greyelephant scenario with engine counters: what its delivered tokens cost the
    engine (see :func:`_engine_section`)."""
    rows = []
    for name, s in scenarios.items():
        eng = (s.get("events") or {}).get("engine") or {}
        steps, generated = eng.get("steps"), eng.get("generated_tokens")
        delivered = s.get("delivered_tokens")
        if not steps or not generated or not delivered:
            continue
        rows.append([f"`{name}`", fmt(eng.get("requests"), 0), fmt(generated, 0),
                     fmt(delivered, 0), fmt(1 - delivered / generated, 1, pct=True),
                     fmt(eng.get("prefill_tokens"), 0), fmt(steps, 0),
                     fmt(generated / steps, 1), fmt(1000 * steps / delivered, 1)])
    return rows


def _engine_section(scenarios: dict) -> list[str]:
    rows = engine_rows(scenarios)
    if not rows:
        return []
    return ["### Engine work", "",
            "vLLM's own counters on greyelephant's /metrics, summed over each scenario's "
            "runs. A rollback ends an engine request and starts another: more engine "
            "requests, tokens generated and then discarded (the partial form and the "
            "signal), prompt tokens the prefix cache cannot serve (the last, partial "
            "block), and the steps while the continuation is on its way back into the "
            "batch. At a fixed concurrency those steps are what the throughput ratio "
            "loses: compare steps per 1,000 delivered tokens with the plain twin's.", "",
            *table(["scenario", "engine requests", "generated tokens", "delivered tokens",
                    "discarded", "prefill tokens", "engine steps", "generated / step",
                    "steps / 1k delivered"], rows), ""]


def load_markdown(result: dict, plots: dict[str, str]) -> str:
    p = result
    lines = [f"# Load benchmark — preset `{p['preset']}`", "",
             f"- date: {p['date']} · machine: {p['machine']}"
             + (f" · {p['note']}" if p.get("note") else ""),
             f"- command: `{p['command']}` ({p['duration_min']} min)",
             *([f"- aggregated again from this file's runs: {p['reaggregated']['date']}, "
                f"`{p['reaggregated']['command']}`"] if p.get("reaggregated") else []),
             f"- model: {p['model']} · KV-cache share (`--gpu-memory-utilization`, sized to "
             f"the memory free at each server's start): {p['kv_share']}",
             f"- workloads: random = {p['workloads']['random']}; chat = {p['workloads']['chat']};"
             f" headline concurrency {p['workloads']['headline_concurrency']}",
             f"- goodput SLOs: TTFT <= {p['slo']['ttft_ms']:g} ms and TPOT <= "
             f"{p['slo']['tpot_ms']:g} ms",
             f"- load generators: vLLM's serving benchmark (`vllm bench serve`, in process) and "
             f"guidellm {('(Poisson sweep to saturation)')}",
             ""]
    tg = targets(result)
    if tg:
        lines += ["## Headline", ""]
        lines += table(["target", "value", "goal", "met", "rounds"],
                       [[t["target"], fmt(t["value"], 3), t["goal"],
                         {True: "yes", False: "**no**", None: "–"}[t["met"]]
                         if t["goal"] != "reported" and not t["goal"].startswith("reported")
                         else "–", t.get("spread") or "–"] for t in tg])
        lines.append("")
    if "cost" in plots:
        lines += [f"![cost per steering scenario]({plots['cost']})", ""]
    lines += ["## Scenarios", "",
              f"Output tokens/s at concurrency {p['workloads']['headline_concurrency']}, "
              "median over rounds; ratio = this scenario / its plain twin on the same server: "
              "for a scenario with several rounds, measured as one chain (twin, scenario, "
              "twin, scenario, …, twin, back to back), per round over the mean of the twin's "
              "runs right before and right after it (a sandwich: the machine's drift "
              "between runs cancels to first order), then the median over rounds; for the "
              "others, over the twin's run of the same round. Server CPU ms/token = CPU time of the server's processes "
              "per generated token; CPU ratio = the twin's / this one's (> 1: cheaper), the "
              "throughput ratio with other work on the machine taken out; load avg = the "
              "machine's 1-minute load average after the run (2 cores). Steering events are the server's /metrics counters over "
              "the scenario's runs (rollbacks: a ban fired inside an avoided form and rewound "
              "the choice; prepared used / discarded: rollback continuations submitted while "
              "the choice was inside the form, then used by its rollback or aborted; draft mentions: drafts naming an avoided entity, which "
              "critique-revise revises). mention = share of answers naming their own case's "
              "avoided entity.", ""]
    rows = []
    for name, s in p["scenarios"].items():
        rows.append([f"`{name}`", s.get("server"), fmt(s.get("output_throughput")),
                     fmt(s.get("ratio"), 3), fmt(s.get("server_cpu_ms_per_token"), 2),
                     fmt(s.get("cpu_ratio"), 3),
                     f"`{s.get('baseline') or ''}`" if s.get("baseline") else "", fmt(s.get("p50_ttft_ms")), fmt(s.get("p50_tpot_ms")),
                     fmt(s.get("p50_itl_ms")), fmt(s.get("p50_e2e_ms")),
                     fmt(s.get("p99_e2e_ms")), fmt(s.get("goodput_rps"), 2),
                     fmt(s.get("failed"), 0), _events_cell(s),
                     fmt(s.get("mention_rate"), 2, pct=True) if s.get("mention_rate")
                     is not None else "–", s.get("rounds"), fmt(s.get("load1"), 1)])
    lines += table(["scenario", "server", "tok/s", "ratio", "server CPU ms/token", "CPU ratio",
                    "vs", "TTFT p50 ms",
                    "TPOT p50 ms", "ITL p50 ms", "e2e p50 ms", "e2e p99 ms", "goodput req/s",
                    "errors", "steering events", "mention", "rounds", "load avg"], rows)
    lines.append("")
    lines += _engine_section(p["scenarios"])
    mixed = [r for r in p.get("runs", []) if r.get("by_kind")]
    if mixed:
        lines += ["### Mixed traffic, per kind (one run)", ""]
        rows = []
        for kind, s in mixed[0]["by_kind"].items():
            rows.append([kind, s["completed"], fmt(s["p50_ttft_ms"]), fmt(s["p50_tpot_ms"]),
                         fmt(s["p50_e2e_ms"]), fmt(s["p99_e2e_ms"]), fmt(s["slo_attained"], 2,
                                                                         pct=True)])
        lines += table(["kind", "requests", "TTFT p50 ms", "TPOT p50 ms", "e2e p50 ms",
                        "e2e p99 ms", "within SLO"], rows)
        lines.append("")
    if p.get("vs_vllm"):
        lines += ["## Side by side with vLLM's own OpenAI server (same run, plain/random)", ""]
        for key in ("greyelephant", "vllm-defaults", "greyelephant-like", "vllm-like"):
            srv = p["servers"].get(key)
            if srv:
                eff = srv.get("effective") or {}
                lines.append(f"- **{key}**: {srv['label']}; effective: chunked prefill "
                             f"{eff.get('chunked_prefill')}, dtype {eff.get('dtype')}, KV cache "
                             f"{eff.get('kv_cache_gib')} GiB; flags "
                             f"`{' '.join(_flags(srv['command']))}`")
        lines += ["- **defaults**: each server at its own engine defaults (greyelephant's: "
                  "chunked prefill off, block size 32, bfloat16, its shipped adapter served, "
                  "so LoRA on; vLLM's: chunked prefill on, its block size, dtype auto); "
                  "**like-for-like**: both with chunked prefill off, block size 32, bfloat16, "
                  "no LoRA adapter", ""]
        rows = [[r["configuration"], r["concurrency"], fmt(r["greyelephant_tok_s"]),
                 fmt(r["vllm_tok_s"]), f"**{fmt(r['ratio'], 3)}**",
                 fmt(r["greyelephant_p50_ttft_ms"]), fmt(r["vllm_p50_ttft_ms"]),
                 fmt(r["greyelephant_p50_tpot_ms"]), fmt(r["vllm_p50_tpot_ms"]),
                 fmt(r.get("greyelephant_cpu_ms_per_token"), 2),
                 fmt(r.get("vllm_cpu_ms_per_token"), 2), fmt(r.get("cpu_ratio"), 3)]
                for r in p["vs_vllm"]]
        lines += table(["configuration", "concurrency", "greyelephant tok/s", "vLLM tok/s",
                        "greyelephant / vLLM", "TTFT p50 ge", "TTFT p50 vLLM", "TPOT p50 ge",
                        "TPOT p50 vLLM", "CPU ms/token ge", "CPU ms/token vLLM",
                        "CPU ratio (vLLM / ge)"], rows)
        lines.append("")
    for key, title in (("latency", "Latency–throughput curves"), ("goodput", "Goodput")):
        if key in plots:
            lines += [f"## {title}", "", f"![{title}]({plots[key]})", ""]
    if p.get("sweeps"):
        lines += ["## Sweeps", "",
                  "Concurrency sweeps and Poisson rates (vLLM's client; rates are fractions of "
                  "the saturation rate the concurrency sweep found) and guidellm's sweep "
                  "(synchronous, throughput = all at once, then Poisson rates between).", ""]
        rows = []
        for key, pts in p["sweeps"].items():
            server, scen, mode = key.split("|")
            for pt in pts:
                load = (f"c={pt['concurrency']}" if mode == "concurrency" else
                        f"{pt['request_rate']:g} req/s" if mode == "poisson" else
                        f"{pt.get('strategy')}" + (f"@{pt['target_rate']:.2f}"
                                                   if pt.get("target_rate") else ""))
                rows.append([server, f"`{scen}`", mode, load, fmt(pt.get("output_throughput")),
                             fmt(pt.get("request_throughput"), 2), fmt(pt.get("p50_ttft_ms")),
                             fmt(pt.get("p99_ttft_ms")), fmt(pt.get("p50_tpot_ms")),
                             fmt(pt.get("p50_itl_ms")), fmt(pt.get("p50_e2e_ms")),
                             fmt(pt.get("p99_e2e_ms")), fmt(pt.get("goodput_rps"), 2),
                             fmt(pt.get("failed") or 0, 0)])
        lines += table(["server", "scenario", "generator/mode", "load", "tok/s", "req/s",
                        "TTFT p50", "TTFT p99", "TPOT p50", "ITL p50", "e2e p50", "e2e p99",
                        "goodput req/s", "errors"], rows)
        lines.append("")
    lines += comparison_lines(result)
    errs = [r for r in p.get("runs", []) if r.get("errors")]
    if errs or any("error" in s for s in p["servers"].values()):
        lines += ["## Errors", ""]
        for k, s in p["servers"].items():
            if s.get("error"):
                lines.append(f"- server {k} did not start: `{s['error'][-300:]}`")
        for r in errs[:20]:
            lines.append(f"- {r['server']} `{r['scenario']}` "
                         f"{r.get('generator')}: {r['errors'][:2]}")
        lines.append("")
    lines += ["Every run's command line and per-request statistics are in the JSON next to "
              "this file; docs/benchmarks.md explains the scenarios and how to reproduce.", ""]
    return "\n".join(lines)


def _flags(command: list[str]) -> list[str]:
    """A server's flags without the interpreter, module and model path."""
    out, skip = [], False
    first = next((i for i, a in enumerate(command) if a.startswith("--")), len(command))
    for a in command[first:]:
        if skip:
            skip = False
            continue
        if a in ("--model", "--served-model-name"):
            skip = True
            continue
        out.append(a)
    return out


def comparison_lines(result: dict) -> list[str]:
    prev = result.get("previous")
    if not prev:
        return ["## Compared with the previous run", "",
                f"No earlier `{result['family']}` run of preset `{result['preset']}` in "
                "benchmarks/results/history.jsonl.", ""]
    rows = []
    for name, metrics in result.get("comparison", {}).items():
        for metric, d in metrics.items():
            mark = {True: "better", False: "worse", None: "same"}[d["better"]]
            rows.append([f"`{name}`", metric, fmt(d["previous"], 3), fmt(d["current"], 3),
                         "–" if d["change_pct"] is None else f"{d['change_pct']:+.1f}%", mark])
    lines = ["## Compared with the previous run", "",
             f"Previous `{result['family']}` run of preset `{result['preset']}`: "
             f"{prev['date']} ({prev.get('machine')}).", ""]
    return lines + (table(["scenario", "metric", "previous", "now", "change", ""], rows)
                    if rows else ["No scenario in common."]) + [""]


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def write_load(result: dict, out_dir: Path) -> list[Path]:
    from . import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"load-{result['preset']}"
    made = plots.load_plots(result, out_dir, stem)
    rel = {k: os.path.relpath(v, out_dir) for k, v in made.items()}
    result["plots"] = rel
    write_json(out_dir / f"{stem}.json", result)
    (out_dir / f"{stem}.md").write_text(load_markdown(result, rel))
    return [out_dir / f"{stem}.json", out_dir / f"{stem}.md", *made.values()]


def readme_block(result: dict, out_dir: Path, readme: Path) -> str:
    rel = os.path.relpath(out_dir, readme.parent)
    stem = f"load-{result['preset']}"
    lines = [README_BEGIN,
             f"Latest `greyelephant bench load --preset {result['preset']}` "
             f"({result['date'][:10]}, {result['machine']}"
             + (f"; {result['note']}" if result.get("note") else "") + f"): "
             f"[report]({rel}/{stem}.md)", ""]
    lines += table(["target", "value", "goal", "rounds"],
                   [[t["target"], fmt(t["value"], 3), t["goal"], t.get("spread") or "–"]
                    for t in targets(result)])
    plot = (result.get("plots") or {}).get("cost")
    if plot:
        lines += ["", f"![cost per steering scenario]({rel}/{plot})"]
    lines.append(README_END)
    return "\n".join(lines)


def update_readme(readme: Path, result: dict, out_dir: Path) -> bool:
    text = readme.read_text()
    block = readme_block(result, out_dir, readme)
    pat = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)
    if not pat.search(text):
        return False
    readme.write_text(pat.sub(lambda _m: block, text))
    return True
