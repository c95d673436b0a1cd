"""The loop guard's state for many rows at once, in flat arrays, stepped by compiled code.

:class:`NgramTable` holds what :class:`.loop_guard.NgramGuard` holds per row — each
(n-1)-gram of the row's generated tokens and the tokens that followed it — for every row
of a batch, in one open-addressing hash table keyed by (row uid, packed context).
:meth:`NgramTable.push_many` pushes one new token into each of many rows and returns the
rows' bans (HF's ``no_repeat_ngram_size`` semantics, exactly as ``NgramGuard``) in one
call of a numba-compiled loop: a decode step then costs one call for the whole batch, not
one Python call and a few cold dict lookups per row. (numba is a dependency of vLLM, so
every install has it; vLLM compiles its own n-gram proposer with it.)

The layout, all int64:

* a row (a *handle*) is a row of ``_rows``: its packed context (:data:`TOKEN_BITS` bits
  per token, the oldest highest, so ``(n - 1) * TOKEN_BITS <= 63``: n <= 4, which
  :meth:`NgramTable.fits` tells; the caller keeps ``NgramGuard`` for longer n-grams), how
  many tokens the context holds, n - 1, the context's bit mask, and a *uid* that a reset
  replaces;
* an entry of the hash table ``_table`` is (uid, context, token): the one token that
  followed, or :data:`SEVERAL` when two or more did (the tokens are then in a Python
  dict: rare); linear probing from a multiplicative hash. Entries of a closed or reset row
  stay until the next rebuild (when more than 1 / :data:`MAX_LOAD` of the table is full),
  which keeps the open rows' entries only.

Token ids must lie in ``[0, 2**TOKEN_BITS)``; others raise ValueError.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numba import njit

TOKEN_BITS = 21  # bits per token id in a packed context (vocabularies up to 2M tokens)
TOKEN_LIMIT = 1 << TOKEN_BITS
CONTEXT_BITS = 63  # a packed context fits a non-negative int64
MIN_CAPACITY = 1 << 12
MAX_LOAD = 2  # the table is rebuilt when more than 1 / MAX_LOAD of it is full
SEVERAL = -1  # an entry's token when two or more tokens followed its context
NONE = -2  # no entry (push_many's outputs)
_EMPTY = -1  # an empty entry's uid, a free handle's uid
_NOTHING: frozenset[int] = frozenset()
# columns of _rows
CTX, LEN, NEED, MASK, UID = range(5)
# columns of _table
K_UID, K_CTX, K_VAL = range(3)
# columns of _push_many's output, each list packed at the top: the rows with bans (k, a
# token or SEVERAL), and the rows whose push displaced a follower (the token or SEVERAL
# it displaced, the context it followed, the row's uid, the new token)
O_HIT, O_WAS = 0, 2
_OUT_COLUMNS = 6
_NO_OUTPUT = np.zeros((0, _OUT_COLUMNS), dtype=np.int64)
_WARM = False  # the kernels are compiled (warm_up)


class NgramTable:
    """Loop-guard state (HF ``no_repeat_ngram_size`` over generated tokens) of many rows,
    each opened with its own n (2 <= n <= 4). Not thread-safe (one engine thread)."""

    def __init__(self, min_capacity: int = MIN_CAPACITY):
        """``min_capacity``: the hash table's smallest size in entries (a power of two is
        used); it grows, and is rebuilt, as rows add n-grams."""
        self._min_bits = max(4, (max(min_capacity, 1) - 1).bit_length())
        self._rows = np.zeros((0, 5), dtype=np.int64)
        self._free: list[int] = []
        self._next_uid = 0
        self._alloc(self._min_bits)
        # (uid, context) -> the tokens that followed, for entries holding SEVERAL
        self._several: dict[tuple[int, int], set[int]] = {}

    @staticmethod
    def warm_up() -> None:
        """Compile the kernels now (numba compiles at a kernel's first call, or loads it
        from its on-disk cache), not inside a decode step; once per process."""
        global _WARM
        if _WARM:
            return
        _WARM = True
        table = NgramTable(min_capacity=16)
        h = table.open(2)
        table.extend(h, [1, 2, 1])
        table.push_many(np.array([h], dtype=np.int64), np.array([2], dtype=np.int64))
        table.banned(h)
        table._rebuild(0)

    # -- rows ----------------------------------------------------------------------------
    @staticmethod
    def fits(n: int) -> bool:
        """Whether rows with n-grams of size ``n`` can live here."""
        return n >= 2 and (n - 1) * TOKEN_BITS <= CONTEXT_BITS

    def open(self, n: int) -> int:
        """A new, empty row guarding n-grams of size ``n``; returns its handle."""
        if not self.fits(n):
            raise ValueError(
                f"NgramTable holds n-grams of size 2..{CONTEXT_BITS // TOKEN_BITS + 1}")
        if not self._free:
            self._grow_rows()
        h = self._free.pop()
        self._rows[h, NEED] = n - 1
        self._rows[h, MASK] = (1 << ((n - 1) * TOKEN_BITS)) - 1
        self.reset(h)
        return h

    def close(self, h: int) -> None:
        """The row is gone: its handle is free again (its entries go at the next
        rebuild)."""
        if self._rows[h, UID] != _EMPTY:
            self._rows[h, UID] = _EMPTY
            self._free.append(h)

    def reset(self, h: int) -> None:
        """The row starts over with no tokens."""
        self._rows[h, UID] = self._next_uid
        self._next_uid += 1
        self._rows[h, CTX] = 0
        self._rows[h, LEN] = 0

    @property
    def rows(self) -> int:
        """Open rows."""
        return int((self._rows[:, UID] != _EMPTY).sum())

    def _grow_rows(self) -> None:
        old = self._rows.shape[0]
        new = max(16, 2 * old)
        rows = np.zeros((new, 5), dtype=np.int64)
        rows[:old] = self._rows
        rows[old:, UID] = _EMPTY
        self._rows = rows
        self._free.extend(range(new - 1, old - 1, -1))

    # -- pushing tokens ------------------------------------------------------------------
    def extend(self, h: int, tokens: Iterable[int]) -> None:
        """Append the tokens to row ``h``, in order (one compiled call)."""
        t = np.fromiter(tokens, dtype=np.int64)
        if t.size:
            self._push(np.full(t.size, h, dtype=np.int64), t)

    def banned(self, h: int) -> set[int] | frozenset[int]:
        """Tokens that would complete an n-gram row ``h`` already holds (do not mutate)."""
        v = _lookup(self._rows, self._table, self._bits, h)
        return self._bans(h, v)

    def push_many(self, handles: np.ndarray, tokens: np.ndarray
                  ) -> list[tuple[int, set[int] | frozenset[int]]]:
        """Append ``tokens[k]`` to row ``handles[k]`` (int64 arrays, distinct handles),
        then return ``[(k, bans)]`` for the rows whose bans are not empty (ascending k;
        ``bans``: do not mutate)."""
        return [(k, self._bans(int(handles[k]), v))
                for k, v in self.push_hits(handles, tokens)]

    def push_hits(self, handles: np.ndarray, tokens: np.ndarray) -> list[list[int]]:
        """:meth:`push_many` with its bans as entries: ``[[k, token or SEVERAL]]`` (the
        tokens of a SEVERAL: :meth:`followers` of ``handles[k]``), without a set per row."""
        out, hits = self._push(handles, tokens)
        return out[:hits, O_HIT:O_HIT + 2].tolist() if hits else []

    def followers(self, h: int) -> set[int] | frozenset[int]:
        """The tokens that followed row ``h``'s context, after :meth:`push_hits` gave it
        SEVERAL (do not mutate)."""
        return self._bans(h, SEVERAL)

    def _push(self, handles: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, int]:
        """Push ``tokens[k]`` into row ``handles[k]``, in order (a handle may repeat);
        returns the output of :func:`_push_many` and how many rows have bans after their
        push."""
        if not tokens.size:
            return _NO_OUTPUT, 0
        if self._used + tokens.size > (1 << self._bits) // MAX_LOAD:
            self._rebuild(tokens.size)
        out = np.empty((tokens.size, _OUT_COLUMNS), dtype=np.int64)
        added, hits, displaced = _push_many(self._rows, self._table, self._bits, handles,
                                            tokens, out)
        if added < 0:
            raise ValueError(f"token id {int(tokens[-added - 1])} outside "
                             f"[0, 2**{TOKEN_BITS})")
        self._used += added
        # a context got another follower: keep its tokens in the dict
        for was, ctx, uid, t in out[:displaced, O_WAS:O_WAS + 4].tolist():
            if was == SEVERAL:
                self._several[(uid, ctx)].add(t)
            else:
                self._several[(uid, ctx)] = {was, t}
        return out, hits

    def _bans(self, h: int, v: int) -> set[int] | frozenset[int]:
        if v == NONE:
            return _NOTHING
        if v != SEVERAL:
            return frozenset((v,))
        return self._several[(int(self._rows[h, UID]), int(self._rows[h, CTX]))]

    # -- the hash table ------------------------------------------------------------------
    def _alloc(self, bits: int) -> None:
        self._bits = bits
        self._table = np.zeros((1 << bits, 3), dtype=np.int64)
        self._table[:, K_UID] = _EMPTY
        self._used = 0

    def _rebuild(self, extra: int) -> None:
        """Keep the open rows' entries only, in a table at most 1 / (2 * MAX_LOAD) full
        after ``extra`` more keys."""
        live = self._rows[self._rows[:, UID] != _EMPTY, UID]
        keep = self._table[np.isin(self._table[:, K_UID], live)]
        bits = max(self._min_bits, (2 * MAX_LOAD * (keep.shape[0] + extra) - 1).bit_length())
        self._alloc(bits)
        _insert_all(self._table, bits, keep)
        self._used = keep.shape[0]
        alive = set(live.tolist())
        self._several = {key: v for key, v in self._several.items() if key[0] in alive}


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constants of the hash (splitmix64's)
_MUL = np.uint64(0xBF58476D1CE4E5B9)


@njit(cache=True)
def _start(uid, ctx, bits):
    """Entry index where a key's probe starts: the top bits of a multiplicative hash."""
    h = (np.uint64(ctx) ^ (np.uint64(uid) * _MIX)) * _MUL
    return np.int64(h >> np.uint64(64 - bits))


@njit(cache=True)
def _probe(table, bits, uid, ctx):
    """The key's entry index, or -(empty entry where the probe ended) - 1."""
    wrap = (1 << bits) - 1
    p = _start(uid, ctx, bits)
    while True:
        u = table[p, K_UID]
        if u == _EMPTY:
            return -p - 1
        if u == uid and table[p, K_CTX] == ctx:
            return p
        p = (p + 1) & wrap


@njit(cache=True)
def _push_many(rows, table, bits, handles, tokens, out):
    """Push ``tokens[k]`` into row ``handles[k]``, in order. ``out`` gets, packed at the
    top, the rows with bans after their push (columns O_HIT: k, the entry's token) and
    the rows whose n-gram displaced a follower (O_WAS: the token the entry held, its
    context, the row's uid, the new token). Returns (entries added, rows with bans,
    rows that displaced a follower);
    with a token outside [0, 2**TOKEN_BITS), (-k - 1, 0, 0) for the first such one and
    nothing changed."""
    for k in range(tokens.size):
        if tokens[k] < 0 or tokens[k] >= TOKEN_LIMIT:
            return -k - 1, 0, 0
    added = 0
    hits = 0
    displaced = 0
    for k in range(handles.size):
        h = handles[k]
        t = tokens[k]
        ctx = rows[h, CTX]
        length = rows[h, LEN]
        need = rows[h, NEED]
        uid = rows[h, UID]
        new_ctx = np.int64(((np.uint64(ctx) << np.uint64(TOKEN_BITS)) | np.uint64(t))
                           & np.uint64(rows[h, MASK]))
        rows[h, CTX] = new_ctx
        if length == need:  # the row held a whole context: record (context, token)
            p = _probe(table, bits, uid, ctx)
            if p < 0:
                p = -p - 1
                table[p, K_UID] = uid
                table[p, K_CTX] = ctx
                table[p, K_VAL] = t
                added += 1
            elif table[p, K_VAL] != t:
                out[displaced, O_WAS] = table[p, K_VAL]  # a token, or SEVERAL
                out[displaced, O_WAS + 1] = ctx
                out[displaced, O_WAS + 2] = uid
                out[displaced, O_WAS + 3] = t
                table[p, K_VAL] = SEVERAL
                displaced += 1
        else:
            length += 1
            rows[h, LEN] = length
        if length == need:
            p = _probe(table, bits, uid, new_ctx)
            if p >= 0:
                out[hits, O_HIT] = k
                out[hits, O_HIT + 1] = table[p, K_VAL]
                hits += 1
    return added, hits, displaced


@njit(cache=True)
def _lookup(rows, table, bits, h):
    """Row ``h``'s bans as an entry's token (a token, SEVERAL) or NONE."""
    if rows[h, LEN] < rows[h, NEED]:
        return NONE
    p = _probe(table, bits, rows[h, UID], rows[h, CTX])
    return table[p, K_VAL] if p >= 0 else NONE


@njit(cache=True)
def _insert_all(table, bits, entries):
    """Insert entries (distinct keys) into an empty table."""
    for i in range(entries.shape[0]):
        p = -_probe(table, bits, entries[i, K_UID], entries[i, K_CTX]) - 1
        table[p] = entries[i]
