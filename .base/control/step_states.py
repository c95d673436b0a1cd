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

from .ban_automaton import CompiledSteering, RowState
from . import plan_pool
from .plan_pool import PlanPool, grow_arrays
from .vocab_index import VocabIndex
from .transition_arrays import (GAVE_UP, NOT_PACKABLE, SpecArrays, TokenTexts,
                                next_state_key, pack_state)

TOKEN_BITS = 21  # token ids below 2**21 have cached transitions (others always miss)
TOKEN_LIMIT = 1 << TOKEN_BITS
MAX_STATES = 1 << 16  # interned step states kept before a compaction
MIN_BITS = 12  # the transition hash's smallest size: 2**12 entries
# transitions kept before they start over (the hash then holds at most 2**21 entries of
# 16 bytes: 32 MiB)
MAX_TRANSITIONS = 1 << 20
KIND_SLOTS = 1 << 16  # row kinds the state keys tell apart between two compactions
# compiled specs whose automata are kept as arrays (past it they all start over)
MAX_SPECS = 64
NO_SID = -1  # a lane off the fast path (its row object holds its state)
UNSEEN = -2  # advance's code for a plain step whose transition is not cached
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
        self.pool = PlanPool()  # sid -> its plan as pool slices, when the caller gave them
        self.generation = 0  # bumped by every compaction
        self._lanes = np.zeros((0, 7), dtype=np.int64)  # per lane: the columns above
        self._free: list[int] = []
        self._alloc(MIN_BITS)
        # computed transitions: per sid its packed state key and its spec's slot in
        # _specs (-1: not computable); the interned keys' hash; the specs' arrays
        self._sid_key = np.full(0, NOT_PACKABLE, dtype=np.int64)
        self._sid_spec = np.full(0, -1, dtype=np.int32)
        self._keys_bits = MIN_BITS
        self._keys = _empty_table(MIN_BITS)
        self._keys_used = 0
        # row kind -> a number below 2**16 for the state keys (kinds are never reused, so
        # they grow without bound; these are renumbered at a compaction)
        self._kind_slots: dict[int, int] = {}
        self._specs: list[SpecArrays] = []
        self._spec_slots: dict[int, int] = {}  # spec uid -> its slot in _specs
        self._texts: TokenTexts | None = None
        self.computed = 0  # transitions computed (not looked up) by advance, for tests

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
        ids, vals = np.array([3], dtype=np.int32), np.array([1.0], dtype=np.float32)
        lanes.set_plan(s, "plan", (ids, ids, vals, False, ids))
        codes, _, _ = lanes.advance(np.array([lane], dtype=np.int32),
                                    np.array([1], dtype=np.int64),
                                    np.array([5], dtype=np.int64))
        lanes.pool.split(codes, np.zeros(1, dtype=np.int64), 8, FLAG_BITS, WATCH, GREEDY)
        plan_pool.warm_up()  # (a GPU's path: the tabled split, the merged bias lists)
        # a computed transition (a tiny vocabulary and spec)
        spec = CompiledSteering(VocabIndex.from_token_bytes([b"a", b" ab", b" cd", b" x"]),
                                ["ab"], ["cd"])
        lane = lanes.open(plain_from=0, plain_below=NEVER, min_stop=0, guard=-1,
                          watch=False, greedy=True)
        s = lanes.put(lane, (1, spec.avoid.start, b"", spec.prefer.start, False, False, 0),
                      0, spec)
        lanes.set_plan(s, "plan")
        lanes.advance(np.array([lane], dtype=np.int32), np.array([1], dtype=np.int64),
                      np.array([3], dtype=np.int64))

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

    def put(self, lane: int, state: tuple, consumed: int,
            spec: CompiledSteering | None = None) -> int:
        """Put the lane on the fast path in step state ``state`` (see the module doc)
        after ``consumed`` output tokens; returns the state's sid. With ``spec`` (the
        row's compiled spec), the state's transitions may be computed from the spec's
        automata (see :mod:`.transition_arrays`)."""
        sid = self._ids.get(state)
        if sid is None:
            if len(self._states) >= self.max_states:
                self._compact()
            sid = self._ids[state] = len(self._states)
            self._states.append(state)
            self.plans.append(None)
            if sid >= self._ready.size:
                self._grow_sids(max(64, 2 * self._ready.size))
            key = pack_state(state, self._kind_slot(state[0]))
            self._sid_key[sid] = key
            if key != NOT_PACKABLE:
                self._add_key(key, sid)
        if spec is not None and self._sid_spec[sid] < 0 and self._sid_key[sid] >= 0:
            self._sid_spec[sid] = self._spec_slot(spec)
        self._lanes[lane, SID] = sid
        self._lanes[lane, CONSUMED] = consumed
        return sid

    def _grow_sids(self, n: int) -> None:
        grow_arrays(self, n, {"_ready": 0, "_sid_key": NOT_PACKABLE, "_sid_spec": -1})
        self.pool.grow(n)

    def _add_key(self, key: int, sid: int) -> None:
        """Intern state key ``key`` as ``sid`` in the keys' hash."""
        if 2 * (self._keys_used + 1) > self._keys.shape[0]:
            self._keys_bits += 1
            self._keys = _table_of(self._keys[self._keys[:, 0] != _EMPTY], self._keys_bits)
        if _insert(self._keys, self._keys_bits, key, sid):
            self._keys_used += 1

    def _kind_slot(self, kind: int) -> int:
        """``kind``'s number in the state keys (-1: too many kinds live at once)."""
        slot = self._kind_slots.get(kind)
        if slot is None:
            if len(self._kind_slots) >= KIND_SLOTS:
                return -1
            slot = self._kind_slots[kind] = len(self._kind_slots)
        return slot

    def _spec_slot(self, spec: CompiledSteering) -> int:
        """The slot of ``spec``'s arrays in :attr:`_specs` (made now if need be)."""
        slot = self._spec_slots.get(spec.uid)
        if slot is not None:
            return slot
        if self._texts is None or self._texts.index is not spec.index:
            self._texts = TokenTexts(spec.index)
            self._forget_specs()
        elif len(self._specs) >= MAX_SPECS:  # bounded: they all start over
            self._forget_specs()
        slot = self._spec_slots[spec.uid] = len(self._specs)
        self._specs.append(SpecArrays(spec))
        return slot

    def _forget_specs(self) -> None:
        self._specs.clear()
        self._spec_slots.clear()
        self._sid_spec[:] = -1

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

    def set_plan(self, sid: int, plan: Any, pooled: tuple | None = None) -> None:
        """The plain step's plan in step state ``sid`` (returned by :meth:`advance`'s
        caller from :attr:`plans`); ``pooled``: its arrays for :attr:`pool`
        (:meth:`.plan_pool.PlanPool.put`'s arguments after the sid), when it has them."""
        if pooled is not None and self.pool.full:  # bounded: the plans start over
            self.forget_plans()
        self.plans[sid] = plan
        self._ready[sid] = 1
        if pooled is not None:
            self.pool.put(sid, *pooled)
        else:
            self.pool.flags[sid] = 0  # (not pooled: the plan alone stands)

    def forget_plans(self) -> None:
        """Drop every sid's plan (the caller's plans changed meaning: a new vocabulary)."""
        self.plans = [None] * len(self._states)
        self._ready[:] = 0
        self.pool.clear()

    def advance(self, lanes: np.ndarray, lengths: np.ndarray, last: np.ndarray
                ) -> tuple[np.ndarray, int, np.ndarray]:
        """Per row k (lane ``lanes[k]``, -1: none; its output holds ``lengths[k]`` tokens,
        the newest ``last[k]``): when the row took a plain step on the fast path (its lane
        now holds its new sid), ``new sid << FLAG_BITS | its FLAGS``, else NO_SID. Returns
        (those codes, how many took the fast path, the loop-guard pushes of those rows as
        an int64 [n, 3] array of (k, guard handle, token))."""
        k = lanes.size
        out = np.empty(5 * k, dtype=np.int64)  # codes, pushes (3 entries each), unseen
        n, pushes, unseen, lo, hi = _advance(lanes, lengths, last, self._lanes,
                                             self._table, self._bits, self._ready, out,
                                             self._sid_spec)
        if unseen:
            if self._specs:
                n, pushes = self._compute(lanes, last, out, n, pushes,
                                          out[4 * k:4 * k + unseen], lo, hi)
            np.maximum(out[:k], NO_SID, out=out[:k])  # (what is left: NO_SID)
        return out[:k], n, out[k:k + 3 * pushes].reshape(pushes, 3)

    def _compute(self, lanes: np.ndarray, last: np.ndarray, out: np.ndarray, n: int,
                 pushes: int, rows: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
        """Compute the transitions :func:`_advance` found no cached entry for (its UNSEEN
        ``rows``, whose specs' slots span ``lo``..``hi``), per spec, from the specs'
        automata as arrays; teach the arrays what a row stopped on and compute it again;
        cache what was computed. Returns advance's updated (fast rows, pushes)."""
        slots = None if lo == hi else self._sid_spec[self._lanes[lanes[rows], SID]]
        for slot in [lo] if lo == hi else np.unique(slots).tolist():
            if slot < 0:
                continue
            sub = rows if slots is None else rows[slots == slot]
            arrays = self._specs[slot]
            n, pushes, gave_up = self._compute_rows(sub, lanes, last, out, n, pushes, arrays)
            if gave_up:
                stopped = sub[out[sub] == GAVE_UP]
                for j in stopped.tolist():
                    arrays.teach(self._states[self._lanes[lanes[j], SID]], int(last[j]))
                n, pushes, _ = self._compute_rows(stopped, lanes, last, out, n, pushes,
                                                  arrays)
        return n, pushes

    def _compute_rows(self, rows: np.ndarray, lanes: np.ndarray, last: np.ndarray,
                      out: np.ndarray, n: int, pushes: int, arrays: SpecArrays
                      ) -> tuple[int, int, int]:
        """:func:`_compute` on ``rows`` of one spec, the transitions table grown first to
        take one more entry per row. Returns (fast rows, pushes, rows that GAVE_UP)."""
        if self._used + rows.size >= MAX_TRANSITIONS:  # bounded: they start over
            self._alloc(MIN_BITS)
        bits = self._bits
        while 2 * (self._used + rows.size) > (1 << bits):
            bits += 1
        if bits != self._bits:
            self._rehash(bits)
        texts, av, pr = self._texts, arrays.avoid, arrays.prefer
        before = n
        n, pushes, learned, gave_up = _compute(
            rows, lanes, last, self._lanes, self._table, self._bits, self._ready, out,
            n, pushes, self._sid_key, self._keys, self._keys_bits, texts.ptr,
            texts.chars, texts.plain, arrays.alphabet, av.delta, av.sep, av.accept,
            pr.delta, pr.sep, pr.accept, pr.depth, arrays.boost_at, arrays.boost_ids)
        self._used += learned
        self.computed += n - before
        return n, pushes, gave_up

    def _alloc(self, bits: int) -> None:
        self._bits = bits
        self._table = _empty_table(bits)  # (sid << TOKEN_BITS | token, sid) entries
        self._used = 0

    def _rehash(self, bits: int) -> None:
        keep = self._table[self._table[:, 0] != _EMPTY]
        self._bits = bits
        self._table = _table_of(keep, bits)
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
        self.pool.clear()
        specs = self._sid_spec[old]
        self._kind_slots.clear()  # (renumbered: the live states' kinds only)
        keys = np.array([pack_state(st, self._kind_slot(st[0])) for st in self._states],
                        dtype=np.int64)
        self._sid_key[:] = NOT_PACKABLE
        self._sid_spec[:] = -1
        self._sid_key[:old.size] = keys
        self._sid_spec[:old.size] = specs
        self._keys_bits = MIN_BITS
        while 2 * old.size > 1 << self._keys_bits:
            self._keys_bits += 1
        packed = np.flatnonzero(keys >= 0)
        self._keys = _table_of(np.stack([keys[packed], packed.astype(np.int64)], axis=1),
                               self._keys_bits)
        self._keys_used = packed.size
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


def _table_of(entries: np.ndarray, bits: int) -> np.ndarray:
    """A hash of ``2**bits`` entries holding the (key, value) ``entries`` (distinct keys)."""
    table = _empty_table(bits)
    _insert_all(table, bits, entries)
    return table


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
def _empty_table(bits):
    """An empty open-addressing hash of ``2**bits`` (key, value) int64 entries."""
    table = np.empty((1 << bits, 2), dtype=np.int64)
    table[:, 0] = _EMPTY
    table[:, 1] = 0
    return table


@njit(cache=True)
def _lookup(table, bits, key):
    """``key``'s value in ``table``, or -1."""
    wrap = (1 << bits) - 1
    p = _slot(key, bits)
    while True:
        kk = table[p, 0]
        if kk == _EMPTY:
            return -1
        if kk == key:
            return table[p, 1]
        p = (p + 1) & wrap


@njit(cache=True)
def _take_step(k, lane, to, t, cols, out, n, pushes, k_rows):
    """Row ``k`` (lane ``lane``) steps to sid ``to`` over token ``t``: write its code and
    its loop-guard push; returns advance's updated (fast rows, pushes)."""
    cols[lane, SID] = to
    cols[lane, CONSUMED] += 1
    out[k] = (to << FLAG_BITS) | cols[lane, FLAGS]
    g = cols[lane, GUARD]
    if g >= 0:
        at = k_rows + 3 * pushes
        out[at] = k
        out[at + 1] = g
        out[at + 2] = t
        pushes += 1
    return n + 1, pushes


@njit(cache=True)
def _compute(rows, lanes, last, cols, table, bits, ready, out, n, pushes, sid_key, keys,
             keys_bits, ptr, chars, plain, alphabet, a_delta, a_sep, a_accept, p_delta,
             p_sep, p_accept, p_depth, boost_at, boost_ids):
    """See :meth:`Lanes._compute` (rows of one spec); returns (fast rows, pushes, how
    many transitions it added to ``table``, which has room for one per row, how many
    rows GAVE_UP)."""
    learned = 0
    gave_up = 0
    k_rows = lanes.size
    for k in rows:
        lane = lanes[k]
        s = cols[lane, SID]
        t = last[k]
        key = next_state_key(sid_key[s], t, ptr, chars, plain, alphabet, a_delta, a_sep,
                             a_accept, p_delta, p_sep, p_accept, p_depth, boost_at,
                             boost_ids)
        if key < 0:
            if key == GAVE_UP:
                out[k] = GAVE_UP
                gave_up += 1
            else:
                out[k] = NO_SID
            continue
        to = _lookup(keys, keys_bits, key)
        if to < 0 or not ready[to]:
            out[k] = NO_SID
            continue
        if _insert(table, bits, (s << TOKEN_BITS) | t, to):
            learned += 1
        n, pushes = _take_step(k, lane, to, t, cols, out, n, pushes, k_rows)
    return n, pushes, learned, gave_up


@njit(cache=True)
def _advance(lanes, lengths, last, cols, table, bits, ready, out, sid_spec):
    """See :meth:`Lanes.advance` (``out``: 5 * k entries: the k codes, the pushes, 3
    entries each, from k, then from 4 * k the rows left UNSEEN). Returns (fast rows,
    pushes, rows left UNSEEN, the lowest and highest spec slot of those rows' sids)."""
    k_rows = lanes.size
    n = 0
    pushes = 0
    unseen = 0
    lo = np.int64(1) << 62
    hi = np.int64(-1) << 62
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
        to = _lookup(table, bits, (s << TOKEN_BITS) | t)
        if to < 0:
            out[k] = UNSEEN
            out[4 * k_rows + unseen] = k
            unseen += 1
            slot = np.int64(sid_spec[s])
            lo = min(lo, slot)
            hi = max(hi, slot)
            continue
        if not ready[to]:
            continue
        n, pushes = _take_step(k, lane, to, t, cols, out, n, pushes, k_rows)
    return n, pushes, unseen, lo, hi
