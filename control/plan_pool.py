"""The lanes' plans as arrays: each step state's banned ids and prefer bias in ragged
pools, so that one compiled call turns the fast rows of a step into the flat indices the
CPU's logits path applies, with no Python per row.

A plan of the lanes (:attr:`.step_states.Lanes.plans`) is what
:meth:`.steering_batch.SteeringBatch.controls` computed for a plain step in a step state
(sid): the mask, its banned ids when sent as a list, whether the state is inside a form,
the tokens to anticipate, the prefer bias. :class:`PlanPool` keeps, per sid whose mask
is sent as an id list, those ids and the bias (ids and values) as slices of three pools,
and two flags (inside a form; tokens to anticipate). The Python plans stay the source:
a pooled entry is a copy of one, made when it is set, and dropped with it.

Per step, :meth:`PlanPool.split` sorts the fast rows (``Lanes.advance``'s codes) into
*pooled* rows — a pooled plan, and not a watched row inside a form, whose mask the
rollback check reads — and the rest, marking the pooled rows the rollback check
anticipates (watched greedy rows with tokens that may write a whole form), and gathers the
pooled rows' entries as flat indices ``row * V + token`` (and the bias values) and the
anticipated rows' token sets: one compiled call (:class:`PooledStep`).

Arrays shared by many sids (the batch memoises a mask's ids and a state's bias) are
pooled once: the pool keeps a reference to each array it copied, keyed by its ``id``, so
the id cannot be reused while the entry stands. The pools are bounded
(:data:`MAX_POOLED`); past it the caller starts the plans over (:meth:`full`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

POOLED, INSIDE, AHEAD = 1, 2, 4  # per-sid flags: a pooled plan; inside a form; anticipate
# ids held by each pool before the plans start over: 16 MiB of int32 each (the bias pool
# holds as many float32 values beside them)
MAX_POOLED = 1 << 22


def grow_arrays(owner: object, n: int, fills: dict[str, int]) -> None:
    """Replace each 1-D array attribute ``owner.<name>`` of ``fills`` with one of ``n``
    entries: its entries first, then ``fills[name]``."""
    for name, fill in fills.items():
        a = getattr(owner, name)
        grown = np.full(n, fill, dtype=a.dtype)
        grown[:a.size] = a[:n]
        setattr(owner, name, grown)


class _Ragged:
    """Tuples of equal-length arrays appended into parallel pools (each tuple pooled
    once, by the identity of its arrays)."""

    def __init__(self, *dtypes: type):
        self.data = [np.zeros(1024, dtype=d) for d in dtypes]
        self.used = 0
        # (id of each array) -> (the arrays, their offset)
        self._at: dict[tuple[int, ...], tuple[tuple[np.ndarray, ...], int]] = {}

    def add(self, *arrays: np.ndarray) -> int:
        """The offset of the arrays' copies in :attr:`data`."""
        key = tuple(map(id, arrays))
        hit = self._at.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], arrays, strict=True)):
            return hit[1]
        n = arrays[0].size
        if any(a.size != n for a in arrays):
            raise ValueError("pooled arrays of different sizes")
        at = self.used
        if at + n > self.data[0].size:
            size = max(2 * self.data[0].size, at + n)
            for q, d in enumerate(self.data):
                grown = np.zeros(size, dtype=d.dtype)
                grown[:at] = d[:at]
                self.data[q] = grown
        for d, a in zip(self.data, arrays, strict=True):
            d[at:at + n] = a
        self.used += n
        self._at[key] = (arrays, at)
        return at

    def clear(self) -> None:
        self.used = 0
        self._at.clear()


class PlanPool:
    """Per sid: its plan's banned ids and prefer bias as pool slices, and its flags."""

    def __init__(self) -> None:
        self.flags = np.zeros(0, dtype=np.uint8)
        # per sid: offset and length of its banned ids, of its bias ids (and values)
        self.ban_at = np.zeros(0, dtype=np.int64)
        self.ban_n = np.zeros(0, dtype=np.int64)
        self.bias_at = np.zeros(0, dtype=np.int64)
        self.bias_n = np.zeros(0, dtype=np.int64)
        self.ahead_at = np.zeros(0, dtype=np.int64)
        self.ahead_n = np.zeros(0, dtype=np.int64)
        self._bans = _Ragged(np.int32)
        self._bias = _Ragged(np.int32, np.float32)
        self._ahead = _Ragged(np.int32)

    def grow(self, n: int) -> None:
        """Room for ``n`` sids (new ones unpooled)."""
        grow_arrays(self, n, {name: 0 for name in ("flags", "ban_at", "ban_n", "bias_at",
                                                   "bias_n", "ahead_at", "ahead_n")})

    def put(self, sid: int, bans: np.ndarray, bias_ids: np.ndarray, bias_vals: np.ndarray,
            inside: bool, ahead: np.ndarray | None) -> None:
        """Pool sid's plan: the ids its mask bans, its bias, whether it is inside a form,
        the tokens to anticipate (None: none)."""
        self.ban_at[sid] = self._bans.add(bans)
        self.ban_n[sid] = bans.size
        self.bias_at[sid] = self._bias.add(bias_ids, bias_vals)
        self.bias_n[sid] = bias_ids.size
        if ahead is not None:
            self.ahead_at[sid] = self._ahead.add(ahead)
            self.ahead_n[sid] = ahead.size
        self.flags[sid] = (POOLED | (INSIDE if inside else 0)
                           | (AHEAD if ahead is not None else 0))

    @property
    def full(self) -> bool:
        return max(self._bans.used, self._bias.used, self._ahead.used) >= MAX_POOLED

    def clear(self) -> None:
        """Every sid unpooled (the plans start over)."""
        self.flags[:] = 0
        self._bans.clear()
        self._bias.clear()
        self._ahead.clear()

    def split(self, codes: np.ndarray, rows: np.ndarray, vocab: int, flag_bits: int,
              watch: int, greedy: int) -> PooledStep | None:
        """The pooled rows among a step's ``codes`` (``Lanes.advance``'s, one per plan
        position: ``sid << flag_bits | lane flags``, or negative), the k-th in logits row
        ``rows[k]`` of a ``[B, vocab]`` storage, with their entries gathered, in one
        compiled call; None when no row is pooled."""
        out = _split(codes, rows, vocab, self.flags, flag_bits, watch, greedy,
                     self.ban_at, self.ban_n, self._bans.data[0], self.bias_at,
                     self.bias_n, self._bias.data[0], self._bias.data[1], self.ahead_at,
                     self.ahead_n, self._ahead.data[0])
        return PooledStep(*out) if out[0].size else None


class PooledStep(NamedTuple):
    """A step's pooled rows (see :meth:`PlanPool.split`)."""

    pos: np.ndarray  # their plan positions
    sids: np.ndarray  # their sids
    rest: np.ndarray  # the other plan positions
    bans: np.ndarray  # their banned ids as flat indices (row * V + token)
    bias_index: np.ndarray  # their bias ids as flat indices
    bias_values: np.ndarray  # float32
    ahead_pos: np.ndarray  # of them, the rows the rollback check anticipates: positions
    ahead_rows: np.ndarray  # their logits rows (ascending where ``rows`` ascend)
    ahead_sids: np.ndarray
    ahead_sizes: np.ndarray  # each one's count of tokens to anticipate
    ahead_sets: np.ndarray  # those tokens, concatenated


@njit(cache=True)
def _split(codes, rows, vocab, flags, flag_bits, watch, greedy, ban_at, ban_n, bans,
           bias_at, bias_n, bias_ids, bias_vals, ahead_at, ahead_n, ahead_ids):
    """See :meth:`PlanPool.split`. A fast row is pooled when its sid's plan is, unless it
    is a watched row inside a form (the rollback check reads its mask); a watched greedy
    row with tokens to anticipate is pooled and anticipated."""
    k_rows = codes.size
    kind = np.zeros(k_rows, dtype=np.int8)  # 0: the rest; 1: pooled; 2: and anticipated
    n = 0
    n_ahead = 0
    n_bans = 0
    n_bias = 0
    n_sets = 0
    for k in range(k_rows):
        c = codes[k]
        if c < 0:
            continue
        s = c >> flag_bits
        f = flags[s]
        watched = (c & watch) != 0
        if (f & POOLED) == 0 or (watched and (f & INSIDE) != 0):
            continue
        n += 1
        n_bans += ban_n[s]
        n_bias += bias_n[s]
        kind[k] = 1
        if watched and (f & AHEAD) != 0 and (c & greedy) != 0:
            kind[k] = 2
            n_ahead += 1
            n_sets += ahead_n[s]
    pos = np.empty(n, dtype=np.int64)
    sids = np.empty(n, dtype=np.int64)
    rest = np.empty(k_rows - n, dtype=np.int64)
    flat_bans = np.empty(n_bans, dtype=np.int64)
    flat_bias = np.empty(n_bias, dtype=np.int64)
    vals = np.empty(n_bias, dtype=np.float32)
    a_pos = np.empty(n_ahead, dtype=np.int64)
    a_rows = np.empty(n_ahead, dtype=np.int64)
    a_sids = np.empty(n_ahead, dtype=np.int64)
    a_sizes = np.empty(n_ahead, dtype=np.int64)
    a_sets = np.empty(n_sets, dtype=np.int64)
    p = q = b = e = a = z = 0
    for k in range(k_rows):
        if kind[k] == 0:
            rest[q] = k
            q += 1
            continue
        s = codes[k] >> flag_bits
        pos[p] = k
        sids[p] = s
        p += 1
        off = rows[k] * vocab
        at = ban_at[s]
        for t in range(ban_n[s]):
            flat_bans[b] = off + bans[at + t]
            b += 1
        at = bias_at[s]
        for t in range(bias_n[s]):
            flat_bias[e] = off + bias_ids[at + t]
            vals[e] = bias_vals[at + t]
            e += 1
        if kind[k] == 2:
            a_pos[a] = k
            a_rows[a] = rows[k]
            a_sids[a] = s
            a_sizes[a] = ahead_n[s]
            a += 1
            at = ahead_at[s]
            for t in range(ahead_n[s]):
                a_sets[z] = ahead_ids[at + t]
                z += 1
    return (pos, sids, rest, flat_bans, flat_bias, vals, a_pos, a_rows, a_sids, a_sizes,
            a_sets)
