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
anticipates (watched greedy rows with tokens that may write a whole form);
:meth:`PlanPool.flat_bans` and :meth:`PlanPool.flat_bias` gather the pooled rows' entries
as flat indices ``row * V + token`` (and the bias values), :meth:`PlanPool.ahead_sets`
the anticipated rows' token sets.

Arrays shared by many sids (the batch memoises a mask's ids and a state's bias) are
pooled once: the pool keeps a reference to each array it copied, keyed by its ``id``, so
the id cannot be reused while the entry stands. The pools are bounded
(:data:`MAX_POOLED`); past it the caller starts the plans over (:meth:`full`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

POOLED, INSIDE, AHEAD = 1, 2, 4  # per-sid flags: a pooled plan; inside a form; anticipate
MAX_POOLED = 1 << 24  # ids held by each pool before the plans start over (64 MiB each)


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
        old = self.flags.size
        for name in ("flags", "ban_at", "ban_n", "bias_at", "bias_n", "ahead_at", "ahead_n"):
            a = getattr(self, name)
            grown = np.zeros(n, dtype=a.dtype)
            grown[:old] = a[:old]
            setattr(self, name, grown)

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

    def split(self, codes: np.ndarray, flag_bits: int, watch: int, greedy: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(positions of the pooled rows, their sids, which of them the rollback check
        anticipates, positions of the rest) among ``codes`` (``Lanes.advance``'s:
        ``sid << flag_bits | lane flags``, or negative)."""
        pos = np.empty(codes.size, dtype=np.int64)
        sids = np.empty(codes.size, dtype=np.int64)
        ahead = np.empty(codes.size, dtype=np.bool_)
        rest = np.empty(codes.size, dtype=np.int64)
        n, m = _split(codes, self.flags, flag_bits, watch, greedy, pos, sids, ahead, rest)
        return pos[:n], sids[:n], ahead[:n], rest[:m]

    def ahead_sets(self, sids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each sid's count of tokens to anticipate, those tokens concatenated)."""
        return (self.ahead_n[sids],
                _gather(sids, np.zeros(sids.size, dtype=np.int64), self.ahead_at,
                        self.ahead_n, self._ahead.data[0]))

    def flat_bans(self, sids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Each sid's banned ids plus its row's offset (``row * V``), concatenated."""
        return _gather(sids, offsets, self.ban_at, self.ban_n, self._bans.data[0])

    def flat_bias(self, sids: np.ndarray, offsets: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(each sid's bias ids plus its row's offset, their values), concatenated."""
        ids, values = self._bias.data
        flat = _gather(sids, offsets, self.bias_at, self.bias_n, ids)
        return flat, _gather_values(sids, self.bias_at, self.bias_n, values, flat.size)


@njit(cache=True)
def _split(codes, flags, flag_bits, watch, greedy, pos, sids, ahead, rest):
    """A fast row is pooled when its sid's plan is, unless it is a watched row inside a
    form (the rollback check reads its mask); a watched greedy row with tokens to
    anticipate is pooled and marked in ``ahead``."""
    n = 0
    m = 0
    for k in range(codes.size):
        c = codes[k]
        if c >= 0:
            s = c >> flag_bits
            f = flags[s]
            watched = (c & watch) != 0
            if (f & POOLED) != 0 and not (watched and (f & INSIDE) != 0):
                pos[n] = k
                sids[n] = s
                ahead[n] = watched and (f & AHEAD) != 0 and (c & greedy) != 0
                n += 1
                continue
        rest[m] = k
        m += 1
    return n, m


@njit(cache=True)
def _gather(sids, offsets, at, length, data):
    total = 0
    for q in range(sids.size):
        total += length[sids[q]]
    flat = np.empty(total, dtype=np.int64)
    p = 0
    for q in range(sids.size):
        s = sids[q]
        a = at[s]
        off = offsets[q]
        for e in range(length[s]):
            flat[p] = off + data[a + e]
            p += 1
    return flat


@njit(cache=True)
def _gather_values(sids, at, length, data, total):
    vals = np.empty(total, dtype=np.float32)
    p = 0
    for q in range(sids.size):
        s = sids[q]
        a = at[s]
        for e in range(length[s]):
            vals[p] = data[a + e]
            p += 1
    return vals
