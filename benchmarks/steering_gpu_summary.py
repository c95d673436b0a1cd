"""Summarise a ``steering_gpu.sh`` log: before and after, round by round.

``steering_gpu.sh`` runs ``steering_step`` on the code before (``.base/``) and after (the
checkout), alternating, twice each, and logs every result row. This prints, for each
vocabulary, batch size and number of steered rows (the default, table path), the median
step of each run, the after/before ratio of each round, and for all rows steered the
phases of each run, as markdown.

    python benchmarks/steering_gpu_summary.py benchmarks/results/steering_gpu-h200/run.log
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def runs(log: str) -> dict[tuple[str, str], dict[tuple, dict]]:
    """{(before|after, round): {(vocab, B, steered): result row}} (table path rows)."""
    parts = re.split(r"== (before|after), round (\d+)", log)
    out = {}
    for k in range(1, len(parts) - 2, 3):
        rows = [json.loads(line) for line in parts[k + 2].splitlines()
                if line.startswith('{"vocab"')]
        out[(parts[k], parts[k + 1])] = {(r["vocab"], r["B"], r["steered"]): r
                                          for r in rows if r["path"] == "table"}
    return out


def summary(log: str) -> str:
    res = runs(log)
    rounds = sorted({r for _, r in res}, key=int)
    lines = ["| vocab | B | steered | " + " | ".join(
        f"before r{r} ms | after r{r} ms | after/before r{r}" for r in rounds) + " |",
        "|---|---|---|" + "---|---|---|" * len(rounds)]
    keys = list(res[("after", rounds[0])])
    for key in keys:
        cells = []
        for r in rounds:
            b = res[("before", r)][key]["median_ms"]
            a = res[("after", r)][key]["median_ms"]
            cells += [f"{b:.3f}", f"{a:.3f}", f"{a / b:.2f}"]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    lines += ["", "All rows steered, phases (ms: controls / check / send / rest):", "",
              "| vocab | B | run | controls | check | send | rest | step |",
              "|---|---|---|---|---|---|---|---|"]
    for key in keys:
        if key[2] != key[1] or key[1] < 64:
            continue
        for r in rounds:
            for who in ("before", "after"):
                row = res[(who, r)][key]
                ph = row["phases_median_ms"]
                lines.append(f"| {key[0]} | {key[1]} | {who} r{r} | {ph['controls']:.3f} | "
                             f"{ph['check']:.3f} | {ph['send']:.3f} | {ph['rest']:.3f} | "
                             f"{row['median_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__)
        return 2
    print(summary(Path(args[0]).read_text()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
