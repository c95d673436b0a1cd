"""Where results go, the one history of every run, and the comparison with the previous run.

Layout::

    benchmarks/results/
      history.jsonl                  one line per run: family, preset, date, machine, and each
                                     scenario's headline numbers (the one history)
      <date>-<machine>/              the latest full report of each family and preset
        load-<preset>.json / .md / -*.png
        quality-<preset>.json / .md / -*.png

A new run's full report replaces the same family and preset's report in older folders
(:func:`prune`); its numbers stay in history.jsonl, where the next run finds them
(:func:`previous_run`, :func:`compare`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
HISTORY = "history.jsonl"
#: headline metrics compared with the previous run; True: higher is better
COMPARED = {"output_throughput": True, "goodput_rps": True, "p50_ttft_ms": False,
            "p50_tpot_ms": False, "p99_e2e_ms": False, "ratio": True, "mention_rate": False,
            "prefer_rate": True, "latency_p50_s": False}


def machine_slug(node: str | None = None, cpus: int | None = None) -> str:
    node = node if node is not None else platform.node()
    cpus = cpus if cpus is not None else os.cpu_count()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", node).strip("-").lower() or "machine"
    return f"{slug}-{cpus}cpu"


def run_dir(root: Path, when: dt.datetime, machine: str) -> Path:
    return Path(root) / f"{when:%Y-%m-%d}-{machine}"


def read_history(root: Path) -> list[dict]:
    path = Path(root) / HISTORY
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def previous_run(history: list[dict], family: str, preset: str, machine: str | None = None,
                 before: str | None = None) -> dict | None:
    """The latest history entry of the same family and preset (same machine kind when
    given), older than ``before`` (an ISO date) when given."""
    match = [h for h in history if h.get("family") == family and h.get("preset") == preset
             and (machine is None or h.get("machine_slug") == machine)
             and (before is None or h.get("date", "") < before)]
    return max(match, key=lambda h: h.get("date", "")) if match else None


def compare(current: dict[str, dict], previous: dict | None) -> dict[str, dict]:
    """Per scenario and compared metric: previous value, current value, change in percent
    and whether it got better. ``current``/``previous['scenarios']``: scenario -> metrics."""
    if not previous:
        return {}
    prev = previous.get("scenarios", {})
    out: dict[str, dict] = {}
    for name, now in current.items():
        before = prev.get(name)
        if not before:
            continue
        rows = {}
        for metric, higher_better in COMPARED.items():
            a, b = now.get(metric), before.get(metric)
            if a is None or b is None:
                continue
            change = None if b == 0 else round(100.0 * (a - b) / abs(b), 1)
            better = None if change is None or change == 0 else (change > 0) == higher_better
            rows[metric] = {"previous": b, "current": a, "change_pct": change, "better": better}
        if rows:
            out[name] = rows
    return out


def append_history(root: Path, entry: dict) -> None:
    """Adds the run to history.jsonl, replacing an entry of the same family, preset and date
    (a rerun the same second is a duplicate, not history)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    history = [h for h in read_history(root)
               if (h.get("family"), h.get("preset"), h.get("date"))
               != (entry["family"], entry["preset"], entry["date"])]
    history.append(entry)
    history.sort(key=lambda h: h.get("date", ""))
    (root / HISTORY).write_text("".join(json.dumps(h, sort_keys=True) + "\n" for h in history))


def prune(root: Path, family: str, preset: str, keep: Path) -> list[Path]:
    """Removes ``<family>-<preset>.*`` / ``<family>-<preset>-*.png`` from every dated folder
    but ``keep`` (their numbers are in history.jsonl), and folders left empty."""
    removed: list[Path] = []
    root, keep = Path(root), Path(keep)
    pattern = re.compile(rf"^{re.escape(family)}-{re.escape(preset)}(\.|-).+")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.resolve() == keep.resolve() or not re.match(r"^\d{4}-\d{2}-\d{2}-", folder.name):
            continue
        for f in sorted(folder.iterdir()):
            if f.is_file() and pattern.match(f.name):
                f.unlink()
                removed.append(f)
        if not any(folder.iterdir()):
            shutil.rmtree(folder)
    return removed
