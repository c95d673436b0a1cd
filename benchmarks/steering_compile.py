"""Steering compile / per-step microbenchmark (CPU, no engine).

Measures, on the embedded model's tokenizer (49,152-token byte-level BPE):

* the per-tokenizer vocabulary index build (once per process, not part of a compile);
* compiling a spec of 1,000 distinct folded surface forms, cold (fresh automaton) and
  warm (compile cache hit), plus the first (start-state) mask, which is computed lazily;
* per decode step and row: state advance + banned-mask lookup + bias lookup, on a first
  pass (states computed on demand) and a second pass (all cached); and assembling the
  [B, W] int32 mask batch for B = 32 rows.

    python benchmarks/steering_compile.py [--model DIR] [--forms 1000]

Prints a JSON report and writes benchmarks/results/steering_compile.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from greyelephant.benchmarks.datasets import dev_set

RESULTS = Path(__file__).resolve().parent / "results"
DEV = dev_set()


def _forms(vocab_index, n: int, seed: int = 0) -> list[str]:
    """n distinct folded surface forms: the dev set's entities first, then entity-like
    names of 1-3 vocabulary words, each expanded by the surface-form rules."""
    from greyelephant.control.surface_forms import expand_entity, fold_patterns

    names: list[tuple[str, list[str]]] = []
    if DEV.exists():
        for line in DEV.read_text().splitlines():
            case = json.loads(line)
            names.append((case["avoid"], case.get("avoid_aliases", [])))
    words = sorted({t.strip() for t in vocab_index.texts
                    if t.startswith(" ") and t[1:].isalpha() and len(t) >= 5})
    rng = np.random.default_rng(seed)
    pats: set[str] = set()
    i = 0
    while len(pats) < n:
        if i < len(names):
            name, aliases = names[i]
        else:
            k = int(rng.integers(1, 4))
            name = " ".join(words[int(j)].capitalize() for j in rng.integers(0, len(words), k))
            aliases = []
        pats.update(fold_patterns(expand_entity(name, aliases)))
        i += 1
    return sorted(pats)[:n]


def _text_tokens(tokenizer, forms: list[str]) -> list[int]:
    base = []
    if DEV.exists():
        for line in DEV.read_text().splitlines():
            base.append(json.loads(line)["messages"][-1]["content"])
    base += [f"I would rather not talk about the {f} today." for f in forms[:40:4]]
    base += ["Z\u00fcrich, Beyonc\u00e9 \u2019s caf\u00e9 \u2014 na\u00efve \u00fcber."] * 3
    return tokenizer.encode(" ".join(base))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help="model dir (default: $GREYELEPHANT_MODEL_DIR or the embedded model)")
    ap.add_argument("--forms", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "steering_compile.json"))
    args = ap.parse_args(argv)
    if args.model is None:
        from greyelephant.model_store import default_model_dir

        args.model = default_model_dir()

    from transformers import AutoTokenizer

    from greyelephant.control.ban_automaton import CompiledSteering, SteeringCache
    from greyelephant.control.surface_forms import expand_entity, fold_patterns
    from greyelephant.control.vocab_index import VocabIndex

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model)
    tok_load = time.perf_counter() - t0
    index_times = []
    for _ in range(2):
        t0 = time.perf_counter()
        index = VocabIndex.from_tokenizer(tok)
        index_times.append(time.perf_counter() - t0)

    forms = _forms(index, args.forms)
    prefer = fold_patterns(expand_entity("grey elephant") + expand_entity("Louvre"))

    compile_ms, first_mask_ms, total_ms = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        cs = CompiledSteering(index, forms, prefer, 4.0)
        t1 = time.perf_counter()
        row = cs.new_row()
        cs.banned_words(row)
        cs.bias(row)
        t2 = time.perf_counter()
        compile_ms.append((t1 - t0) * 1e3)
        first_mask_ms.append((t2 - t1) * 1e3)
        total_ms.append((t2 - t0) * 1e3)

    cache = SteeringCache()
    cache.get(index, forms, prefer, 4.0)
    t0 = time.perf_counter()
    for _ in range(100):
        cache.get(index, forms, prefer, 4.0)
    cached_ms = (time.perf_counter() - t0) / 100 * 1e3

    tokens = _text_tokens(tok, forms)
    cs = CompiledSteering(index, forms, prefer, 4.0)
    passes = []
    for _ in range(2):
        row = cs.new_row()
        t0 = time.perf_counter()
        for tid in tokens:
            cs.banned_words(row)
            cs.bias(row)
            cs.advance(row, tid)
        passes.append((time.perf_counter() - t0) / len(tokens) * 1e6)
    states_visited = len(cs._masks) + len(cs._pending_masks)

    # batch assembly: B rows' cached masks into one [B, W] int32 buffer
    b = 32
    rows = []
    for i in range(b):
        r = cs.new_row()
        cs.advance_many(r, tokens[: 5 + i])
        rows.append(r)
    buf = np.zeros((b, index.n_words), dtype=np.int32)
    t0 = time.perf_counter()
    reps = 200
    for _ in range(reps):
        for i, r in enumerate(rows):
            buf[i] = cs.banned_words(r)
    gather_us = (time.perf_counter() - t0) / reps * 1e6

    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "cpus_visible": os.cpu_count(),
            "note": "shared 2-core CPU box; other jobs may have been running",
        },
        "tokenizer": {"path": args.model, "vocab_size": index.vocab_size, "kind": index.kind,
                      "load_s": round(tok_load, 3)},
        "vocab_index_build_ms": {"first": round(index_times[0] * 1e3, 1),
                                 "second": round(index_times[1] * 1e3, 1)},
        "spec": {"avoid_forms": len(forms), "prefer_forms": len(prefer),
                 "automaton_nodes": len(cs.avoid)},
        "compile_cold_ms": {"first": round(compile_ms[0], 2),
                            "median": round(statistics.median(compile_ms), 2)},
        "first_mask_and_bias_ms": {"first": round(first_mask_ms[0], 2),
                                   "median": round(statistics.median(first_mask_ms), 2)},
        "compile_plus_first_mask_ms": {"first": round(total_ms[0], 2),
                                       "median": round(statistics.median(total_ms), 2)},
        "compile_cached_ms": round(cached_ms, 4),
        "per_row_step_us": {"tokens": len(tokens), "first_pass": round(passes[0], 1),
                            "cached": round(passes[1], 2), "states_visited": states_visited},
        "mask_batch_gather_us": {"rows": b, "words": index.n_words, "per_step": round(gather_us, 1)},
    }
    print(json.dumps(report, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
