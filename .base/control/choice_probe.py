"""The rollback check's reading of the model's choice, in one compiled call per step.

:func:`argmax_if_in_compiled` answers what :func:`.steering_batch.argmax_if_in` answers —
for each checked row, its argmax when the argmax may lie in the row's token set, the row
left out when a probe proves it lies outside — with the same decisions, exactly: the
maximum over the row's set, then the probes over the row's first
:data:`.steering_batch.CHOICE_PROBES` tokens, a row left out only where a probe without
NaN holds a value above that maximum, and numpy's full argmax for the rest. It does the
per-row work in one numba-compiled loop (numba comes with vLLM) instead of a dozen numpy
calls and a Python pass over the rows, each paying for cold caches after the forward
pass.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LEFT_OUT = -1  # the row's argmax lies outside its set
UNDECIDED = -2  # no probe decided: the row gets its full argmax
_WIDTHS: dict[tuple[int, ...], np.ndarray] = {}  # probe widths as arrays, per tuple
_WARM = False  # the kernel is compiled (warm_up)


def argmax_if_in_compiled(x: np.ndarray, rows: list[int], sets: list[np.ndarray | None],
                          probes: tuple[int, ...],
                          more: tuple[np.ndarray, np.ndarray] | None = None
                          ) -> dict[int, int]:
    """{row: its argmax} for the ``rows`` of ``x`` [B, V] (float32 or float64) whose
    argmax (the first maximum, NaN counting as the maximum) may lie in the row's token set
    (int ids in [0, V); None: any token); a row left out has its argmax outside its set.
    ``probes``: the probe widths, ascending (a set larger than the first is not probed).
    ``more``: the sets of the rows after ``sets``' as arrays (each set's size, the sets
    concatenated)."""
    sizes = np.fromiter((-1 if s is None else s.size for s in sets), dtype=np.int64,
                        count=len(sets))
    present = [s for s in sets if s is not None and s.size]
    if more is not None:
        sizes = np.concatenate([sizes, more[0]])
        present.append(more[1])
    pool = (np.concatenate(present).astype(np.int64, copy=False) if present
            else np.zeros(0, dtype=np.int64))
    verdict = np.empty(len(rows), dtype=np.int64)
    widths = _WIDTHS.get(probes)
    if widths is None:
        widths = _WIDTHS[probes] = np.asarray(probes, dtype=np.int64)
    _probe_rows(x, np.asarray(rows, dtype=np.int64), pool, sizes, widths, verdict)
    return {i: int(x[i].argmax()) for i, d in zip(rows, verdict.tolist(), strict=True)
            if d == UNDECIDED}


def warm_up() -> None:
    """Compile for float32 C-contiguous logits (the CPU engine's) now, not in a step;
    once per process."""
    global _WARM
    if _WARM:
        return
    _WARM = True
    argmax_if_in_compiled(np.zeros((1, 4), dtype=np.float32), [0], [np.array([1])], (2, 3))
    one = np.ones(1, dtype=np.int64)
    in_sets(one, one, one)


@njit(cache=True)
def in_sets(choices, sizes, sets):
    """The positions q (ascending) whose ``choices[q]`` lies in its set: the q-th of the
    ``sizes`` consecutive runs of ``sets`` (all int64): the rollback check of a GPU's
    pooled rows, whose choices torch's argmax gave."""
    out = np.empty(sizes.size, dtype=np.int64)
    n = 0
    at = 0
    for q in range(sizes.size):
        c = choices[q]
        end = at + sizes[q]
        for m in range(at, end):
            if sets[m] == c:
                out[n] = q
                n += 1
                break
        at = end
    return out[:n]


@njit(cache=True)
def _probe_rows(x, rows, pool, sizes, probes, verdict):
    """Per checked row k (row ``rows[k]``, its set the next ``sizes[k]`` ids of ``pool``;
    -1: any token): ``verdict[k]`` = LEFT_OUT or UNDECIDED."""
    v = x.shape[1]
    at = 0
    for k in range(rows.size):
        i = rows[k]
        n = sizes[k]
        if n == 0:  # an empty set holds no argmax
            verdict[k] = LEFT_OUT
            continue
        if n < 0 or n > probes[0]:  # any token, or a set too large to be worth probing
            verdict[k] = UNDECIDED
            if n > 0:
                at += n
            continue
        best = -math.inf
        nan = False
        for q in range(at, at + n):
            value = x[i, pool[q]]
            if math.isnan(value):
                nan = True
            elif value > best:
                best = value
        at += n
        verdict[k] = UNDECIDED
        if nan:  # NaN is the set's maximum: no token is above it
            continue
        width = 0
        for p in range(probes.size):
            if width >= v:
                break
            width = min(probes[p], v)
            top = -math.inf
            for t in range(width):
                value = x[i, t]
                if math.isnan(value):  # NaN is the probe's maximum: not above the set's
                    top = math.nan
                    break
                if value > top:
                    top = value
            if top > best:
                verdict[k] = LEFT_OUT
                break
