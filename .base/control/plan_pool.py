"""The lanes' plans as arrays: each step state's banned ids (or mask-table slot) and
prefer bias in ragged pools, so that one compiled call turns the fast rows of a step into
the entries the logits path applies, with no Python per row.

A plan of the lanes (:attr:`.step_states.Lanes.plans`) is what
:meth:`.steering_batch.SteeringBatch.controls` computed for a plain step in a step state
(sid): the mask, its banned ids when sent as a list, whether the state is inside a form,
the tokens to anticipate, the prefer bias. :class:`PlanPool` keeps, per sid, the bias
(ids and values) and the rollback check's set (inside a form, the ids its mask bans;
else the tokens to anticipate) as slices of pools, a flag for inside a form, and the
mask in the form the batch's path sends it:

* the CPU's: the mask's banned ids (a slice of another pool), when it bans few tokens;
* a GPU's (*tabled*): the :class:`.mask_table.MaskTable` slot holding the mask, with the
  slot's owner stamp at the time; while the table's stamp for the slot is the same, the
  slot still holds the mask, else the row goes the per-row way, which uploads it again
  and pools the new slot (:meth:`PlanPool.restamp`).

The Python plans stay the source: a pooled entry is a copy of one, made when it is set,
and dropped with it.

Per step, :meth:`PlanPool.split` sorts the fast rows (``Lanes.advance``'s codes) into
*pooled* rows — a pooled plan, and not a watched row inside a form whose check needs its
mask (a sampling row; a mask with no pooled set) — and the rest, marking the pooled rows
the rollback check reads (watched greedy rows with a check set: inside a form, the ids
its mask bans; else the tokens that may write a whole form), and gathers the pooled rows'
entries and the checked rows' token sets: one compiled call (:class:`PooledStep`). On
the CPU's path the banned ids and bias ids come as flat indices ``row * V + token`` into
the logits; on a GPU's, the bias ids come as they are, with each row's count (from which
:func:`bias_lists` builds the kernels' per-row lists), and the rows' mask slots are
written into the step's slot array and marked used in the table.

Arrays shared by many sids (the batch memoises a mask's ids and a state's bias) are
pooled once: the pool keeps a reference to each array it copied, keyed by its ``id``, so
the id cannot be reused while the entry stands. The pools are bounded
(:data:`MAX_POOLED`); past it the caller starts the plans over (:meth:`full`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numba import njit

from .transition_arrays import _lower_bound

if TYPE_CHECKING:
    from .mask_table import MaskTable

# per-sid flags: a pooled plan; inside a form; a set for the rollback check; its mask by
# table slot
POOLED, INSIDE, CHECK, TABLED = 1, 2, 4, 8
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
        self.check_at = np.zeros(0, dtype=np.int64)
        self.check_n = np.zeros(0, dtype=np.int64)
        self.slot = np.zeros(0, dtype=np.int64)  # tabled: its mask's slot and owner stamp
        self.stamp = np.zeros(0, dtype=np.int64)
        self._bans = _Ragged(np.int32)
        self._bias = _Ragged(np.int32, np.float32)
        self._check = _Ragged(np.int32)

    def grow(self, n: int) -> None:
        """Room for ``n`` sids (new ones unpooled)."""
        grow_arrays(self, n, {name: 0 for name in ("flags", "ban_at", "ban_n", "bias_at",
                                                   "bias_n", "check_at", "check_n",
                                                   "slot", "stamp")})

    def put(self, sid: int, bans: np.ndarray, bias_ids: np.ndarray, bias_vals: np.ndarray,
            inside: bool, check: np.ndarray | None, slot: int | None = None,
            stamp: int = 0) -> None:
        """Pool sid's plan: the ids its mask bans (when sent as a list), its bias, whether
        it is inside a form, its set for the rollback check (None: none) — inside a form,
        the ids its mask bans (a greedy row choosing one gets the rollback signal); else
        the tokens that may write a whole form (one chosen is anticipated) — and, for a
        mask sent by table slot (``bans`` then empty), that slot and its owner stamp."""
        self.ban_at[sid] = self._bans.add(bans)
        self.ban_n[sid] = bans.size
        self.bias_at[sid] = self._bias.add(bias_ids, bias_vals)
        self.bias_n[sid] = bias_ids.size
        if check is not None:
            self.check_at[sid] = self._check.add(check)
            self.check_n[sid] = check.size
        if slot is not None:
            self.restamp(sid, slot, stamp)
        self.flags[sid] = (POOLED | (INSIDE if inside else 0)
                           | (CHECK if check is not None else 0)
                           | (TABLED if slot is not None else 0))

    def restamp(self, sid: int, slot: int, stamp: int) -> None:
        """Sid's mask now sits in table slot ``slot``, uploaded with owner ``stamp``."""
        self.slot[sid] = slot
        self.stamp[sid] = stamp

    @property
    def full(self) -> bool:
        return max(self._bans.used, self._bias.used, self._check.used) >= MAX_POOLED

    def clear(self) -> None:
        """Every sid unpooled (the plans start over)."""
        self.flags[:] = 0
        self._bans.clear()
        self._bias.clear()
        self._check.clear()

    def split(self, codes: np.ndarray, rows: np.ndarray, vocab: int, flag_bits: int,
              watch: int, greedy: int, table: MaskTable | None = None,
              mask_rows: np.ndarray | None = None) -> PooledStep | None:
        """The pooled rows among a step's ``codes`` (``Lanes.advance``'s, one per plan
        position: ``sid << flag_bits | lane flags``, or negative), the k-th in logits row
        ``rows[k]`` of a ``[B, vocab]`` storage, with their entries gathered, in one
        compiled call; None when no row is pooled. Without ``table``, the CPU's path (the
        sids pooled with id lists); with it, a GPU's (the tabled sids whose slot still
        holds their mask): their slots go into ``mask_rows`` (by plan position) and are
        marked used in this step of the table."""
        tabled = table is not None
        stamps, used_in, step = ((table.stamps, table.used_in, table.step) if tabled
                                 else (_NONE, _NONE, 0))
        out = _split(codes, rows, vocab if not tabled else 0, self.flags, flag_bits, watch,
                     greedy, self.ban_at, self.ban_n, self._bans.data[0], self.bias_at,
                     self.bias_n, self._bias.data[0], self._bias.data[1], self.check_at,
                     self.check_n, self._check.data[0], tabled, self.slot, self.stamp,
                     stamps, used_in, step, mask_rows if tabled else _NONE32)
        return PooledStep(*out) if out[0].size else None


class PooledStep(NamedTuple):
    """A step's pooled rows (see :meth:`PlanPool.split`)."""

    pos: np.ndarray  # their plan positions
    sids: np.ndarray  # their sids
    rest: np.ndarray  # the other plan positions
    bans: np.ndarray  # their banned ids as flat indices (row * V + token); tabled: none
    bias_index: np.ndarray  # their bias ids as flat indices; tabled: as they are
    bias_values: np.ndarray  # float32
    check_pos: np.ndarray  # of them, the rows the rollback check reads: positions
    check_rows: np.ndarray  # their logits rows (ascending where ``rows`` ascend)
    check_sids: np.ndarray
    check_inside: np.ndarray  # bool: inside a form (its set: banned ids, a hit signals)
    check_sizes: np.ndarray  # each one's count of tokens in its set
    check_sets: np.ndarray  # those tokens, concatenated
    bias_sizes: np.ndarray  # each pooled row's count of bias entries


_NONE = np.zeros(0, dtype=np.int64)
_NONE32 = np.zeros(0, dtype=np.int32)


@njit(cache=True)
def _split(codes, rows, vocab, flags, flag_bits, watch, greedy, ban_at, ban_n, bans,
           bias_at, bias_n, bias_ids, bias_vals, check_at, check_n, check_ids, tabled,
           sid_slot, sid_stamp, stamps, used_in, step, mask_rows):
    """See :meth:`PlanPool.split` (``vocab`` 0: ids as they are). A fast row is pooled
    when its sid's plan is, in the path's form (``tabled``: by a table slot that still
    holds its mask, per ``stamps``); a watched greedy row with a check set is pooled and
    checked; a watched row inside a form is not pooled otherwise (its check reads its
    mask)."""
    want = POOLED | TABLED if tabled else POOLED
    k_rows = codes.size
    kind = np.zeros(k_rows, dtype=np.int8)  # 0: the rest; 1: pooled; 2: and checked
    n = 0
    n_check = 0
    n_bans = 0
    n_bias = 0
    n_sets = 0
    for k in range(k_rows):
        c = codes[k]
        if c < 0:
            continue
        s = c >> flag_bits
        f = flags[s]
        if (f & (POOLED | TABLED)) != want:
            continue
        checked = (c & watch) != 0 and (f & CHECK) != 0 and (c & greedy) != 0
        if (c & watch) != 0 and (f & INSIDE) != 0 and not checked:
            continue
        if tabled and stamps[sid_slot[s]] != sid_stamp[s]:
            continue  # its slot was given to another mask since
        n += 1
        n_bans += ban_n[s]
        n_bias += bias_n[s]
        kind[k] = 1
        if checked:
            kind[k] = 2
            n_check += 1
            n_sets += check_n[s]
    pos = np.empty(n, dtype=np.int64)
    sids = np.empty(n, dtype=np.int64)
    rest = np.empty(k_rows - n, dtype=np.int64)
    flat_bans = np.empty(n_bans, dtype=np.int64)
    flat_bias = np.empty(n_bias, dtype=np.int64)
    vals = np.empty(n_bias, dtype=np.float32)
    a_pos = np.empty(n_check, dtype=np.int64)
    a_rows = np.empty(n_check, dtype=np.int64)
    a_sids = np.empty(n_check, dtype=np.int64)
    a_inside = np.empty(n_check, dtype=np.bool_)
    a_sizes = np.empty(n_check, dtype=np.int64)
    a_sets = np.empty(n_sets, dtype=np.int64)
    sizes = np.empty(n, dtype=np.int64)
    p = q = b = e = a = z = 0
    for k in range(k_rows):
        if kind[k] == 0:
            rest[q] = k
            q += 1
            continue
        s = codes[k] >> flag_bits
        pos[p] = k
        sids[p] = s
        sizes[p] = bias_n[s]
        p += 1
        if tabled:
            mask_rows[k] = sid_slot[s]
            used_in[sid_slot[s]] = step
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
            a_inside[a] = (flags[s] & INSIDE) != 0
            a_sizes[a] = check_n[s]
            a += 1
            at = check_at[s]
            for t in range(check_n[s]):
                a_sets[z] = check_ids[at + t]
                z += 1
    return (pos, sids, rest, flat_bans, flat_bias, vals, a_pos, a_rows, a_sids, a_inside,
            a_sizes, a_sets, sizes)


def bias_lists(k: int, pooled: PooledStep, other_pos: np.ndarray, other_sizes: np.ndarray,
               other_ids: np.ndarray, other_vals: np.ndarray, ban_pos: np.ndarray,
               ban_sizes: np.ndarray, ban_ids: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernels' per-row bias lists of a step's ``k`` plan positions (indptr [k + 1],
    int32 token ids, float32 values) from a GPU's pooled rows (:meth:`PlanPool.split`
    with a table: their ids as they are, with each row's count), the ``other_pos`` rows'
    lists (``other_sizes`` entries each, concatenated, in that order), which take
    precedence over a pooled row's, and the ``ban_pos`` rows' extra bans (``ban_sizes``
    ids each, concatenated; repeats allowed) as ``-inf`` entries: a banned id's bias
    entry is left out and each banned id comes once, so that a row's ids stay unique.
    Rows in none get no entry. One compiled call."""
    return _bias_lists(k, pooled.pos, pooled.bias_sizes, pooled.bias_index,
                       pooled.bias_values, other_pos, other_sizes, other_ids, other_vals,
                       ban_pos, ban_sizes, ban_ids)


@njit(cache=True)
def _bias_lists(k, pos_a, sizes_a, ids_a, vals_a, pos_b, sizes_b, ids_b, vals_b, pos_x,
                sizes_x, ids_x):
    """See :func:`bias_lists`."""
    # per row: its list's source (0: none; 1: pooled; 2: the other lists), offset, size
    src = np.zeros(k, dtype=np.int8)
    at = np.zeros(k, dtype=np.int64)
    n = np.zeros(k, dtype=np.int64)
    _locate(pos_a, sizes_a, 1, src, at, n)
    _locate(pos_b, sizes_b, 2, src, at, n)
    # per row with bans: its banned ids, unique and ascending, at bans[b_at[j]:][:b_n[j]]
    b_at = np.zeros(k, dtype=np.int64)
    b_n = np.zeros(k, dtype=np.int64)
    bans = np.empty(ids_x.size, dtype=np.int64)
    o = u = 0
    for q in range(pos_x.size):
        j = pos_x[q]
        row = np.sort(ids_x[o:o + sizes_x[q]])
        o += sizes_x[q]
        b_at[j] = u
        for t in range(row.size):
            if t == 0 or row[t] != row[t - 1]:
                bans[u] = row[t]
                u += 1
        b_n[j] = u - b_at[j]
    # one pass, rows in order, into arrays with room for every entry (a banned id's bias
    # entry left out, the bans after the kept entries)
    indptr = np.zeros(k + 1, dtype=np.int32)
    out_ids = np.empty(ids_a.size + ids_b.size + u, dtype=np.int32)
    out_vals = np.empty(out_ids.size, dtype=np.float32)
    d = 0
    for j in range(k):
        if src[j] == 1:
            d = _copy_row(ids_a, vals_a, at[j], n[j], bans, b_at[j], b_n[j], out_ids,
                          out_vals, d)
        elif src[j] == 2:
            d = _copy_row(ids_b, vals_b, at[j], n[j], bans, b_at[j], b_n[j], out_ids,
                          out_vals, d)
        for t in range(b_n[j]):
            out_ids[d] = bans[b_at[j] + t]
            out_vals[d] = -np.inf
            d += 1
        indptr[j + 1] = d
    return indptr, out_ids[:d], out_vals[:d]


@njit(cache=True)
def _locate(pos, sizes, source, src, at, n):
    """Rows ``pos`` take their lists from ``source``: consecutive runs of ``sizes``."""
    o = 0
    for q in range(pos.size):
        j = pos[q]
        src[j] = source
        at[j] = o
        n[j] = sizes[q]
        o += sizes[q]


@njit(cache=True)
def _copy_row(ids, vals, at, n, bans, b_at, b_n, out_ids, out_vals, d):
    """A row's bias entries ``ids[at:at + n]`` not among its bans (``bans[b_at:][:b_n]``,
    ascending), copied to ``out_*`` from ``d``; returns where they end."""
    for t in range(at, at + n):
        if b_n and _in_sorted(bans, b_at, b_at + b_n, ids[t]):
            continue
        out_ids[d] = ids[t]
        out_vals[d] = vals[t]
        d += 1
    return d


@njit(cache=True)
def _in_sorted(a, lo, end, x):
    """Whether x is among the ascending ``a[lo:end]``."""
    at = _lower_bound(a, lo, end, x)
    return at < end and a[at] == x


def warm_up() -> None:
    """Compile the GPU path's kernels now (or load them from numba's cache), not in a
    step: the tabled split and the merged bias lists (``Lanes.warm_up`` compiles the
    split's other form)."""
    pool = PlanPool()
    pool.grow(1)
    ids, vals = np.array([3], dtype=np.int32), np.array([1.0], dtype=np.float32)
    pool.put(0, ids[:0], ids, vals, False, ids, slot=0, stamp=0)
    table = _WarmTable()
    step = pool.split(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), 8, 0, 0,
                      0, table, np.zeros(1, dtype=np.int32))
    bias_lists(1, step, _NONE, _NONE, _NONE32, vals[:0], np.zeros(1, dtype=np.int64),
               np.ones(1, dtype=np.int64), np.array([3], dtype=np.int64))


class _WarmTable:
    """A one-slot table's arrays, as :meth:`PlanPool.split` reads them (warm_up)."""

    stamps = np.zeros(1, dtype=np.int64)
    used_in = np.zeros(1, dtype=np.int64)
    step = 1
