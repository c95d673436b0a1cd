"""PNG plots of the reports (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

SERVER_COLORS = {"greyelephant": "#4c72b0", "greyelephant-like": "#8172b2",
                 "vllm-defaults": "#dd8452", "vllm-like": "#c44e52"}
MODE_STYLE = {"concurrency": ("o", "-"), "poisson": ("s", "--"), "guidellm": ("^", ":")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False,
                         "font.size": 9})
    return plt


def _color(server: str, scenario: str) -> str:
    if scenario.startswith("logits"):
        return "#55a868"
    return SERVER_COLORS.get(server, "#777777")


def _curves(result: dict) -> dict[str, list[dict]]:
    """The sweeps with at least two points (single runs are in the cost plot)."""
    return {k: [p for p in v if p.get("output_throughput")]
            for k, v in (result.get("sweeps") or {}).items()
            if len([p for p in v if p.get("output_throughput")]) >= 2}


def latency_throughput(result: dict, path: Path) -> bool:
    sweeps = _curves(result)
    if not sweeps:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    for key, pts in sweeps.items():
        server, scen, mode = key.split("|")
        pts = [p for p in pts if p.get("output_throughput")]
        if not pts:
            continue
        marker, ls = MODE_STYLE.get(mode, ("o", "-"))
        label = f"{server} · {scen} · {mode if mode != 'concurrency' else 'c-sweep'}"
        xs = [p["output_throughput"] for p in pts]
        for ax, metric in zip(axes, ("p50_ttft_ms", "p50_tpot_ms", "p99_e2e_ms"), strict=True):
            ys = [p.get(metric) for p in pts]
            if all(y is None for y in ys):
                continue
            ax.plot(xs, ys, marker=marker, ls=ls, color=_color(server, scen), label=label,
                    alpha=0.9, ms=5)
            if mode == "concurrency":
                for p, x, y in zip(pts, xs, ys, strict=True):
                    if y is not None:
                        ax.annotate(f"c{p['concurrency']}", (x, y), fontsize=7,
                                    xytext=(3, 3), textcoords="offset points")
    for ax, title in zip(axes, ("TTFT p50 (ms)", "TPOT p50 (ms)", "end-to-end p99 (ms)"),
                         strict=True):
        ax.set_xlabel("output throughput (tokens/s)")
        ax.set_title(title)
        ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(f"Latency vs throughput — {result['machine']}, {result['date'][:10]} "
                 f"(preset {result['preset']}; c = concurrency; s = Poisson, ^ = guidellm)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * ((len(labels) + 2) // 3), 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return True


def goodput(result: dict, path: Path) -> bool:
    sweeps = _curves(result)
    if not sweeps:
        return False
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    slo = result["slo"]
    for key, pts in sweeps.items():
        server, scen, mode = key.split("|")
        color = _color(server, scen)
        if mode == "concurrency":
            xs = [p["concurrency"] for p in pts]
            a.plot(xs, [p.get("goodput_rps") or 0 for p in pts], "o-", color=color,
                   label=f"{server} · {scen}")
            a.plot(xs, [p.get("request_throughput") or 0 for p in pts], "o:", color=color,
                   alpha=0.45)
        elif mode == "poisson":
            xs = [p["request_rate"] for p in pts]
            b.plot(xs, [p.get("goodput_rps") or 0 for p in pts], "s-", color=color,
                   label=f"{server} · {scen} (vLLM client)")
        elif mode == "guidellm":
            pp = [p for p in pts if p.get("target_rate")]
            if pp:
                b.plot([p["target_rate"] for p in pp], [p.get("goodput_rps") or 0 for p in pp],
                       "^--", color=color, label=f"{server} · {scen} (guidellm)")
    a.set_xscale("log", base=2)
    a.set_xlabel("concurrency")
    a.set_ylabel("requests/s")
    a.set_title("goodput (solid) and throughput (dotted) by concurrency")
    b.set_xlabel("offered Poisson rate (requests/s)")
    b.set_ylabel("goodput (requests/s)")
    lim = max([*b.get_xlim(), 0.1])
    b.plot([0, lim], [0, lim], color="#bbbbbb", lw=1, label="goodput = offered rate")
    b.set_title("goodput under a Poisson load")
    for ax in (a, b):
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.suptitle(f"Goodput: requests meeting TTFT <= {slo['ttft_ms']:g} ms and TPOT <= "
                 f"{slo['tpot_ms']:g} ms — {result['machine']}, {result['date'][:10]}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def cost(result: dict, path: Path) -> bool:
    scen = result.get("scenarios") or {}
    rows = [(n, s) for n, s in scen.items() if s.get("ratio") is not None
            and not n.startswith("vllm")]
    if not rows:
        return False
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 0.42 * len(rows) + 1.8),
                               gridspec_kw={"width_ratios": [1.2, 1]})
    names = [n for n, _ in rows][::-1]
    ratios = [s["ratio"] for _, s in rows][::-1]
    colors = ["#55a868" if r >= 0.95 else "#dd8452" if r >= 0.9 else "#c44e52" for r in ratios]
    a.barh(names, ratios, color=colors)
    a.axvline(1.0, color="#333333", lw=1)
    a.axvline(0.95, color="#55a868", lw=1, ls="--", label="0.95× (random-prompt target)")
    a.axvline(0.90, color="#dd8452", lw=1, ls="--", label="0.90× (ban-triggering target)")
    for i, (n, r) in enumerate(zip(names, ratios, strict=True)):
        s = scen[n]
        note = []
        if s.get("rollbacks_per_request"):
            note.append(f"{s['rollbacks_per_request']:.2f} rollbacks/req")
        if s.get("revisions_per_request"):
            note.append(f"{s['revisions_per_request']:.2f} revisions/req")
        a.text(r + 0.01, i, f"{r:.2f}× " + ", ".join(note), va="center", fontsize=7)
    a.set_xlim(0, max([*ratios, 1.0]) * 1.45)
    a.set_xlabel("output throughput / its plain twin (same server, paired rounds)")
    a.set_title("throughput cost of steering")
    a.legend(fontsize=7, loc="upper right", frameon=False)
    e2e = [(scen[n].get("p50_e2e_ms") or 0) / 1000 for n in names]
    p99 = [(scen[n].get("p99_e2e_ms") or 0) / 1000 for n in names]
    b.barh(names, e2e, color="#4c72b0", label="p50")
    b.scatter(p99, names, color="#c44e52", marker="|", s=120, label="p99", zorder=3)
    b.set_xlabel("end-to-end latency (s)")
    b.set_title("latency per request")
    b.legend(fontsize=7, loc="lower right")
    b.set_yticklabels([])
    fig.suptitle(f"Cost per steering scenario at concurrency "
                 f"{result['workloads']['headline_concurrency']} — {result['machine']}, "
                 f"{result['date'][:10]} (preset {result['preset']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def load_plots(result: dict, out_dir: Path, stem: str) -> dict[str, Path]:
    made = {}
    for key, fn in (("cost", cost), ("latency", latency_throughput), ("goodput", goodput)):
        path = out_dir / f"{stem}-{key}.png"
        try:
            if fn(result, path):
                made[key] = path
        except Exception as exc:  # a plot must not lose the run's numbers
            print(f"plot {key} failed: {exc}")
    return made


def quality_plot(result: dict, path: Path) -> bool:
    rows = result.get("table") or []
    if not rows:
        return False
    plt = _plt()
    metrics = [("mention_rate", "mention"), ("near_miss_rate", "near miss"),
               ("prefer_rate", "prefer named"), ("degenerate_rate", "degenerate")]
    groups = [(r["file"], r["model"]) for r in rows]
    groups = list(dict.fromkeys(groups))
    strategies = list(dict.fromkeys(r["row"] for r in rows))
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 2.6 * len(groups) + 0.8),
                             squeeze=False)
    width = 0.8 / len(metrics)
    palette = ["#c44e52", "#dd8452", "#55a868", "#8172b2"]
    for ax, (file, model) in zip(axes[:, 0], groups, strict=True):
        sub = {r["row"]: r for r in rows if r["file"] == file and r["model"] == model}
        for j, (m, label) in enumerate(metrics):
            xs = [i + (j - 1.5) * width for i in range(len(strategies))]
            ys = [(sub.get(s) or {}).get(m) or 0 for s in strategies]
            ax.bar(xs, ys, width, label=label, color=palette[j])
        for i, s in enumerate(strategies):
            r = sub.get(s)
            if r:
                ax.text(i, 1.02, f"p50 {r['latency_p50_s']:.1f}s", ha="center", fontsize=7)
        ax.set_xticks(range(len(strategies)), strategies)
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("share of answers")
        ax.set_title(f"{file} · {model}", fontsize=9)
    # one legend below the panels, clear of the bars and latency labels
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=len(metrics), loc="lower center",
               frameon=False)
    fig.suptitle(f"Steering quality per strategy — {result['machine']}, {result['date'][:10]}",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return True
