"""GPU check for the logit-processing kernels: correctness against the float64 reference
and the CPU torch path, then timings, written to --out as JSON + markdown + charts.

    PYTHONUNBUFFERED=1 python benchmarks/kernels/gpu_check.py --out DIR            # GPU
    TRITON_INTERPRET=1 python benchmarks/kernels/gpu_check.py --smoke --out DIR    # CPU

Needs torch and triton only (no install of this package: see _path.py). --smoke runs
tiny shapes on the CPU through Triton's interpreter, to test this script itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import _path

_path.ensure_importable()

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import bench_logit_controls  # noqa: E402
from bench_logit_controls import VARIANTS  # noqa: E402
import bench_sampling  # noqa: E402
import report  # noqa: E402
from baselines import sort_top_p_sample  # noqa: E402
from cases import controls_inputs  # noqa: E402
from timing import copy_bandwidth_gbs, graph_us, median_events_us  # noqa: E402

from greyelephant.kernels import pack_token_bitmask  # noqa: E402
from greyelephant.kernels.logit_controls_ref import logit_controls_reference  # noqa: E402
from greyelephant.kernels.logit_controls_torch import apply_logit_controls_torch  # noqa: E402
from greyelephant.kernels.logit_controls_triton import apply_logit_controls_triton  # noqa: E402
from greyelephant.kernels.rng import gumbel_noise  # noqa: E402
from greyelephant.kernels.sampling import normalize_args, row_params  # noqa: E402
from greyelephant.kernels.sampling_ref import sample_reference, sampling_probs_reference  # noqa: E402,E501
from greyelephant.kernels.sampling_torch import sample_torch  # noqa: E402
from greyelephant.kernels.sampling_triton import sample_triton  # noqa: E402

RTOL = {torch.float32: 1e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}  # ~2 ulps
# Triton's interpreter casts float32 -> bf16 by truncation, not rounding to nearest even
INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
if INTERPRETER:
    RTOL[torch.bfloat16] = 1.6e-2
DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CHECKS = []


def log(msg=""):
    print(msg, flush=True)


def check(name, ok, **info):
    CHECKS.append({"check": name, "ok": bool(ok), **info})
    log(f"  [{'PASS' if ok else 'FAIL'}] {name} {info if info else ''}")


# ---------------------------------------------------------------- correctness: controls
def edge_inputs(b, v, device, seed):
    """Random CSR lengths (some rows empty), 20% banned, row 0 fully banned, penalties and
    temperatures incl. greedy rows."""
    g = torch.Generator().manual_seed(seed)

    def rand_csr(max_len):
        lens = torch.randint(0, max_len + 1, (b,), generator=g)
        lens[b // 2] = 0
        ids = torch.cat([torch.randperm(v, generator=g)[: int(n)] for n in lens]).to(torch.int32)
        indptr = torch.zeros(b + 1, dtype=torch.int32)
        indptr[1:] = lens.cumsum(0)
        return indptr.to(device), ids.to(device)

    kw = {}
    kw["bias_indptr"], kw["bias_token_ids"] = rand_csr(100)
    kw["bias_values"] = (torch.randn(kw["bias_token_ids"].numel(), generator=g) * 4).to(device)
    banned = torch.rand(b, v, generator=g) < 0.2
    banned[0] = True
    kw["banned_bitmask"] = pack_token_bitmask(banned).to(device)
    kw["penalty_indptr"], ids = rand_csr(600)
    n = ids.numel()
    kw.update(
        penalty_token_ids=ids,
        penalty_output_counts=torch.randint(0, 4, (n,), generator=g, dtype=torch.int32).to(device),
        penalty_in_prompt=(torch.rand(n, generator=g) < 0.5).to(device),
        repetition_penalty=(torch.rand(b, generator=g) + 0.5).to(device),
        presence_penalty=(torch.rand(b, generator=g) * 2 - 1).to(device),
        frequency_penalty=(torch.rand(b, generator=g) * 2 - 1).to(device),
    )
    t = torch.rand(b, generator=g) * 1.5 + 0.1
    t[::3] = 0.0
    kw["temperature"] = t.to(device)
    x = torch.randn(b, v, generator=g) * 5
    specials = torch.tensor([float("-inf"), float("inf"), float("nan"), 1e30, -1e30, 0.0])
    k = min(40, v // 6)
    x[-1, : 6 * k] = specials.repeat(k)  # edge values in the last row
    return x.to(device), kw


def same_or_nan(a, b):
    return (a == b) | (torch.isnan(a) & torch.isnan(b))


def controls_errors(out, ref, x_in, dtype):
    out, ref = out.double(), ref.double()
    nan_ok = torch.equal(torch.isnan(out), torch.isnan(ref))
    inf = torch.isinf(ref)
    inf_ok = torch.equal(torch.isinf(out), inf) and torch.equal(out[inf], ref[inf])
    fin = torch.isfinite(ref) & torch.isfinite(out)
    scale = ref[fin].abs() + 8.0 + x_in.double()[fin].abs().nan_to_num(posinf=0, neginf=0)
    rel = ((out[fin] - ref[fin]).abs() / scale).max().item() if bool(fin.any()) else 0.0
    return nan_ok, inf_ok, rel


def correctness_controls(device, shapes):
    log("correctness: fused logit controls")
    for dtype_name in ("fp32", "bf16", "fp16"):
        dtype = DT[dtype_name]
        for b, v in shapes:
            x, kw = edge_inputs(b, v, device, seed=b * 131 + v)
            x = x.to(dtype)
            ref = logit_controls_reference(x.double(), **kw)
            y = x.clone()
            apply_logit_controls_triton(y, **kw)
            nan_ok, inf_ok, rel = controls_errors(y, ref, x, dtype)
            check(f"controls {dtype_name} B={b} V={v} vs float64 ref",
                  nan_ok and inf_ok and rel <= RTOL[dtype], max_rel_err=rel, nan_ok=nan_ok,
                  inf_ok=inf_ok)
            # same staged arithmetic as the CPU torch path: expect bitwise equality, from
            # every launch variant (fused / split; hoisted and run-3 staged code)
            cpu = x.cpu().clone()
            apply_logit_controls_torch(cpu, **{k: t.cpu() for k, t in kw.items()})
            for name, (mode, hoist) in (("auto", ("auto", True)), *VARIANTS.items()):
                if name != "auto":
                    y = x.clone()
                    apply_logit_controls_triton(y, mode=mode, hoist=hoist, **kw)
                yc = y.cpu()
                same = same_or_nan(yc, cpu)
                if INTERPRETER and dtype == torch.bfloat16:  # truncating casts: a few ulps
                    scale = (cpu.float().abs() + 8
                             + x.cpu().float().abs().nan_to_num(posinf=0, neginf=0))
                    same = same | ((yc.float() - cpu.float()).abs() <= RTOL[dtype] * scale)
                check(f"controls {dtype_name} B={b} V={v} {name} vs CPU torch path (bitwise)",
                      bool(same.all()), mismatches=int((~same).sum()))
    # every block config the heuristic can pick, on a ragged vocabulary and strided rows
    b, v = 5, 20000 + 13
    base, kw = edge_inputs(b, v + 100, device, seed=3)
    kw = {**kw, "banned_bitmask": kw["banned_bitmask"][:, : (v + 31) // 32]}
    for mode in ("fused", "split"):
        for block, warps in ((1024, 4), (2048, 4), (4096, 8), (8192, 8), (16384, 16)):
            buf = base.clone()
            x = buf[:, 50: 50 + v]
            ref = logit_controls_reference(x.double(), **{k: t for k, t in kw.items()})
            apply_logit_controls_triton(x, mode=mode, block=block, num_warps=warps, **kw)
            nan_ok, inf_ok, rel = controls_errors(x, ref, base[:, 50: 50 + v], torch.float32)
            untouched = bool(same_or_nan(buf[:, :50], base[:, :50]).all()) and bool(
                same_or_nan(buf[:, 50 + v:], base[:, 50 + v:]).all())
            check(f"controls strided rows {mode} BLOCK={block} warps={warps}",
                  nan_ok and inf_ok and rel <= 1e-6 and untouched, max_rel_err=rel,
                  untouched=untouched)


# ---------------------------------------------------------------- correctness: sampling
def correctness_sampling(device, b, v, n_stat, v_stat):
    log("correctness: sampler")
    g = torch.Generator().manual_seed(17)
    x = (torch.randn(b, v, generator=g) * 3).to(device)
    temp = torch.rand(b, generator=g) * 1.2 + 0.3
    temp[::7] = 0.0
    top_k = torch.randint(-1, 200, (b,), generator=g)
    top_p = torch.rand(b, generator=g) * 0.95 + 0.05
    min_p = torch.rand(b, generator=g) * 0.2
    kw = dict(temperature=temp.to(device), top_k=top_k.to(device), top_p=top_p.to(device),
              min_p=min_p.to(device))
    args = normalize_args(x, seeds=torch.arange(b, device=device) * 31 + 7, steps=3, **kw)
    gpu = sample_triton(x, args).cpu()
    args_cpu = type(args)(**{k: (getattr(args, k).cpu() if torch.is_tensor(getattr(args, k))
                                 else getattr(args, k)) for k in args.__dataclass_fields__})
    rows_cpu = row_params(args_cpu, b, torch.device("cpu"))
    cpu = sample_torch(x.cpu(), rows_cpu)
    agree = (gpu == cpu).float().mean().item()
    check(f"sampler B={b} V={v} GPU kernel vs CPU torch path (same noise)", agree >= 0.99,
          agreement=agree)
    noise = gumbel_noise(rows_cpu.key_a, rows_cpu.key_b, v).double()
    ref = sample_reference(x.cpu().double(), noise, temperature=temp.double(), top_k=top_k,
                           top_p=top_p.double(), min_p=min_p.double())
    agree_ref = (gpu == ref).float().mean().item()
    check(f"sampler B={b} V={v} GPU kernel vs float64 sort-based reference (same noise)",
          agree_ref >= 0.99, agreement=agree_ref)
    again = sample_triton(x, args).cpu()
    check("sampler determinism (same seeds, same result)", torch.equal(gpu, again))

    # statistics: one row, many seeds; total variation against the exact distribution
    row = torch.randn(1, v_stat, generator=g) * 2
    params = dict(temperature=0.8, top_k=100, top_p=0.9, min_p=0.01)
    xs = row.to(device).expand(n_stat, v_stat).contiguous()
    args = normalize_args(xs, seeds=torch.arange(n_stat, device=device), **params)
    counts = torch.bincount(sample_triton(xs, args).cpu(), minlength=v_stat).double()
    ref_probs = sampling_probs_reference(
        row.double(), temperature=torch.tensor([0.8], dtype=torch.float64),
        top_k=torch.tensor([100]), top_p=torch.tensor([0.9], dtype=torch.float64),
        min_p=torch.tensor([0.01], dtype=torch.float64))[0]
    tv = 0.5 * (counts / n_stat - ref_probs).abs().sum().item()
    keep = ref_probs > 0
    chi2 = (((counts[keep] - n_stat * ref_probs[keep]) ** 2) / (n_stat * ref_probs[keep])).sum()
    dof = int(keep.sum()) - 1
    outside = int(counts[~keep].sum())
    # the same statistic for torch's sort-based sampler: the sampling-noise yardstick
    base = sort_top_p_sample(xs, torch.full((n_stat,), 0.8, device=device),
                             torch.full((n_stat,), 1.0, device=device))
    tv_floor = 0.5 * (torch.bincount(base.cpu(), minlength=v_stat).double() / n_stat
                      - sampling_probs_reference(row.double(), temperature=torch.tensor(
                          [0.8], dtype=torch.float64))[0]).abs().sum().item()
    check(f"sampler distribution N={n_stat} V={v_stat} (temp .8, top-k 100, top-p .9, min-p .01)",
          outside == 0 and chi2.item() < dof + 6 * (2 * dof) ** 0.5 + 10,
          tv=tv, chi2=chi2.item(), dof=dof, outside_support=outside,
          tv_sort_based_sampler_plain=tv_floor)


# ---------------------------------------------------------------- sweeps
def sweep_controls(device, b, v, log=log):
    log(f"sweep: fused vs split, BLOCK x warps, B={b} V={v}; sparse list sizes (GPU time, graph)")
    out = []
    for dt in ("bf16", "fp32"):
        kw = controls_inputs(b, v, device)
        bufs = [torch.randn(b, v, device=device).to(DT[dt]) for _ in range(3)]
        for mode in ("fused", "split"):
            for block, warps in ((1024, 4), (2048, 4), (2048, 8), (4096, 4), (4096, 8),
                                 (8192, 8)):
                us = graph_us([lambda x=x, m=mode, bl=block, w=warps, k=kw: apply_logit_controls_triton(
                    x, mode=m, block=bl, num_warps=w, **k) for x in bufs], device)
                out.append({"kind": "config", "dtype": dt, "mode": mode, "block": block,
                            "warps": warps, "us": us})
                log(f"  {dt} {mode:<7} BLOCK={block:<5} warps={warps} {f1(us)} us")
    bufs = [torch.randn(b, v, device=device).to(torch.bfloat16) for _ in range(3)]
    for bias_n, pen_n in ((0, 0), (64, 512), (64, 4096), (1024, 8192)):
        kw2 = controls_inputs(b, v, device, bias_per_row=max(bias_n, 1),
                              penalty_per_row=max(pen_n, 1))
        if bias_n == 0:
            kw2 = {k: t for k, t in kw2.items() if k in ("banned_bitmask", "temperature")}
        for name, (mode, hoist) in VARIANTS.items():
            if bias_n == 0 and name != "split":
                continue  # dense stages only: every variant is the same dense kernel
            us = graph_us([lambda x=x, m=mode, h=hoist, k=kw2: apply_logit_controls_triton(
                x, mode=m, hoist=h, **k) for x in bufs], device)
            out.append({"kind": "sparse", "dtype": "bf16", "mode": name, "bias_per_row": bias_n,
                        "penalty_per_row": pen_n, "us": us})
            log(f"  bf16 {name:<12} bias/row={bias_n:<5} penalty/row={pen_n:<5} {f1(us)} us")
    return out


@triton.jit
def _touch(p):
    tl.store(p, tl.load(p) + 1)


def f1(v):
    return "  n/a" if v is None else f"{v:7.1f}"


def launch_overhead(device, log=log):
    """Host time per call (back to back, µs) for launches of growing weight."""
    from timing import wall_us

    from greyelephant.kernels import apply_logit_controls, sample_from_logits

    one = torch.zeros(1, device=device)
    b, v = 1, 4096
    kw = controls_inputs(b, v, device)
    x = torch.randn(b, v, device=device).to(torch.bfloat16)
    temp = torch.ones(b, device=device)
    top_p = torch.full((b,), 0.9, device=device)
    seeds = torch.arange(b, device=device)
    out = {
        "torch_add_": wall_us(lambda: one.add_(1), device, reps=2000),
        "triton_trivial_kernel": wall_us(lambda: _touch[(1,)](one), device, reps=2000),
        "controls_launcher_fused": wall_us(
            lambda: apply_logit_controls_triton(x, mode="fused", **kw), device, reps=1000),
        "controls_launcher_split": wall_us(
            lambda: apply_logit_controls_triton(x, mode="split", **kw), device, reps=1000),
        "controls_public_api": wall_us(lambda: apply_logit_controls(x, **kw), device, reps=1000),
        "sampler_public_api": wall_us(lambda: sample_from_logits(
            x.float(), temperature=temp, top_p=top_p, seeds=seeds), device, reps=500),
    }
    log("host time per call (µs, B=1 V=4096): " + ", ".join(f"{k} {t:.1f}" for k, t in out.items()))
    return out


def sweep_sampling(device, b, v, log=log):
    log(f"sweep: sampler block/warps, B={b} V={v} fp32")
    out = []
    x = torch.randn(b, v, device=device) * 4
    args = normalize_args(x, temperature=torch.full((b,), 0.9, device=device),
                          top_p=torch.full((b,), 0.9, device=device),
                          seeds=torch.arange(b, device=device))
    for block, warps in ((4096, 8), (4096, 16), (8192, 16), (8192, 32), (16384, 16), (16384, 32)):
        us = median_events_us([lambda bl=block, w=warps: sample_triton(x, args, block=bl,
                                                                      num_warps=w)],
                              device, reps=30)
        out.append({"block": block, "warps": warps, "us": us})
        log(f"  BLOCK={block:<6} warps={warps:<3} {us:8.1f} us")
    return out


# ---------------------------------------------------------------- report
def write_report(out_dir: Path, meta, controls, sampling, sweeps):
    lines = [f"# Kernel GPU check — {meta['device']} — {meta['date']}", "",
             f"torch {meta['torch']}, triton {meta['triton']}, python {meta['python']}; "
             f"copy bandwidth {meta['copy_gbs']:.0f} GB/s (read + write, {meta['copy_note']}).",
             "", "## Correctness", "",
             f"{sum(c['ok'] for c in CHECKS)}/{len(CHECKS)} checks passed.", ""]
    lines += [f"- {'PASS' if c['ok'] else 'FAIL'} {c['check']}" for c in CHECKS if not c["ok"]]
    lines += ["", "## Fused logit controls (bias 64/row, penalties 512/row, 1% banned, "
              "temperature; in place)", "",
              "GPU µs = per call inside a CUDA graph (no launch gaps): `fused` one launch "
              "(sparse stages, then the tile), `split` sparse + dense "
              "launches; `run3` columns = the same with run 3's staged sparse code. api µs = public `apply_logit_controls`, median "
              "per call with CUDA events (includes host launch time when that is longer). "
              "floor = bytes / copy bandwidth. Unfused torch chain: events per call and GPU "
              "time in a graph.", ""]
    lines.append(report.md_table(controls, [
        ("dtype", "dtype", 0), ("B", "B", 0), ("V", "V", 0),
        ("GPU fused µs", "fused_graph_us", 1), ("GPU split µs", "split_graph_us", 1),
        ("run3 fused µs", "fused_staged_graph_us", 1),
        ("run3 split µs", "split_staged_graph_us", 1), ("best", "best_variant", 0),
        ("floor µs", "floor_us", 1), ("best % bw", "best_pct_bw", 0), ("api µs", "api_us", 1),
        ("api wall µs", "api_wall_us", 1), ("unfused µs", "unfused_us", 1),
        ("unfused GPU µs", "unfused_graph_us", 1), ("torch path µs", "torch_path_us", 1),
        ("GPU × vs unfused", "gpu_speedup_vs_unfused", 1)]))
    lines += ["", "## Sampler (top-p 0.9, temperature; fp32 logits)", ""]
    lines.append(report.md_table(sampling, [
        ("B", "B", 0), ("V", "V", 0), ("ours top-p µs", "ours_top_p_us", 1),
        ("ours graph µs", "ours_top_p_graph_us", 1),
        ("ours top-k 50 + top-p µs", "ours_top_k_top_p_us", 1),
        ("sort-based top-p µs", "sort_top_p_us", 1), ("× vs sort", "speedup_vs_sort", 1)]))
    if meta.get("launch_overhead"):
        lines += ["", "## Host time per call (µs, back to back, B=1 V=4096)", ""]
        lines += [f"- {k}: {t:.1f}" for k, t in meta["launch_overhead"].items()]
    lines += ["", "## Targets", ""]
    lines += [f"- {t}" for t in meta["targets"]]
    if sweeps:
        lines += ["", "## Sweeps (GPU µs per call, CUDA graph)", ""]
        for name, rows in sweeps.items():
            if rows:
                cols = [(k, k, 1) for k in dict.fromkeys(k for r in rows for k in r)]
                lines += [f"### {name}", "", report.md_table(rows, cols), ""]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")

    labels = [f"{r['dtype']} B{r['B']} V{r['V'] // 1024}k" for r in controls]
    series = {"fused (GPU)": [r["fused_graph_us"] for r in controls],
              "split (GPU)": [r["split_graph_us"] for r in controls],
              "split, run-3 code (GPU)": [r["split_staged_graph_us"] for r in controls],
              "bandwidth floor": [r.get("floor_us") for r in controls],
              "unfused torch chain (GPU)": [r.get("unfused_graph_us") for r in controls],
              "api per call (events)": [r["api_us"] for r in controls]}
    s_labels = [f"B{r['B']} V{r['V'] // 1024}k" for r in sampling]
    s_series = {"ours (top-p)": [r["ours_top_p_us"] for r in sampling],
                "ours (top-k+top-p)": [r["ours_top_k_top_p_us"] for r in sampling],
                "sort-based top-p": [r["sort_top_p_us"] for r in sampling]}
    title = f"fused logit controls, {meta['device']}"
    if not report.png_chart(out_dir / "controls.png", title, labels, series):
        (out_dir / "controls.svg").write_text(report.svg_chart(title, labels, series))
    title = f"sampling, {meta['device']}"
    if not report.png_chart(out_dir / "sampling.png", title, s_labels, s_series):
        (out_dir / "sampling.svg").write_text(report.svg_chart(title, s_labels, s_series))


def targets(controls, sampling):
    t = []
    for dt in ("bf16", "fp32"):
        r = next((r for r in controls if r["B"] == 256 and r["V"] == 131072 and r["dtype"] == dt),
                 None)
        if r and r.get("floor_us") and r.get("best_gpu_us"):
            frac = r["floor_us"] / r["best_gpu_us"]
            sp = r.get("gpu_speedup_vs_unfused") or r["speedup_vs_unfused"]
            t.append(f"{dt} B=256 V=131072: best GPU time {r['best_gpu_us']:.1f} µs "
                     f"({r['best_variant']}) = "
                     f"{100 * frac:.0f}% of copy bandwidth (target ≥ 70%: "
                     f"{'met' if frac >= 0.7 else 'MISSED'}); {sp:.1f}× vs unfused chain GPU time "
                     f"(target ≥ 8×: {'met' if sp >= 8 else 'MISSED'}); api per call "
                     f"{r['api_us']:.1f} µs vs unfused {r['unfused_us']:.1f} µs")
    b1 = [r for r in controls if r["B"] == 1]
    if b1 and all(r.get("best_gpu_us") for r in b1):
        worst = max(r["best_gpu_us"] for r in b1)
        worst_api = max(r["api_us"] for r in b1)
        t.append(f"B=1: worst best-variant GPU time {worst:.1f} µs (target < 10 µs: "
                 f"{'met' if worst < 10 else 'MISSED'}); per call with host launch "
                 f"{worst_api:.1f} µs")
    big = [r for r in sampling if r["B"] >= 32]
    if big:
        ok = all(r["speedup_vs_sort"] > 1 for r in big)
        t.append(f"sampler B ≥ 32: {min(r['speedup_vs_sort'] for r in big):.1f}× to "
                 f"{max(r['speedup_vs_sort'] for r in big):.1f}× vs sort-based top-p "
                 f"(target > 1×: {'met' if ok else 'MISSED'})")
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (interpreter)")
    ap.add_argument("--no-sweeps", action="store_true")
    a = ap.parse_args()
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cuda = torch.cuda.is_available() and not a.smoke
    if not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("no GPU: run with --smoke and TRITON_INTERPRET=1")
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or 'cpu'}, Triton interpreter)"
    log(f"device: {name}; torch {torch.__version__}; triton {triton.__version__}")
    if cuda:
        p = torch.cuda.get_device_properties(device)
        log(f"  {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB")
    meta = {"device": name, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "triton": triton.__version__, "python": platform.python_version(), "smoke": a.smoke}
    results = {"meta": meta}
    try:
        if cuda:
            correctness_controls(device, [(1, 49152), (3, 131072 + 7), (32, 151936), (256, 4099)])
            correctness_sampling(device, 128, 32000, n_stat=100_000, v_stat=1000)
        else:
            correctness_controls(device, [(1, 77), (3, 1000 + 5)])
            correctness_sampling(device, 8, 300, n_stat=60, v_stat=6)
        log(f"correctness done ({time.time() - t0:.0f} s)")
        meta["copy_gbs"] = copy_bandwidth_gbs(device, nbytes=(1 << 30) if cuda else (1 << 22))
        meta["copy_note"] = "1 GiB fp32 tensor.copy_, median of 20" if cuda else "CPU, tiny"
        log(f"copy bandwidth: {meta['copy_gbs']:.0f} GB/s (read + write)")
        if cuda:
            controls = bench_logit_controls.run(device, bench_logit_controls.GPU_BATCHES,
                                                bench_logit_controls.GPU_VOCABS,
                                                copy_gbs=meta["copy_gbs"], log=log)
            sampling = bench_sampling.run(device, bench_sampling.GPU_BATCHES,
                                          bench_sampling.GPU_VOCABS, log=log)
        else:
            controls = bench_logit_controls.run(device, (1, 2), (100, 300), dtypes=("bf16",),
                                                copy_gbs=meta["copy_gbs"], reps=3, log=log)
            sampling = bench_sampling.run(device, (2,), (100,), reps=2, log=log)
        results.update(controls=controls, sampling=sampling)
        if cuda:
            meta["launch_overhead"] = launch_overhead(device)
        sweeps = {}
        if not a.no_sweeps:
            if cuda:
                sweeps["controls"] = sweep_controls(device, 256, 131072)
                sweeps["sampling"] = sweep_sampling(device, 256, 131072)
            else:
                sweeps["controls"] = []
        results["sweeps"] = sweeps
        meta["targets"] = targets(controls, sampling)
        results["checks"] = CHECKS
        write_report(out_dir, meta, controls, sampling, sweeps)
    except Exception:
        results["error"] = traceback.format_exc()
        results["checks"] = CHECKS
        raise
    finally:
        meta["elapsed_s"] = time.time() - t0
        (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    log("")
    log("\n".join(meta["targets"]))
    n_ok = sum(c["ok"] for c in CHECKS)
    log(f"checks: {n_ok}/{len(CHECKS)} passed; total {meta['elapsed_s']:.0f} s; wrote {out_dir}")
    return 0 if n_ok == len(CHECKS) else 1


if __name__ == "__main__":
    sys.exit(main())
