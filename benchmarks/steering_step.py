"""Per-step cost of the steering logits processor's work, without an engine.

What one decode step costs the processor (``SteeringBatch.apply``: advance each steered
row over its new token, pick its mask, bias and extra bans, apply them to the logits) at
batch sizes B in {1, 16, 64, 256}, with 0, 8 and all rows steered, each steered row
avoiding the dev set's 30 entities (aliases included) with rollback on, greedy. Two
vocabularies: SmolLM2's real one (49,152 tokens, from ``benchmarks/data/
smollm2_vocab.json.gz``: no tokenizer package needed) and a synthetic 152K one (SmolLM2's
tokens plus random byte strings, as a Qwen-sized vocabulary). Two mask paths, in the same
run:

* ``table`` — the default: masks live in a device-resident table (``control/
  mask_table.py``), a step sends one slot index per row, the kernels gather on the device;
* ``rows`` — every steered row's whole mask copied from the host each step (the path
  before the table).

Rows write real text under the masks (``step_loop.DecodeLoop``: the text's next token
unless it is banned, else the row's best allowed token; a row given its rollback signal
restarts as a new request). Logits are random, on the device, copied each step into one
buffer the loop allocated once. Timing: warm-up steps, then
the median of the timed steps (CUDA synchronised). Each step is also split into phases
(:class:`PhaseTimer`): the host's plan (``controls``), the rollback check, and the rest
(sending the plan and applying it), so a GPU run shows where its time goes.

    python -m greyelephant.benchmarks.steering_step --device cpu
    python benchmarks/steering_step.py --device cuda --out $OUT      # on a GPU machine

On a GPU machine without pydantic (the device image here has torch, Triton, numpy), carry
its wheels (``.whl/``; ``benchmarks/steering_gpu.sh`` says how) and install them into a
scratch folder on ``PYTHONPATH`` (``pip install --target "$SITE"``).
Writes ``steering_step-<device>.json`` and ``.md`` to --out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _ensure_package() -> None:
    """Run from a checkout that is not installed (a GPU machine with the repo copied):
    map the repo's folders into a ``greyelephant`` package of symlinks, as pyproject's
    package-dir does."""
    try:
        import greyelephant.control.steering_batch as loaded
        if Path(loaded.__file__).resolve().parent == (REPO / "control").resolve():
            return  # this checkout's code (installed, or mapped already)
    except ImportError:
        pass
    import tempfile

    root = Path(tempfile.mkdtemp()) / "greyelephant"
    root.mkdir()
    for f in (REPO / "greyelephant").glob("*.py"):
        (root / f.name).symlink_to(f)
    for folder in ("control", "kernels", "benchmarks"):
        (root / folder).symlink_to(REPO / folder)
    sys.path.insert(0, str(root.parent))
    for name in [m for m in sys.modules if m == "greyelephant" or m.startswith("greyelephant.")]:
        del sys.modules[name]


_ensure_package()

from greyelephant.benchmarks.step_loop import DecodeLoop  # noqa: E402
from greyelephant.control.spec import parse_steering  # noqa: E402
from greyelephant.control.steering_batch import RequestInfo, SteeringBatch  # noqa: E402
from greyelephant.control.vocab_index import VocabIndex  # noqa: E402

DATA = HERE / "data"
BATCHES = (1, 16, 64, 256)
SIGNAL = 16
TEXT = ("The most famous cola is Coca-Cola, and many people drink Coke with McDonald's fries. "
        "Runners buy Nike shoes, developers learn Python, and tourists climb the Eiffel Tower "
        "before they visit the Louvre, the Statue of Liberty or Disneyland. Magnus Carlsen and "
        "Lionel Messi are famous; so are The Beatles, Albert Einstein and the Mona Lisa. ")


def smollm2_vocab() -> VocabIndex:
    doc = json.loads(gzip.open(DATA / "smollm2_vocab.json.gz", "rt").read())
    table = [None if t is None else bytes.fromhex(t) for t in doc["tokens"]]
    return VocabIndex.from_token_bytes(table, key="smollm2", kind=doc["kind"])


def synthetic_vocab(size: int = 152_064, seed: int = 0) -> VocabIndex:
    """SmolLM2's tokens, then random byte strings (letters, spaces, punctuation, UTF-8)
    up to ``size`` tokens."""
    base = json.loads(gzip.open(DATA / "smollm2_vocab.json.gz", "rt").read())["tokens"]
    table = [None if t is None else bytes.fromhex(t) for t in base]
    rng = np.random.default_rng(seed)
    alphabet = list(" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,-'éüçñ")
    seen = set(table)
    while len(table) < size:
        n = int(rng.integers(1, 9))
        s = ("" if rng.random() < 0.6 else " ") + "".join(rng.choice(alphabet, n))
        b = s.encode()
        if b not in seen:
            seen.add(b)
            table.append(b)
    return VocabIndex.from_token_bytes(table, key=f"synthetic{size}", kind="bytelevel")


def corpus() -> str:
    """Long, non-repeating text (the project's docs) with the entity-heavy paragraph every
    ~2,000 characters: rows meet avoided forms, and the loop guard sees text that does not
    loop."""
    docs = "".join(p.read_text() for p in sorted((REPO / "docs").glob("*.md")))
    parts = [docs[k:k + 2000] for k in range(0, len(docs), 2000)]
    return TEXT.join(parts)


def encode(index: VocabIndex, text: str) -> list[int]:
    """Greedy longest-match tokenization over the vocabulary's byte strings."""
    by_bytes = {}
    for tid, b in enumerate(index.token_bytes):
        if b and b not in by_bytes:
            by_bytes[b] = tid
    data, out, i = text.encode(), [], 0
    longest = max(len(b) for b in by_bytes)
    while i < len(data):
        for k in range(min(longest, len(data) - i), 0, -1):
            tid = by_bytes.get(data[i:i + k])
            if tid is not None:
                out.append(tid)
                i += k
                break
        else:
            i += 1
    return out


def steering_args() -> dict:
    cases = [json.loads(line) for line in (DATA / "pink_elephant_dev.jsonl").read_text()
             .splitlines() if line.strip()]
    spec = parse_steering({"avoid": [{"entity": c["avoid"], "aliases": c["avoid_aliases"]}
                                     for c in cases], "prefer": ["grey elephant"]})
    return spec.engine_steering(signal=SIGNAL).to_extra_args()


class PhaseTimer:
    """Times two phases of ``SteeringBatch.apply`` inside the timed steps, by wrapping the
    batch's own methods: ``controls`` (the host builds the step's plan: advance, masks,
    biases, bans) and ``_check`` (the rollback check; on a GPU it reads the few argmaxes
    back, a synchronisation) and ``_send`` (sending the plan's arrays: one host-to-device
    copy on a GPU, nothing on the CPU). The rest of a step (the kernels, on the CPU the
    numpy writes) is the step's time minus the three. A wrapper costs well under a
    microsecond per call, next to steps of tens of microseconds and more."""

    PHASES = ("controls", "_check", "_send")
    OLDER = {"_send": "_to_device"}  # the phase's method in older code (before/after runs)

    def __init__(self, batch):
        self.seconds = {name: 0.0 for name in self.PHASES}
        for name in self.PHASES:
            method = name if hasattr(batch, name) else self.OLDER[name]
            setattr(batch, method, self._timed(name, getattr(batch, method)))

    def _timed(self, name, method):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
        return timed

    def take(self) -> dict[str, float]:
        """The seconds each phase took since the last call."""
        out, self.seconds = self.seconds, {name: 0.0 for name in self.PHASES}
        return out


def measure(index: VocabIndex, tokens: list[int], device: str, b: int, steered: int,
            table: bool, steps: int, warmup: int, compiled: bool | None = None) -> dict:
    batch = SteeringBatch(index, device, table=table, compiled=compiled)
    phases = PhaseTimer(batch)
    args = steering_args()
    info = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=1 << 20)
    outs: list[list[int]] = [[] for _ in range(b)]

    def restart(i: int) -> list[int]:
        out: list[int] = []
        batch.add(i, args if i < steered else None, out, info if i < steered else None)
        return out

    for i in range(b):
        outs[i] = restart(i)
    gen = torch.Generator(device="cpu").manual_seed(0)
    logits = [torch.randn(b, index.vocab_size, generator=gen).to(device) for _ in range(4)]
    loop = DecodeLoop(batch, outs, tokens, logits, ends=info.stop_ids, restart=restart)
    for _ in range(warmup):
        loop.step(count=False)
    times, plan, check, send = [], [], [], []
    for _ in range(steps):
        phases.take()
        times.append(loop.step())
        split = phases.take()
        plan.append(split["controls"])
        check.append(split["_check"])
        send.append(split["_send"])
    rest = [t - p - c - s for t, p, c, s in zip(times, plan, check, send, strict=True)]
    table_obj = batch._table
    ms = lambda xs: round(statistics.median(xs) * 1e3, 4)  # noqa: E731
    return {"B": b, "steered": steered, "path": "table" if table else "rows",
            "compiled": batch.compiled, "median_ms": ms(times),
            "p90_ms": round(sorted(times)[int(0.9 * len(times))] * 1e3, 4),
            "phases_median_ms": {"controls": ms(plan), "check": ms(check), "send": ms(send),
                                 "rest": ms(rest)},
            "diverted": int(loop.diverted), "restarts": int(loop.restarts),
            "table_slots": table_obj.table.shape[0] if table_obj is not None else None,
            "table_uploads": table_obj.uploads if table_obj is not None else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vocab", choices=["smollm2", "synthetic152k", "both"], default="both")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for the CPU path (default: torch's)")
    ap.add_argument("--compiled", choices=["default", "on", "off"], default="default",
                    help="SteeringBatch's compiled loops: on, off, or its default (on when "
                         "numba is importable)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    compiled = {"default": None, "on": True, "off": False}[args.compiled]
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("greyelephant.control").setLevel(logging.ERROR)
    vocabs = {"smollm2": smollm2_vocab, "synthetic152k": synthetic_vocab}
    names = list(vocabs) if args.vocab == "both" else [args.vocab]
    rows = []
    for name in names:
        index = vocabs[name]()
        tokens = encode(index, corpus())
        for b in (int(x) for x in args.batches.split(",")):
            for steered in sorted({0, min(8, b), b}):
                for table in (True, False):
                    if steered == 0 and not table:
                        continue  # nothing steered: both paths return at once
                    r = {"vocab": name, "V": index.vocab_size,
                         **measure(index, tokens, args.device, b, steered, table, args.steps,
                                   args.warmup, compiled)}
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "device": args.device + (f" ({torch.cuda.get_device_name()})"
                                     if args.device == "cuda" else ""),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "compiled loops": rows[0]["compiled"] if rows else None,
            "command": "python benchmarks/steering_step.py " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "workload": "30 avoided entities per steered row (the dev set's, aliases "
                        "included), rollback on, greedy; rows advance over real text; "
                        f"{args.warmup} warm-up + {args.steps} timed steps, median"}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"steering_step-{args.device}" + (
        "" if args.compiled == "default" else f"-compiled-{args.compiled}")
    (args.out / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [f"# Steering per-step cost ({args.device})", "",
             *(f"- {k}: {v}" for k, v in meta.items()), "",
             "Phases (table path, medians over the steps): `controls` builds the plan on the "
             "host, `check` is the rollback check, `send` copies the plan's arrays to the "
             "device, `rest` applies it (the kernels; on the CPU, numpy writes).", "",
             "| vocab | B | steered | table ms | rows ms | rows / table "
             "| controls ms | check ms | send ms | rest ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by = {(r["vocab"], r["B"], r["steered"], r["path"]): r for r in rows}
    for (vocab, b, steered, path), r in by.items():
        if path != "table":
            continue
        other = by.get((vocab, b, steered, "rows"))
        ratio = f"{other['median_ms'] / r['median_ms']:.1f}×" if other and r["median_ms"] else ""
        ph = r["phases_median_ms"]
        lines.append(f"| {vocab} | {b} | {steered} | {r['median_ms']:.3f} "
                     f"| {other['median_ms'] if other else '–'} | {ratio} "
                     f"| {ph['controls']:.3f} | {ph['check']:.3f} | {ph['send']:.3f} "
                     f"| {ph['rest']:.3f} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
