"""Diagnosis figures for the lanes (docs/steering.md, "Lanes"), on ``step_phases``'
workload (SmolLM2's vocabulary, every row steered with the dev set's 30 entities, greedy,
rollback on, rows writing real text). Not a benchmark: single runs, no baseline.

* ``misses``: after ``--warmup`` steps at ``--batch`` rows, per step over ``--steps`` more:
  the rows on the fast path, the transitions computed (not looked up), and why the others
  missed (no lane, off their lane, not exactly one new token, not a plain step, no cached
  transition, no plan), read from the lanes' arrays before each ``advance``.
* ``admission``: the mean time of ``SteeringBatch.add`` for the workload's spec (parsing,
  the compile cache's lookup, the row), over ``--calls`` calls after 200 warm ones.
* ``eager-fill``: how long filling the spec's whole avoid transition table takes from the
  Python automaton, and both automata's tables by ``SpecArrays``' compiled pass (what
  ``transition_arrays`` does, since c2075f8).

    python -m greyelephant.benchmarks.lane_probe misses --batch 256 --warmup 300 --steps 100
    python -m greyelephant.benchmarks.lane_probe admission
    python -m greyelephant.benchmarks.lane_probe eager-fill
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import numpy as np

from greyelephant.benchmarks.step_phases import STOP, make_loop
from greyelephant.benchmarks.steering_step import steering_args
from greyelephant.control import step_states as ss
from greyelephant.control.ban_automaton import CompiledSteering
from greyelephant.control.steering_batch import RequestInfo
from greyelephant.control.transition_arrays import SpecArrays


def _why(lanes: ss.Lanes, at: np.ndarray, lengths: np.ndarray, last: np.ndarray,
         counts: collections.Counter) -> None:
    """Count each row's case as ``Lanes.advance`` will see it (before the call)."""
    cols = lanes._lanes
    table = lanes._table
    known = dict(table[table[:, 0] != -1].tolist())
    for k in range(at.size):
        lane = at[k]
        if lane < 0:
            counts["no lane"] += 1
            continue
        s = cols[lane, ss.SID]
        if s < 0:
            counts["off its lane"] += 1
            continue
        c = cols[lane, ss.CONSUMED] + 1
        if lengths[k] != c or last[k] < 0:
            counts["not exactly one new token"] += 1
        elif c < cols[lane, ss.FROM] or c >= cols[lane, ss.BELOW] or c < cols[lane, ss.MIN_STOP]:
            counts["not a plain step"] += 1
        elif (to := known.get((int(s) << ss.TOKEN_BITS) | int(last[k]))) is None:
            counts["no cached transition"] += 1
        elif not lanes._ready[to]:
            counts["cached, no plan yet"] += 1
        else:
            counts["cached transition and plan"] += 1


def misses(batch: int, warmup: int, steps: int) -> None:
    loop = make_loop(batch, lanes=True)
    lanes = loop.batch._lanes
    for _ in range(warmup):
        loop.step(count=False)
    counts: collections.Counter = collections.Counter()
    advance = ss.Lanes.advance

    def counting(self, at, lengths, last):
        _why(self, at, lengths, last, counts)
        return advance(self, at, lengths, last)

    fast0, computed0 = loop.batch.fast_rows, lanes.computed
    ss.Lanes.advance = counting
    try:
        for _ in range(steps):
            loop.step()
    finally:
        ss.Lanes.advance = advance
    print(f"B={batch}, {steps} steps after {warmup}; per step:")
    print(f"  fast path {(loop.batch.fast_rows - fast0) / steps:.1f} rows, of them "
          f"{(lanes.computed - computed0) / steps:.1f} on a computed transition")
    for why, n in sorted(counts.items()):
        print(f"  {why}: {n / steps:.2f}")
    print(f"  (step states interned {lanes.states}, transitions cached {lanes._used})")


def admission(calls: int) -> None:
    loop = make_loop(16)
    batch, args = loop.batch, steering_args()
    info = RequestInfo(stop_ids=STOP, temperature=0.0, max_tokens=1 << 20)
    for i in range(200):
        batch.add(i % 16, args, [], info)
    t0 = time.perf_counter()
    for i in range(calls):
        batch.add(i % 16, args, [], info)
    print(f"SteeringBatch.add: {(time.perf_counter() - t0) / calls * 1e6:.1f} µs a call "
          f"(mean of {calls})")


def eager_fill() -> None:
    """The benchmark's 30-entity spec's whole avoid table, each way on a freshly compiled
    copy of the spec (its automaton's memos cold, as a new request's are): from the
    Python automaton state by state (what ``transition_arrays`` could not afford, and
    filled lazily up to c2075f8), and ``SpecArrays``' compiled pass over both automata
    (what it does since), the median of 20 fresh copies."""
    loop = make_loop(1)
    spec = next(iter(loop.batch.rows.values())).compiled

    def fresh() -> CompiledSteering:
        return CompiledSteering(spec.index, spec.groups, spec.prefer.patterns,
                                spec.prefer_bias)

    ac = fresh().avoid
    chars = {ch for key in ac.keys for ch in key}
    t0 = time.perf_counter()
    for q in range(len(ac)):
        for ch in chars:
            ac.step(q, ch)
    print(f"avoid automaton: {len(ac)} states x {len(chars)} characters filled in "
          f"{(time.perf_counter() - t0) * 1e3:.1f} ms from the Python automaton")
    SpecArrays(fresh())  # (compiles the pass, or loads it from numba's cache)
    took = []
    for _ in range(20):
        copy = fresh()
        t0 = time.perf_counter()
        SpecArrays(copy)
        took.append(time.perf_counter() - t0)
    print(f"SpecArrays (both automata's tables filled whole, compiled): "
          f"{statistics.median(took) * 1e6:.1f} µs (median of 20 fresh copies)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["misses", "admission", "eager-fill"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args(argv)
    if args.what == "misses":
        misses(args.batch, args.warmup, args.steps)
    elif args.what == "admission":
        admission(args.calls)
    else:
        eager_fill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
