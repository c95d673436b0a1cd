"""Steered rows' automaton state as array entries, advanced for a whole batch by one
compiled call: the host's per-step plan without Python per row on the common step.

A row's *step state* — its kind (:attr:`.steering_batch._Row.kind`: spec, rollback,
signal, stop tokens) and the :class:`.ban_automaton.RowState` fields its next step
depends on (avoid state, pending bytes, prefer state, ``prefer_done``,
``prefer_trying``, ``prefer_misses``) — is interned as an int32 *step state id* (sid).
A row that may take the fast path holds a *lane*: an index into :class:`Lanes`' arrays,
fixed for the row's life (so it follows the row object across batch positions and runner
V2's slot mappings). Per lane the arrays hold the row's sid and how many output tokens it
has consumed, plus what the row's step kind depends on (the first and last plain step,
``min_tokens``), its loop-guard handle and two flags.

:meth:`Lanes.advance` takes each row's output length and newest token and, in one
numba-compiled loop, moves every row whose step is *plain* (exactly one new token, a
known (sid, token) transition, neither a continuation's first step nor the last one nor
below ``min_tokens``, and a plan already known for the new sid) to its next sid. The
rest (misses) go through the Python path, which stays the single source of truth: every
sid, transition and plan is computed there (by :class:`.ban_automaton.CompiledSteering`)
and only cached here, so the arrays never decide anything the row path would not.

The transitions live in an open-addressing hash of int64 keys ``sid << TOKEN_BITS |
token``; the interned states are bounded (:data:`MAX_STATES`): past it they are
compacted to the states live lanes hold, and the transitions and plans start over. The
transitions are bounded too (:data:`MAX_TRANSITIONS`): past it they start over.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .ban_automaton import RowState

TOKEN_BITS = 21  # token ids below 2**21 have cached transitions (others always miss)
TOKEN_LIMIT = 1 << TOKEN_BITS
MAX_STATES = 1 << 16  # interned step states kept before a compaction
MIN_BITS = 12  # the transition hash's smallest size: 2**12 entries
# transitions kept before they start over (the hash then holds at most 2**21 entries of
# 16 bytes: 32 MiB)
MAX_TRANSITIONS = 1 << 20
NO_SID = -1  # a lane off the fast path (its row object holds its state)
_EMPTY = -1  # an empty hash entry's key
NEVER = np.iinfo(np.int64).max  # plain_below of a row without max_tokens
# columns of Lanes' per-lane array (int64)
SID, CONSUMED, FROM, BELOW, MIN_STOP, GUARD, FLAGS = range(7)
WATCH, GREEDY = 1, 2  # FLAGS bits: a rollback row (watched, anticipated); greedy
# advance's output per row: the new sid << FLAG_BITS | the lane's flags, or NO_SID
FLAG_BITS = 2
_WARM = False


class Lanes:
    """The step states of a batch's lane rows and their cached transitions and plans.
    Not thread-safe (one engine thread)."""

    def __init__(self, max_states: int = MAX_STATES):
        self.max_states = max_states
        self._ids: dict[tuple, int] = {}  # step state -> sid
        self._states: list[tuple] = []  # sid -> step state
        # sid -> its plain step's plan (what the caller stores; None: not known yet)
        self.plans: list[Any] = []
        self._ready = np.zeros(0, dtype=np.uint8)  # sid -> a plan is known
        self.generation = 0  # bumped by every compaction
        self._lanes = np.zeros((0, 7), dtype=np.int64)  # per lane: the columns above
        self._free: list[int] = []
        self._alloc(MIN_BITS)

    @property
    def consumed(self) -> np.ndarray:
        """Per lane: output tokens consumed (a view)."""
        return self._lanes[:, CONSUMED]

    @staticmethod
    def warm_up() -> None:
        """Compile the kernels now (or load them from numba's cache), not in a step."""
        global _WARM
        if _WARM:
            return
        _WARM = True
        lanes = Lanes()
        lane = lanes.open(plain_from=0, plain_below=NEVER, min_stop=0, guard=-1,
                          watch=False, greedy=True)
        s = lanes.put(lane, (1, 0, b"", 0, True, False, 0), 0)
        lanes.learn(s, 5, s)
        lanes._rehash(lanes._bits)
        lanes.set_plan(s, "plan")
        lanes.advance(np.array([lane], dtype=np.int32), np.array([1], dtype=np.int64),
                      np.array([5], dtype=np.int64))

    # -- lanes ---------------------------------------------------------------------------
    def open(self, *, plain_from: int, plain_below: int, min_stop: int, guard: int,
             watch: bool, greedy: bool) -> int:
        """A new lane, off the fast path until :meth:`put`; returns its index."""
        if not self._free:
            self._grow()
        lane = self._free.pop()
        self._lanes[lane] = (NO_SID, 0, plain_from, plain_below, min_stop, guard,
                             (WATCH if watch else 0) | (GREEDY if greedy else 0))
        return lane

    def close(self, lane: int) -> None:
        """The lane's row is gone."""
        lanes = self._lanes
        if lane < lanes.shape[0] and lanes[lane, CONSUMED] >= 0:
            lanes[lane, SID] = NO_SID
            lanes[lane, CONSUMED] = -1  # (marks the lane free)
            self._free.append(lane)

    def _grow(self) -> None:
        old = self._lanes.shape[0]
        new = max(16, 2 * old)
        lanes = np.zeros((new, 7), dtype=np.int64)
        lanes[:old] = self._lanes
        lanes[old:, SID] = NO_SID
        lanes[old:, CONSUMED] = -1
        self._lanes = lanes
        self._free.extend(range(new - 1, old - 1, -1))

    def put(self, lane: int, state: tuple, consumed: int) -> int:
        """Put the lane on the fast path in step state ``state`` (see the module doc)
        after ``consumed`` output tokens; returns the state's sid."""
        sid = self._ids.get(state)
        if sid is None:
            if len(self._states) >= self.max_states:
                self._compact()
            sid = self._ids[state] = len(self._states)
            self._states.append(state)
            self.plans.append(None)
            if sid >= self._ready.size:
                ready = np.zeros(max(64, 2 * self._ready.size), dtype=np.uint8)
                ready[: self._ready.size] = self._ready
                self._ready = ready
        self._lanes[lane, SID] = sid
        self._lanes[lane, CONSUMED] = consumed
        return sid

    def take(self, lane: int) -> tuple[tuple, int] | None:
        """Take the lane off the fast path: (its step state, consumed tokens), or None
        when it was off already."""
        sid = int(self._lanes[lane, SID])
        if sid == NO_SID:
            return None
        self._lanes[lane, SID] = NO_SID
        return self._states[sid], int(self._lanes[lane, CONSUMED])

    def on(self, lane: int) -> int:
        """The lane's sid (NO_SID: off the fast path)."""
        return int(self._lanes[lane, SID])

    # -- transitions and plans -----------------------------------------------------------
    def learn(self, sid: int, token: int, to: int) -> None:
        """Step state ``sid`` reading ``token`` becomes step state ``to``."""
        if not 0 <= token < TOKEN_LIMIT or sid < 0 or to < 0:
            return
        if self._used >= MAX_TRANSITIONS:  # bounded: they start over
            self._alloc(MIN_BITS)
        elif 2 * (self._used + 1) > self._table.shape[0]:
            self._rehash(self._bits + 1)
        if _insert(self._table, self._bits, (sid << TOKEN_BITS) | token, to):
            self._used += 1

    def set_plan(self, sid: int, plan: Any) -> None:
        """The plain step's plan in step state ``sid`` (returned by :meth:`advance`'s
        caller from :attr:`plans`)."""
        self.plans[sid] = plan
        self._ready[sid] = 1

    def forget_plans(self) -> None:
        """Drop every sid's plan (the caller's plans changed meaning: a new vocabulary)."""
        self.plans = [None] * len(self._states)
        self._ready[:] = 0

    def advance(self, lanes: np.ndarray, lengths: np.ndarray, last: np.ndarray
                ) -> tuple[np.ndarray, int, np.ndarray]:
        """Per row k (lane ``lanes[k]``, -1: none; its output holds ``lengths[k]`` tokens,
        the newest ``last[k]``): when the row took a plain step on the fast path (its lane
        now holds its new sid), ``new sid << FLAG_BITS | its FLAGS``, else NO_SID. Returns
        (those codes, how many took the fast path, the loop-guard pushes of those rows as
        an int64 [n, 3] array of (k, guard handle, token))."""
        k = lanes.size
        out = np.empty(4 * k, dtype=np.int64)
        n, pushes = _advance(lanes, lengths, last, self._lanes, self._table, self._bits,
                             self._ready, out)
        return out[:k], n, out[k:k + 3 * pushes].reshape(pushes, 3)

    def _alloc(self, bits: int) -> None:
        self._bits = bits
        self._table = np.zeros((1 << bits, 2), dtype=np.int64)  # (key, sid) entries
        self._table[:, 0] = _EMPTY
        self._used = 0

    def _rehash(self, bits: int) -> None:
        keep = self._table[self._table[:, 0] != _EMPTY]
        self._alloc(bits)
        _insert_all(self._table, self._bits, keep)
        self._used = keep.shape[0]

    def _compact(self) -> None:
        """Keep only the step states live lanes hold (renumbered); the transitions and
        plans start over."""
        sid = self._lanes[:, SID]
        live = np.flatnonzero(sid >= 0)
        old = np.unique(sid[live])
        self._states = [self._states[s] for s in old.tolist()]
        self._ids = {st: k for k, st in enumerate(self._states)}
        remap = np.full(max(int(old.max()) + 1, 1) if old.size else 1, NO_SID,
                        dtype=np.int64)
        remap[old] = np.arange(old.size)
        sid[live] = remap[sid[live]]
        self.plans = [None] * len(self._states)
        self._ready[:] = 0
        self._alloc(MIN_BITS)
        self.generation += 1

    @property
    def states(self) -> int:
        """Interned step states (for tests and logs)."""
        return len(self._states)


def row_state(state: tuple, n_tokens: int) -> RowState:
    """A fresh :class:`RowState` for an interned step state (see :func:`step_state`)."""
    _, avoid, pending, prefer, done, trying, misses = state
    return RowState(avoid=avoid, prefer=prefer, pending=pending, prefer_done=done,
                    prefer_trying=trying, prefer_misses=misses, n_tokens=n_tokens)


def step_state(kind: int, st: RowState) -> tuple:
    """The interned step state of a row of ``kind`` in ``st`` (not ``violated``)."""
    return (kind, st.avoid, st.pending, st.prefer, st.prefer_done, st.prefer_trying,
            st.prefer_misses)


_MUL = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True)
def _slot(key, bits):
    return np.int64((np.uint64(key) * _MUL) >> np.uint64(64 - bits))


@njit(cache=True)
def _insert(table, bits, key, val):
    """Insert or overwrite ``key``; True when it was new."""
    wrap = (1 << bits) - 1
    p = _slot(key, bits)
    while True:
        k = table[p, 0]
        if k == _EMPTY:
            table[p, 0] = key
            table[p, 1] = val
            return True
        if k == key:
            table[p, 1] = val
            return False
        p = (p + 1) & wrap


@njit(cache=True)
def _insert_all(table, bits, entries):
    """Insert the (key, sid) ``entries`` (distinct keys) into ``table``."""
    for n in range(entries.shape[0]):
        _insert(table, bits, entries[n, 0], entries[n, 1])


@njit(cache=True)
def _advance(lanes, lengths, last, cols, table, bits, ready, out):
    """See :meth:`Lanes.advance` (``out``: 4 * k entries: the k codes, then the pushes)."""
    wrap = (1 << bits) - 1
    k_rows = lanes.size
    n = 0
    pushes = 0
    for k in range(k_rows):
        out[k] = NO_SID
        lane = lanes[k]
        if lane < 0:
            continue
        s = cols[lane, SID]
        if s < 0:
            continue
        c = cols[lane, CONSUMED] + 1
        t = last[k]
        if lengths[k] != c or t < 0 or t >= TOKEN_LIMIT:
            continue
        if c < cols[lane, FROM] or c >= cols[lane, BELOW] or c < cols[lane, MIN_STOP]:
            continue
        key = (s << TOKEN_BITS) | t
        p = _slot(key, bits)
        to = NO_SID
        while True:
            kk = table[p, 0]
            if kk == _EMPTY:
                break
            if kk == key:
                to = table[p, 1]
                break
            p = (p + 1) & wrap
        if to < 0 or not ready[to]:
            continue
        cols[lane, SID] = to
        cols[lane, CONSUMED] = c
        out[k] = (to << FLAG_BITS) | cols[lane, FLAGS]
        n += 1
        g = cols[lane, GUARD]
        if g >= 0:
            at = k_rows + 3 * pushes
            out[at] = k
            out[at + 1] = g
            out[at + 2] = t
            pushes += 1
    return n, pushes
