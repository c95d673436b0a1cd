"""Base model vs adapter on an eval file, with the project's steering eval
(``benchmarks/steering_eval.py``: greedy, one detector, mention / prefer / degenerate rates).

One server serves both (``--adapter NAME=PATH``), so the two models are compared on the same
engine, flags and decoding; each model runs the rows ``none``, ``directive`` and
``directive+logits`` (greedy, ``--max-tokens`` 160). Writes ``<out>/base/`` and
``<out>/<name>/`` (the eval's own summary and per-case outputs; ``<out>/<label>/…`` for
every ``--extra-data``) and ``<out>/eval.json`` with the acceptance check for each file:
with the directive alone, the adapter's mention rate is ≤ 0.4× the base model's (a cut of
≥ 60 %), with prefer_rate not lower and degenerate_rate ≤ 0.05. The card
(``recipe/card.py``) copies the per-case outputs beside the adapter.

Choose between training runs on the dev set only (``--data``); report a held-out file
(``--extra-data heldout=…``) once for the adapter that ships.

    python -m greyelephant.recipe.evaluate --adapter grey-dpo=adapters/grey-dpo \\
        --data ../shared/evals/pink_elephant_dev.jsonl --out runs/recipe/eval
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import provenance, served

ROWS = "none,directive,directive+logits"
TARGET_RELATIVE_CUT = 0.60
MAX_DEGENERATE = 0.05


def acceptance(base: dict[str, Any], adapter: dict[str, Any]) -> dict[str, Any]:
    """The issue's check on the ``directive`` row."""
    b, a = base["directive"], adapter["directive"]
    cut = (1 - a["mention_rate"] / b["mention_rate"]) if b["mention_rate"] else 0.0
    checks = {
        "mention_cut_relative": round(cut, 4),
        "mention_cut_ok": cut >= TARGET_RELATIVE_CUT,
        "prefer_not_lower": a["prefer_rate"] >= b["prefer_rate"],
        "degenerate_ok": a["degenerate_rate"] <= MAX_DEGENERATE,
    }
    checks["passed"] = all(v for k, v in checks.items() if k.endswith(("_ok", "_lower")))
    return checks


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m greyelephant.recipe.evaluate",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True, metavar="NAME=PATH")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--extra-data", action="append", default=[], metavar="NAME=FILE",
                    help="another eval file run on the same server (reported, no acceptance "
                         "check), e.g. held-out entities; repeatable")
    ap.add_argument("--out", type=Path, default=Path("runs/recipe/eval"))
    ap.add_argument("--rows", default=ROWS)
    ap.add_argument("--data-label", default="dev", help="name of --data in the card")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--base-url", default=None,
                    help="a running server that already serves the adapter under NAME")
    ap.add_argument("--serve-arg", action="append", default=[])
    return ap


def _both_models(url: str, data: Path, out: Path, name: str, args) -> dict[str, Any]:
    """The steering eval's rows on ``data`` for the base model and the adapter."""
    from greyelephant.benchmarks import steering_eval

    summaries = {}
    for label, model in (("base", None), (name, name)):
        ap = argparse.ArgumentParser()
        steering_eval.add_arguments(ap)
        eval_argv = ["--data", str(data), "--rows", args.rows, "--base-url", url,
                     "--max-tokens", str(args.max_tokens), "--concurrency",
                     str(args.concurrency), "--out", str(out / label)]
        if model:
            eval_argv += ["--model", model]
        steering_eval.run(ap.parse_args(eval_argv))
        summaries[label] = json.loads((out / label / "summary.json").read_text())
    return summaries


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name, _, path = args.adapter.partition("=")
    meta = provenance(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    extra = [spec.partition("=")[::2] for spec in args.extra_data]
    with served(args.base_url, [f"--adapter={args.adapter}", *args.serve_arg],
                args.out / "server.log") as url:
        summaries = _both_models(url, args.data, args.out, name, args)
        extra_summaries = {label: (data, _both_models(url, Path(data), args.out / label, name,
                                                      args))
                           for label, data in extra}
    base_rows = summaries["base"]["rows"]
    adapter_rows = summaries[name]["rows"]
    result = {**meta, "data": str(args.data), "data_label": args.data_label,
              "dir": str(args.out), "adapter": name, "adapter_path": path,
              "base_model": summaries["base"]["model"], "decoding": "greedy (temperature 0)",
              "max_tokens": args.max_tokens, "base": base_rows, "adapter_rows": adapter_rows,
              "acceptance": acceptance(base_rows, adapter_rows) if "directive" in base_rows
              else None,
              "extra": {label: {"data": data, "dir": str(args.out / label),
                                "base": s["base"]["rows"], "adapter_rows": s[name]["rows"],
                                "acceptance": acceptance(s["base"]["rows"], s[name]["rows"])
                                if "directive" in s["base"]["rows"] else None}
                        for label, (data, s) in extra_summaries.items()}}
    (args.out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"acceptance": result["acceptance"],
                      **{label: e["acceptance"] for label, e in result["extra"].items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
