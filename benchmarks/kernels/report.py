"""Report writers for gpu_check: markdown tables and charts (PNG through matplotlib when
it is installed, otherwise a hand-written SVG: no dependency needed)."""

from __future__ import annotations

import math
from html import escape

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{nd}f}"
    return str(v)


def md_table(rows, cols):
    """cols: list of (header, key, decimals)."""
    out = ["| " + " | ".join(h for h, _, _ in cols) + " |",
           "|" + "|".join("---:" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(k), nd) for _, k, nd in cols) + " |")
    return "\n".join(out)


def svg_chart(title, labels, series, ylabel="µs (log scale)"):
    """Grouped bars on a log y axis. series: {name: [value or None per label]}."""
    vals = [v for s in series.values() for v in s if v and v > 0]
    if not vals:
        return "<svg xmlns='http://www.w3.org/2000/svg'/>"
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    w, h, ml, mr, mt, mb = max(600, 60 * len(labels) + 120), 420, 70, 20, 40, 110
    pw, ph = w - ml - mr, h - mt - mb

    def y(v):
        return mt + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h + 20 * len(series)}'"
             " font-family='sans-serif' font-size='11'>",
             f"<text x='{w / 2}' y='20' text-anchor='middle' font-size='14'>{escape(title)}</text>",
             f"<text x='14' y='{mt + ph / 2}' transform='rotate(-90 14 {mt + ph / 2})' "
             f"text-anchor='middle'>{escape(ylabel)}</text>"]
    d = lo
    while d <= hi * 1.0001:
        parts.append(f"<line x1='{ml}' x2='{ml + pw}' y1='{y(d):.1f}' y2='{y(d):.1f}' "
                     "stroke='#ddd'/>")
        parts.append(f"<text x='{ml - 5}' y='{y(d) + 4:.1f}' text-anchor='end'>{d:g}</text>")
        d *= 10
    gw = pw / max(len(labels), 1)
    bw = gw * 0.8 / max(len(series), 1)
    for si, (name, s) in enumerate(series.items()):
        for li, v in enumerate(s):
            if not v or v <= 0:
                continue
            x0 = ml + li * gw + gw * 0.1 + si * bw
            parts.append(f"<rect x='{x0:.1f}' y='{y(v):.1f}' width='{bw:.1f}' "
                         f"height='{mt + ph - y(v):.1f}' fill='{COLORS[si % len(COLORS)]}'>"
                         f"<title>{escape(name)} {escape(labels[li])}: {v:.1f}</title></rect>")
    for li, lab in enumerate(labels):
        x0 = ml + li * gw + gw / 2
        parts.append(f"<text x='{x0:.1f}' y='{mt + ph + 12}' text-anchor='end' "
                     f"transform='rotate(-45 {x0:.1f} {mt + ph + 12})'>{escape(lab)}</text>")
    for si, name in enumerate(series):
        yy = h + 20 * si - 5
        parts.append(f"<rect x='{ml}' y='{yy - 9}' width='12' height='12' "
                     f"fill='{COLORS[si % len(COLORS)]}'/>")
        parts.append(f"<text x='{ml + 18}' y='{yy + 1}'>{escape(name)}</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def png_chart(path, title, labels, series, ylabel="µs (log scale)"):
    """Same chart through matplotlib; returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(labels) + 2), 4.5))
    n = max(len(series), 1)
    for si, (name, s) in enumerate(series.items()):
        xs = [i + (si - (n - 1) / 2) * 0.8 / n for i in range(len(labels))]
        ax.bar(xs, [v or 0 for v in s], width=0.8 / n, label=name, color=COLORS[si % len(COLORS)])
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
