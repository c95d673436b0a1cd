"""The pure parts of `greyelephant bench load` / `bench quality` (benchmarks/load/): the
scenario matrix, steering bodies, goodput, the comparison with the previous run, the
history and pruning, the reports and plots. No server, no vLLM."""

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import pytest

from greyelephant.benchmarks.load import history, report, scenarios as sc, stats
from greyelephant.benchmarks.load.counters import parse_prometheus, per_request, steering_events
from greyelephant.benchmarks.load.run import (aggregate, chain_runs, plan_size, sandwich_twin,
                                              steady_throughput, sweeps, vs_vllm)
from greyelephant.benchmarks.load.run import main as run_main
from greyelephant.benchmarks.load.servers import (
    LIKE_FOR_LIKE,
    KVCacheError,
    effective_config,
    kv_cache_share,
)

DATA = Path(__file__).resolve().parents[3] / "benchmarks" / "data"
GIB = 1024 ** 3


# -- scenario matrix ------------------------------------------------------------------

def test_matrix_covers_the_issue_scenarios():
    m = {s.name: s for s in sc.build_matrix(sc.PRESETS["small"])}
    for name in ("plain/random", "logits-30/random", "plain/chat", "directive/chat",
                 "logits-1/chat", "logits-30/chat", "logits-30-norollback/chat",
                 "logits-1000/chat", "critique-revise/chat", "mixed/chat", "adapter/chat",
                 "vllm-defaults/random", "vllm-like/random", "greyelephant-like/random"):
        assert name in m, name
    assert m["plain/random"].concurrencies == (1, 4, 16, 64) and m["plain/random"].poisson
    assert m["logits-30-norollback/chat"].max_rollbacks == 0
    assert m["logits-30/chat"].max_rollbacks is None  # the server's default: rollback on
    assert m["adapter/chat"].model == "grey-dpo" and m["adapter/chat"].server == "greyelephant"
    assert m["vllm-like/random"].baseline == "greyelephant-like/random"
    assert m["vllm-defaults/random"].baseline == "plain/random"
    for s in m.values():
        assert s.baseline is None or s.baseline in m
    assert len(m) == len(sc.build_matrix(sc.PRESETS["small"]))  # names unique


def test_full_preset_has_rounds_and_more_sweeps():
    full = {s.name: s for s in sc.build_matrix(sc.PRESETS["full"])}
    assert full["logits-30/chat"].rounds == 12 and full["logits-30/random"].rounds == 12
    assert full["logits-1000/chat"].rounds == 3
    assert full["vllm-defaults/random"].concurrencies == (1, 4, 16, 64)
    assert full["greyelephant-like/random"].concurrencies == (1, 4, 16, 64)
    assert full["plain/random"].guidellm and full["vllm-like/random"].guidellm
    small = {s.name: s for s in sc.build_matrix(sc.PRESETS["small"])}
    assert small["logits-30/chat"].rounds == 1


def test_select_brings_baselines_and_rejects_unknown():
    m = sc.build_matrix(sc.PRESETS["small"])
    names = [s.name for s in sc.select(m, ["norollback"])]
    assert names == ["plain/chat", "logits-30-norollback/chat"]
    with pytest.raises(ValueError, match="no scenario"):
        sc.select(m, ["nope"])
    assert sc.server_order(m) == ["greyelephant", "greyelephant-like", "vllm-defaults",
                                  "vllm-like"]


def test_prompts_per_concurrency():
    p = sc.PRESETS["small"]
    assert [p.prompts_for(c) for c in (1, 4, 16, 64)] == [8, 8, 32, 64]
    full = sc.PRESETS["full"]
    assert [full.prompts_for(c) for c in (1, 4, 16, 64)] == [12, 12, 48, 128]


def test_plan_size_counts_rounds_sweeps_and_servers():
    m = sc.select(sc.build_matrix(sc.PRESETS["small"]), ["logits-30/random"])
    # plain/random: 1 headline + 3 sweep + 2 poisson + 1 guidellm; logits-30/random: 1;
    # 1 server: start + warm-up
    assert plan_size(m, sc.PRESETS["small"], guidellm=True) == 7 + 1 + 2
    assert plan_size(m, sc.PRESETS["small"], guidellm=False) == 6 + 1 + 2
    full = sc.PRESETS["full"]
    m = sc.select(sc.build_matrix(full), ["logits-30/random"])
    # full: plain/random 1 headline + 3 sweep + 4 poisson + 1 guidellm; logits-30/random
    # 12 rounds in one chain: twin, scenario, twin, …, twin (13 twin runs)
    assert plan_size(m, full, guidellm=True) == 9 + 25 + 2


# -- steering bodies ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def cases():
    return sc.load_cases(DATA / "pink_elephant_dev.jsonl")


@pytest.fixture(scope="module")
def pool():
    files = [DATA / "pink_elephant_dev.jsonl", DATA / "heldout_entities.jsonl",
             DATA / "near_miss_entities.jsonl"]
    return sc.name_pool(files)


def test_pack_avoid_counts_aliases_and_respects_limits():
    groups = [("Eiffel Tower", ["Tour Eiffel"]), ("Nike", []), ("Coca-Cola", ["Coke"])]
    avoid = sc.pack_avoid(groups, 4)
    assert avoid == [{"entity": "Eiffel Tower", "aliases": ["Tour Eiffel"]},
                     {"entity": "Nike", "aliases": []},
                     {"entity": "Coca-Cola", "aliases": []}]
    big = sc.pack_avoid(groups, 1500)  # padded with made-up names
    assert sc.count_names(big) == 1500
    assert len(big) <= sc.MAX_ENTITIES
    assert all(len(e["aliases"]) <= 32 for e in big)
    names = [n.lower() for e in big for n in (e["entity"], *e["aliases"])]
    assert len(set(names)) == len(names)
    assert sc.pack_avoid(groups, 0) == []


def test_synthetic_names_deterministic_and_distinct():
    a, b = sc.synthetic_names(50), sc.synthetic_names(50)
    assert a == b and len({x.lower() for x in a}) == 50


def test_steering_bodies_per_scenario(cases, pool):
    from greyelephant.control.spec import SteeringSpec

    m = {s.name: s for s in sc.build_matrix(sc.PRESETS["small"])}
    case = cases[1]  # Nike
    assert sc.steering_body(m["plain/chat"], case, pool) is None
    one = sc.steering_body(m["logits-1/chat"], case, pool)
    assert one == {"avoid": [{"entity": "Nike", "aliases": []}], "strategies": ["logits"]}
    thirty = sc.steering_body(m["logits-30/chat"], case, pool)
    assert sc.count_names(thirty["avoid"]) == 30 and thirty["avoid"][0]["entity"] == "Nike"
    off = sc.steering_body(m["logits-30-norollback/chat"], case, pool)
    assert off["max_rollbacks"] == 0 and off["avoid"] == thirty["avoid"]
    k = sc.steering_body(m["logits-1000/chat"], case, pool)
    assert 990 <= sc.count_forms(k["avoid"]) <= 1000 and k["avoid"][0]["entity"] == "Nike"
    cr = sc.steering_body(m["critique-revise/chat"], case, pool)
    assert cr["strategies"] == ["critique_revise"] and cr["prefer"] == [case["prefer"]]
    d = sc.steering_body(m["directive/chat"], case, pool)
    assert d["strategies"] == ["directive"]
    rnd = sc.steering_body(m["logits-30/random"], None, pool)
    assert sc.count_names(rnd["avoid"]) == 30
    for body in (one, thirty, off, k, cr, d, rnd):
        SteeringSpec.model_validate(body)  # within the API's limits


def test_mixed_requests_interleave_four_kinds(cases, pool):
    m = {s.name: s for s in sc.build_matrix(sc.PRESETS["small"])}
    reqs = sc.chat_requests(m["mixed/chat"], cases, pool, 8)
    assert [r.kind for r in reqs[:4]] == ["plain", "directive", "logits-30", "critique-revise"]
    assert reqs[0].steering is None
    assert reqs[2].steering["strategies"] == ["logits"]
    assert sc.count_names(reqs[2].steering["avoid"]) == 30
    assert reqs[3].steering["strategies"] == ["critique_revise"]
    assert [r.case_id for r in reqs[:2]] == [cases[0]["id"], cases[1]["id"]]
    assert len(sc.chat_requests(m["plain/chat"], cases, pool, 70)) == 70  # cycles


# -- statistics and goodput ----------------------------------------------------------------

def req(ttft, latency, n, ok=True, itl=None, error=None):
    return {"ok": ok, "ttft_s": ttft, "latency_s": latency, "output_len": n,
            "itl_s": itl or [], "error": error}


def test_percentile_interpolates_like_numpy():
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([10], 99) == 10
    assert stats.percentile([], 50) is None
    assert stats.percentile([1, 2, 3, 4, 5], 90) == pytest.approx(4.6)


def test_goodput_counts_requests_meeting_both_slos():
    slo = stats.SLO(ttft_ms=500, tpot_ms=50)
    reqs = [req(0.1, 0.1 + 0.04 * 9, 10),   # TTFT 100 ms, TPOT 40 ms: good
            req(0.6, 0.6 + 0.04 * 9, 10),   # TTFT too slow
            req(0.1, 0.1 + 0.06 * 9, 10),   # TPOT too slow
            req(0.0, 0.0, 0, ok=False, error="boom\ntrace")]
    s = stats.summarize(reqs, duration_s=2.0, slo=slo)
    assert s["completed"] == 3 and s["failed"] == 1 and s["error_rate"] == 0.25
    assert s["errors"] == ["boom"]
    assert s["goodput_rps"] == 0.5 and s["goodput_tok_s"] == 5.0
    assert s["slo_attained"] == 0.25
    assert s["request_throughput"] == 1.5 and s["output_throughput"] == 15.0
    assert s["p50_ttft_ms"] == pytest.approx(100.0)
    assert s["p50_tpot_ms"] == pytest.approx(40.0)


def test_tpot_of_one_token_output_is_not_counted():
    assert stats.tpot_s(0.1, 0.5, 1) is None
    s = stats.summarize([req(0.1, 0.2, 1)], 1.0, stats.SLO(1000, 1))
    assert s["goodput_rps"] == 1.0 and s["p50_tpot_ms"] is None


def test_from_vllm_result_and_itl():
    result = {"duration": 4.0, "ttfts": [0.1, 0.0], "latencies": [0.5, 0.0],
              "itls": [[0.1, 0.1, 0.2], []], "output_lens": [4, 0],
              "errors": ["", "HTTP 500"]}
    reqs, dur = stats.from_vllm_result(result)
    assert dur == 4.0 and reqs[1]["ok"] is False and reqs[1]["error"] == "HTTP 500"
    s = stats.summarize(reqs, dur, stats.SLO())
    assert s["p50_itl_ms"] == pytest.approx(100.0) and s["failed"] == 1


def test_ratio_saturation_and_poisson_rates():
    assert stats.ratio(9, 10) == 0.9 and stats.ratio(1, 0) is None
    pts = [{"output_throughput": 50, "request_throughput": 1},
           {"output_throughput": 150, "request_throughput": 2.5},
           {"output_throughput": 140, "request_throughput": 2.4}]
    assert stats.saturation(pts)["request_throughput"] == 2.5
    assert stats.poisson_rates(2.0, (0.5, 1.0, 1.5)) == [1.0, 2.0, 3.0]
    assert stats.poisson_rates(0, (1.0,)) == []


# -- aggregation ---------------------------------------------------------------------------

def run_row(scenario, server="greyelephant", c=16, tok=100.0, rnd=0, **kw):
    return {"scenario": scenario, "server": server, "generator": "vllm-bench",
            "concurrency": c, "request_rate": None, "round": rnd, "output_throughput": tok,
            "request_throughput": tok / 64, "p50_ttft_ms": 10.0, "p50_tpot_ms": 50.0,
            "p50_e2e_ms": 1000.0, **kw}


def test_aggregate_pairs_each_round_with_its_twin_runs_before_and_after():
    """Multi-round scenarios: per round, the scenario over the mean of the twin runs of its
    sandwich; the twin's own row counts every run in its medians."""
    m = sc.select(sc.build_matrix(sc.PRESETS["full"]), ["logits-30/chat"])
    by = {s.name: s for s in m}
    assert sandwich_twin(by["logits-30/chat"], m) is by["plain/chat"]
    assert sandwich_twin(by["plain/chat"], m) is None
    runs = [run_row("plain/chat", tok=100, rnd=0),  # the twin's own round-0 point
            run_row("plain/chat", tok=100, rnd=0, twin_of="logits-30/chat",
                    server_cpu_ms_per_token=10.0),
            run_row("logits-30/chat", tok=99, rnd=0, server_cpu_ms_per_token=12.5),
            run_row("plain/chat", tok=120, rnd=0, twin_of="logits-30/chat",
                    server_cpu_ms_per_token=12.0),
            run_row("plain/chat", tok=200, rnd=1, twin_of="logits-30/chat"),
            run_row("logits-30/chat", tok=190, rnd=1),
            run_row("plain/chat", tok=200, rnd=1, twin_of="logits-30/chat")]
    row = aggregate(runs, m, 16)["logits-30/chat"]
    assert row["pairing"] == "sandwich"
    assert row["ratio_rounds"] == [0.9, 0.95] and row["ratio"] == 0.925
    assert row["cpu_ratio_rounds"] == [0.88, None]
    twin = aggregate(runs, m, 16)["plain/chat"]
    assert twin["rounds"] == 1 and twin["runs"] == 5


def test_chain_runs_share_each_inner_twin_run_between_two_rounds():
    m = sc.select(sc.build_matrix(sc.PRESETS["full"]), ["logits-30/chat"])
    by = {s.name: s for s in m}
    s, twin = replace(by["logits-30/chat"], rounds=3), by["plain/chat"]
    runs = chain_runs(s, twin)
    assert [(x.name, r, pairs) for x, r, pairs in runs] == [
        ("plain/chat", 0, [0]), ("logits-30/chat", 0, None), ("plain/chat", 1, [0, 1]),
        ("logits-30/chat", 1, None), ("plain/chat", 2, [1, 2]), ("logits-30/chat", 2, None),
        ("plain/chat", 2, [2])]
    assert chain_runs(s, None) == []
    # each round over the mean of the twin runs on both sides of it
    tok = {0: 100, 1: 120, 2: 80, 3: 100}
    rows = []
    for k, (x, r, pairs) in enumerate(runs):
        if x is twin:
            rows.append(run_row("plain/chat", tok=tok[k // 2], rnd=r, twin_of=s.name,
                                pairs_with=pairs))
        else:
            rows.append(run_row(s.name, tok=99, rnd=r))
    row = aggregate(rows, [x if x.name != s.name else s for x in m], 16)["logits-30/chat"]
    assert row["ratio_rounds"] == [0.9, 0.99, 1.1] and row["ratio"] == 0.99
    assert row["ratio_quartiles"] == [0.945, 1.045]
    assert stats.quartiles([1.0]) is None


def test_aggregate_pairs_rounds_for_the_ratio():
    m = sc.select(sc.build_matrix(sc.PRESETS["full"]), ["logits-30/chat"])
    runs = [run_row("plain/chat", tok=100, rnd=0, server_cpu_ms_per_token=10.0),
            run_row("logits-30/chat", tok=90, rnd=0, output_tokens=960,
                    events={"rollbacks": 5, "engine": {"steps": 70, "requests": 20}},
                    server_cpu_ms_per_token=12.5),
            run_row("plain/chat", tok=200, rnd=1), run_row("logits-30/chat", tok=196, rnd=1,
                                                           output_tokens=960,
                                                           events={"rollbacks": 3, "engine": {
                                                               "steps": 66, "requests": 18}}),
            run_row("plain/chat", tok=100, rnd=2), run_row("logits-30/chat", tok=95, rnd=2),
            run_row("plain/chat", c=4, tok=1)]  # another concurrency: not a headline point
    agg = aggregate(runs, m, 16)
    row = agg["logits-30/chat"]
    assert row["ratio_rounds"] == [0.9, 0.98, 0.95] and row["ratio"] == 0.95
    assert row["rounds"] == 3 and row["events"] == {
        "rollbacks": 8, "engine": {"steps": 136, "requests": 38}}
    assert row["delivered_tokens"] == 1920  # over the runs, as the engine counters are
    assert row["cpu_ratio_rounds"] == [0.8, None, None] and row["cpu_ratio"] == 0.8
    # the steady ratio pairs the same way (runs without latencies have none)
    assert row["steady_ratio_rounds"] == [None, None, None]
    steady = [{**r, "output_tokens": 960, "completed": 10,
               "mean_e2e_ms": 1000.0 if r["scenario"] == "plain/chat" else 1250.0}
              for r in runs]
    assert aggregate(steady, m, 16)["logits-30/chat"]["steady_ratio"] == 0.8
    assert agg["plain/chat"]["output_throughput"] == 100


def test_sweeps_and_vs_vllm():
    runs = [run_row("plain/random", c=c, tok=t) for c, t in ((1, 20), (4, 60), (16, 120))]
    runs += [run_row("greyelephant-like/random", server="greyelephant-like", c=c, tok=t)
             for c, t in ((1, 20), (16, 120))]
    runs += [run_row("vllm-like/random", server="vllm-like", c=c, tok=t)
             for c, t in ((1, 25), (16, 100))]
    runs += [run_row("vllm-defaults/random", server="vllm-defaults", c=16, tok=150)]
    runs += [dict(run_row("plain/random", c=None, tok=80), request_rate=1.0),
             dict(run_row("plain/random", c=None, tok=110), request_rate=2.0)]
    sw = sweeps(runs)
    assert [p["concurrency"] for p in sw["greyelephant|plain/random|concurrency"]] == [1, 4, 16]
    assert [p["request_rate"] for p in sw["greyelephant|plain/random|poisson"]] == [1.0, 2.0]
    rows = {(r["configuration"], r["concurrency"]): r for r in vs_vllm(runs)}
    assert rows[("like-for-like", 16)]["ratio"] == 1.2
    assert rows[("like-for-like", 1)]["ratio"] == 0.8
    assert rows[("defaults", 16)]["ratio"] == 0.8
    assert ("defaults", 1) not in rows


# -- counters -------------------------------------------------------------------------------

METRICS_BEFORE = """# HELP greyelephant_steering_rollbacks_total Rollbacks
# TYPE greyelephant_steering_rollbacks_total counter
greyelephant_steering_rollbacks_total 3.0
greyelephant_steering_revisions_total 1.0
greyelephant_steering_requests_total{strategy="logits"} 10.0
greyelephant_steering_violations_total{stage="draft"} 2.0
greyelephant_steering_violations_total{stage="final"} 0.0
"""
METRICS_AFTER = """greyelephant_steering_rollbacks_total 9.0
greyelephant_steering_revisions_total 5.0
greyelephant_steering_requests_total{strategy="logits"} 14.0
greyelephant_steering_requests_total{strategy="critique_revise"} 4.0
greyelephant_steering_violations_total{stage="draft"} 6.0
greyelephant_steering_violations_total{stage="final"} 1.0
greyelephant_steering_prepared_continuations_total{outcome="used"} 5.0
greyelephant_steering_prepared_continuations_total{outcome="discarded"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
vllm:iteration_tokens_total_count{engine="0",model_name="m"} 120.0
vllm:iteration_tokens_total_sum{engine="0",model_name="m"} 2000.0
vllm:generation_tokens_total{engine="0",model_name="m"} 1700.0
vllm:prompt_tokens_total{engine="0",model_name="m"} 900.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 600.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 14.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 4.0
"""


def test_steering_events_from_metrics():
    ev = steering_events(parse_prometheus(METRICS_BEFORE), parse_prometheus(METRICS_AFTER))
    assert ev["rollbacks"] == 6 and ev["revisions"] == 4
    assert ev["draft_mentions"] == 4 and ev["final_mentions"] == 1
    assert ev["prepared_used"] == 5 and ev["prepared_discarded"] == 2  # new since before
    assert ev["steered_requests"] == {"logits": 4, "critique_revise": 4}
    assert per_request(ev, 4)["revisions_per_request"] == 1.0
    assert steering_events({}, {})["rollbacks"] == 0
    # vLLM's engine counters: every finish reason counts, the prefill is what the prefix
    # cache did not serve
    assert ev["engine"] == {"steps": 120, "computed_tokens": 2000, "generated_tokens": 1700,
                            "prompt_tokens": 900, "prefix_cache_hits": 600, "requests": 18,
                            "prefill_tokens": 300}
    # with vLLM's own count of computed prompt tokens (aborted requests' cache hits are
    # counted at scheduling, their prompt tokens never): that count
    computed = METRICS_AFTER + ('vllm:prompt_tokens_by_source_total{engine="0",'
                                'source="local_compute"} 250.0\n')
    assert steering_events(parse_prometheus(METRICS_BEFORE),
                           parse_prometheus(computed))["engine"]["prefill_tokens"] == 250


# -- servers -------------------------------------------------------------------------------

def test_kv_cache_share_sizes_to_the_machine():
    assert kv_cache_share(int(23.5 * GIB), 12 * GIB) == 0.2  # the server's default
    small = kv_cache_share(8 * GIB, 6 * GIB)  # 0.2 leaves no KV cache: a larger share
    assert small > 0.2 and small * 8 - 1.5 >= 1.0
    busy = kv_cache_share(int(23.5 * GIB), 4 * GIB)  # little free: smaller, still >= 1 GiB KV
    assert busy < 0.2 and busy * 23.5 - 1.5 >= 1.0 and busy * 23.5 <= 0.9 * 4
    with pytest.raises(KVCacheError, match="--kv-share"):
        kv_cache_share(8 * GIB, 1 * GIB)


def test_like_for_like_flags_match_the_server_defaults():
    # what `greyelephant serve` resolves with no flags on this (CPU) machine
    from greyelephant.server.cli import _apply_platform_defaults, build_serve_parser

    args = build_serve_parser().parse_args([])
    _apply_platform_defaults(args, [])
    assert args.enable_chunked_prefill is False
    assert LIKE_FOR_LIKE == ["--no-enable-chunked-prefill", "--block-size",
                             str(args.block_size), "--dtype", args.dtype]


def test_effective_config_from_log():
    log = ("Initializing a V1 LLM engine (v0.32.0) with config: model='m', dtype=torch.bfloat16,"
           " max_seq_len=2048, chunked_prefill=False, enable_prefix_caching=True\n"
           "Auto set (2.22/16.71) GiB for KV cache on node 0")
    cfg = effective_config(log)
    assert cfg["chunked_prefill"] == "False" and cfg["dtype"] == "bfloat16"
    assert cfg["kv_cache_gib"] == "2.22"


# -- history, comparison, pruning -----------------------------------------------------------

def test_compare_with_previous_run():
    prev = {"date": "2026-12-01T00:00:00+00:00",
            "scenarios": {"a": {"output_throughput": 100.0, "p50_ttft_ms": 10.0},
                          "gone": {"output_throughput": 1.0}}}
    cur = {"a": {"output_throughput": 110.0, "p50_ttft_ms": 12.0}, "new": {"ratio": 1.0}}
    cmp = history.compare(cur, prev)
    assert set(cmp) == {"a"}
    assert cmp["a"]["output_throughput"] == {"previous": 100.0, "current": 110.0,
                                             "change_pct": 10.0, "better": True}
    assert cmp["a"]["p50_ttft_ms"]["better"] is False  # latency went up
    assert history.compare(cur, None) == {}


def test_history_append_previous_and_dedupe(tmp_path):
    e1 = {"family": "load", "preset": "small", "date": "2026-12-01T10:00:00+00:00",
          "machine_slug": "vm-2cpu", "scenarios": {"a": {"output_throughput": 1}}}
    e2 = dict(e1, date="2026-12-02T10:00:00+00:00")
    q = dict(e1, family="quality", date="2026-12-03T00:00:00+00:00")
    for e in (e2, e1, q, dict(e2, scenarios={"a": {"output_throughput": 2}})):
        history.append_history(tmp_path, e)
    h = history.read_history(tmp_path)
    assert [x["date"][:10] for x in h] == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert h[1]["scenarios"]["a"]["output_throughput"] == 2  # the rerun replaced it
    prev = history.previous_run(h, "load", "small", before="2026-12-02T10:00:00+00:00")
    assert prev["date"].startswith("2026-12-01")
    assert history.previous_run(h, "load", "small")["date"].startswith("2026-12-02")
    assert history.previous_run(h, "load", "full") is None


def test_prune_keeps_one_report_per_family_and_preset(tmp_path):
    old = tmp_path / "2026-11-30-vm-2cpu"
    other = tmp_path / "2026-12-01-vm-2cpu"
    new = tmp_path / "2026-12-02-vm-2cpu"
    for d in (old, other, new):
        d.mkdir()
    for f in ("load-small.json", "load-small.md", "load-small-cost.png"):
        (old / f).write_text("x")
        (new / f).write_text("x")
    (other / "load-full.json").write_text("x")
    (other / "quality-small.json").write_text("x")
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "load-small.json").write_text("keep: not a dated folder")
    removed = history.prune(tmp_path, "load", "small", keep=new)
    assert len(removed) == 3 and not old.exists()
    assert (other / "load-full.json").exists() and (other / "quality-small.json").exists()
    assert (new / "load-small.json").exists() and (tmp_path / "kernels" / "load-small.json").exists()


def test_machine_slug_and_run_dir(tmp_path):
    assert history.machine_slug("My Box.local", 2) == "my-box-local-2cpu"
    when = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.timezone.utc)
    assert history.run_dir(tmp_path, when, "vm-2cpu").name == "2026-12-02-vm-2cpu"


# -- reports ---------------------------------------------------------------------------------

def fake_result():
    scen = {
        "plain/random": {"output_throughput": 150.0, "p50_ttft_ms": 20.0, "p50_tpot_ms": 90.0,
                         "p50_e2e_ms": 6000.0, "p99_e2e_ms": 7000.0, "goodput_rps": 2.0,
                         "failed": 0, "rounds": 1, "server": "greyelephant"},
        "logits-30/random": {"output_throughput": 146.0, "ratio": 0.973, "baseline":
                             "plain/random", "p50_e2e_ms": 6100.0, "p99_e2e_ms": 7100.0,
                             "rounds": 3, "server": "greyelephant", "events":
                             {"steered_requests": {"logits": 96}, "rollbacks": 0}},
        "logits-30/chat": {"output_throughput": 250.0, "ratio": 0.93, "cpu_ratio": 0.88,
                           "baseline": "plain/chat",
                           "rollbacks_per_request": 1.2, "p50_e2e_ms": 5000.0,
                           "p99_e2e_ms": 6000.0, "rounds": 3, "server": "greyelephant",
                           "mention_rate": 0.0, "delivered_tokens": 4800,
                           "events": {"steered_requests": {"logits": 60}, "rollbacks": 72,
                                      "engine": {"steps": 400, "generated_tokens": 5000,
                                                 "requests": 132, "prefill_tokens": 900}}},
        "critique-revise/chat": {"output_throughput": 90.0, "ratio": 0.4, "baseline":
                                 "plain/chat", "revisions_per_request": 0.9,
                                 "p50_e2e_ms": 12000.0, "p99_e2e_ms": 20000.0, "rounds": 1,
                                 "server": "greyelephant",
                                 "events": {"revisions": 29,
                                            "steered_requests": {"critique_revise": 32}}},
    }
    runs = [run_row("plain/random", c=c, tok=t) for c, t in ((1, 20), (4, 60), (16, 150))]
    runs += [run_row("greyelephant-like/random", server="greyelephant-like", c=16, tok=150),
             run_row("vllm-like/random", server="vllm-like", c=16, tok=140),
             run_row("vllm-defaults/random", server="vllm-defaults", c=16, tok=155)]
    return {
        "family": "load", "preset": "small", "date": "2026-12-02T08:00:00+00:00",
        "machine": "vm x86_64, 2 CPUs", "machine_slug": "vm-2cpu", "note": "machine shared",
        "command": "greyelephant bench load --preset small", "duration_min": 14.0,
        "model": "SmolLM2-135M-Instruct", "kv_share": 0.2,
        "slo": {"ttft_ms": 2000.0, "tpot_ms": 100.0},
        "workloads": {"random": "random", "chat": "chat", "headline_concurrency": 16},
        "servers": {"greyelephant": {"label": "ge", "command": ["py", "-m", "x", "--a"],
                                     "effective": {"chunked_prefill": "False"}},
                    "vllm-like": {"label": "vl", "command": ["py", "-m", "x", "--b"]}},
        "scenarios": scen, "vs_vllm": vs_vllm(runs), "sweeps": sweeps(runs), "runs": runs,
        "previous": {"date": "2026-12-01T08:00:00+00:00", "machine": "vm"},
        "comparison": history.compare({"plain/random": {"output_throughput": 150.0}},
                                      {"scenarios": {"plain/random":
                                                     {"output_throughput": 140.0}}}),
    }


def test_targets_and_headline_numbers():
    r = fake_result()
    t = {x["target"]: x for x in report.targets(r)}
    assert t["steered/plain throughput, 30 names, random prompts (wall clock)"]["met"] is True
    assert t["steered/plain throughput, 30 names, prompts that trigger bans (wall clock)"][
        "met"] is True
    cpu = t["steered/plain throughput, 30 names, prompts that trigger bans (server CPU time "
            "per token)"]
    assert cpu["value"] == 0.88 and cpu["met"] is False
    cr = t["critique-revise p50 latency with dirty drafts (s), revisions made"]
    assert cr["value"] == 12.0 and "29 revisions over 32 requests" in cr["goal"]
    assert any("like-for-like" in k for k in t) and any("defaults" in k for k in t)
    nums = report.headline_numbers(r)
    assert nums["logits-30/chat"]["ratio"] == 0.93
    assert nums["vs-like-for-like@c16"]["ratio"] == pytest.approx(150 / 140, abs=1e-3)
    entry = report.history_entry(r)
    assert entry["family"] == "load" and "logits-30/chat" in entry["scenarios"]


def test_write_load_report_json_markdown_and_plots(tmp_path):
    r = fake_result()
    files = report.write_load(r, tmp_path)
    names = {f.name for f in files}
    assert {"load-small.json", "load-small.md", "load-small-cost.png",
            "load-small-latency.png", "load-small-goodput.png"} <= names
    for f in files:
        assert f.stat().st_size > 0
    assert (tmp_path / "load-small-cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "load-small.md").read_text()
    assert "## Headline" in md and "like-for-like" in md and "machine shared" in md
    assert "![cost per steering scenario](load-small-cost.png)" in md
    assert "Compared with the previous run" in md and "+7.1%" in md
    data = json.loads((tmp_path / "load-small.json").read_text())
    assert data["scenarios"]["logits-30/chat"]["ratio"] == 0.93
    # the engine's work behind the delivered tokens: 4% discarded, 12.5 tokens a step,
    # 83.3 steps per 1,000 delivered tokens
    assert "### Engine work" in md
    assert "| `logits-30/chat` | 132 | 5000 | 4800 | 4% | 900 | 400 | 12.5 | 83.3 |" in md


def test_readme_block_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# X\n\n## Benchmarks\n{report.README_BEGIN}\nold\n{report.README_END}\n"
                      "tail\n")
    r = fake_result()
    r["plots"] = {"cost": "load-small-cost.png"}
    out_dir = tmp_path / "benchmarks" / "results" / "2026-12-02-vm-2cpu"
    assert report.update_readme(readme, r, out_dir)
    text = readme.read_text()
    assert "old" not in text and text.endswith("tail\n")
    assert "benchmarks/results/2026-12-02-vm-2cpu/load-small-cost.png" in text
    assert "0.930" in text
    plain = tmp_path / "plain.md"
    plain.write_text("no markers")
    assert not report.update_readme(plain, r, out_dir)


def test_quality_table_and_plot(tmp_path):
    from greyelephant.benchmarks.load import plots, quality

    rec = {"mention": True, "near_miss": False, "prefer_named": False, "degenerate": None,
           "latency_s": 1.0, "completion_tokens": 10, "steering": None}
    results = {("dev.jsonl", "base"): {"none": [rec], "logits": [dict(rec, mention=False)]},
               ("dev.jsonl", "grey-dpo"): {"none": [rec]}}
    rows = quality.table_rows(results)
    assert [(r["model"], r["row"], r["mention_rate"]) for r in rows] == [
        ("base", "none", 1.0), ("base", "logits", 0.0), ("grey-dpo", "none", 1.0)]
    result = {"machine": "vm", "date": "2026-12-02", "table": rows, "preset": "small",
              "family": "quality", "note": "", "command": "c", "duration_min": 1,
              "server": "s", "max_tokens": 96, "concurrency": 8, "previous": None}
    assert plots.quality_plot(result, tmp_path / "q.png")
    md = quality.quality_markdown(result)
    assert "| dev.jsonl | grey-dpo | `none` | 1 | 1.000 |" in md


def test_server_commands_for_each_configuration(tmp_path):
    from greyelephant.benchmarks.load.servers import SERVERS, server_command

    def args(key, shipped):
        return server_command(SERVERS[key], "/m", "M", 0.2, tmp_path, shipped=shipped)[1]

    # the shipped adapter is served by default: never passed twice; like-for-like turns it off
    assert "--adapter" not in args("greyelephant", True)
    assert "--no-shipped-adapters" in args("greyelephant-like", True)
    # an older server without shipped adapters: --adapter, and nothing to turn off
    assert f"grey-dpo={tmp_path / 'adapters/grey-dpo'}" in args("greyelephant", False)
    assert "--no-shipped-adapters" not in args("greyelephant-like", False)
    for key in ("greyelephant-like", "vllm-like"):
        a = args(key, True)
        assert a[a.index("--block-size") + 1] == "32" and "--no-enable-chunked-prefill" in a
    vd = server_command(SERVERS["vllm-defaults"], "/m", "M", 0.2, tmp_path)
    assert vd[0][-1] == "vllm.entrypoints.openai.api_server" and vd[2] == "/health"
    assert "--block-size" not in vd[1] and vd[1][vd[1].index("--gpu-memory-utilization") + 1] \
        == "0.2"


def test_session_cpu_seconds_reads_proc(tmp_path):
    from greyelephant.benchmarks.load.counters import session_cpu_by_process, session_cpu_seconds

    tick = __import__("os").sysconf("SC_CLK_TCK")
    # pid (comm with ) and spaces) state ppid pgrp session ... utime stime
    for pid, session, ut, st in ((10, 7, 3 * tick, tick), (11, 7, tick, 0), (12, 8, 50, 50)):
        d = tmp_path / str(pid)
        d.mkdir()
        fields = ["S", "1", "7", str(session)] + ["0"] * 7 + [str(ut), str(st)] + ["0"] * 10
        (d / "stat").write_text(f"{pid} (VLLM::Worker (x)) " + " ".join(fields) + "\n")
    (tmp_path / "self").mkdir()
    assert session_cpu_seconds(7, proc=str(tmp_path)) == 5.0
    assert session_cpu_seconds(99, proc=str(tmp_path)) == 0.0
    # per process name (a comm holding ")" and spaces), processes of one name summed
    assert session_cpu_by_process(7, proc=str(tmp_path)) == {"VLLM::Worker (x)": 5.0}


def test_headline_rounds_cell_counts_rounds_and_their_middle_half():
    assert report._spread([0.9, None, 1.0], [0.92, 0.98]) == "2 rounds, middle half 0.920–0.980"
    assert report._spread([0.9], None) == "1 round"
    assert report._spread(None, None) == ""


def test_steady_throughput_is_littles_law_and_pairs_like_the_wall_clock_ratio():
    """Steady state: concurrency × tokens per request / mean latency, the run's ramp-down
    left out; the steady ratio pairs each round with its twin runs as the wall-clock one
    does; rate-driven runs and runs without the numbers have none."""
    p = run_row("plain/chat", c=16, output_tokens=960, completed=10, mean_e2e_ms=2000.0)
    assert steady_throughput(p) == pytest.approx(16 * 96 / 2.0)
    assert steady_throughput({**p, "request_rate": 2.0}) is None
    assert steady_throughput({**p, "mean_e2e_ms": None}) is None
    m = sc.select(sc.build_matrix(sc.PRESETS["full"]), ["logits-30/chat"])
    kw = dict(output_tokens=960, completed=10)
    runs = [run_row("plain/chat", rnd=0, twin_of="logits-30/chat", pairs_with=[0],
                    mean_e2e_ms=1000.0, **kw),
            # a long tail: the wall-clock ratio 0.8, the mean latency only 1/0.95 longer
            run_row("logits-30/chat", rnd=0, tok=80, mean_e2e_ms=1000 / 0.95, **kw),
            run_row("plain/chat", rnd=0, twin_of="logits-30/chat", pairs_with=[0],
                    mean_e2e_ms=1000.0, **kw)]
    row = aggregate(runs, m, 16)["logits-30/chat"]
    assert row["ratio"] == 0.8 and row["steady_ratio"] == pytest.approx(0.95)
    assert row["steady_ratio_rounds"] == [pytest.approx(0.95)]
    shown = {t["target"]: t for t in report.targets({"scenarios": {"logits-30/chat": row},
                                                     "vs_vllm": []})}
    steady = next(t for k, t in shown.items() if "bans (steady state" in k)
    assert steady["met"] is True and steady["value"] == pytest.approx(0.95)
    assert next(t for k, t in shown.items() if "bans (wall clock)" in k)["met"] is False


def test_report_from_aggregates_an_earlier_file_again_in_place(tmp_path):
    """--report-from runs nothing: it re-aggregates the file's runs, keeps them, records
    when and how, and rewrites the report beside it."""
    m = sc.select(sc.build_matrix(sc.PRESETS["full"]), ["logits-30/chat"])
    kw = dict(output_tokens=960, completed=10, mean_e2e_ms=1000.0)
    runs = [run_row("plain/chat", rnd=0, twin_of="logits-30/chat", pairs_with=[0], **kw),
            run_row("logits-30/chat", rnd=0, tok=95, **kw),
            run_row("plain/chat", rnd=0, twin_of="logits-30/chat", pairs_with=[0], **kw)]
    old = {"family": "load", "preset": "full", "date": "2026-12-03T07:03:33+00:00",
           "machine": "vm", "machine_slug": "vm-2cpu", "note": "", "command": "x",
           "duration_min": 1.0, "model": "m", "kv_share": [0.2],
           "slo": {"ttft_ms": 2000, "tpot_ms": 200},
           "workloads": {"random": "r", "chat": "c", "headline_concurrency": 16},
           "servers": {}, "scenarios": {}, "vs_vllm": [], "sweeps": {}, "runs": runs,
           "matrix": [s.__dict__ for s in m]}
    path = tmp_path / "load-full.json"
    path.write_text(json.dumps(old, default=str))
    assert run_main(["--report-from", str(path)]) == 0
    new = json.loads(path.read_text())
    assert new["runs"] == json.loads(json.dumps(runs))
    assert new["scenarios"]["logits-30/chat"]["ratio"] == 0.95
    assert new["scenarios"]["logits-30/chat"]["steady_ratio"] == 1.0
    assert new["reaggregated"]["command"].endswith(f"--report-from {path}")
    assert "aggregated again from this file's runs" in (tmp_path / "load-full.md").read_text()
