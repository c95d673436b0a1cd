"""The rollback check's token sets, padded to one width, as flat indices into a batch's
logits, memoised per row and set.

``argmax_if_in`` gathers every checked row's token set in one take. A set (a spec's
whole-form list, a mask's few banned ids: cached arrays) is padded to a fixed width with
repeats of its first id, which leave its maximum unchanged (:func:`padded_ids`). On
C-contiguous logits the take reads flat indices ``row * vocab + id``; a row usually checks
the same set step after step at the same batch position, so :class:`FlatIndex` computes
them once and a step only concatenates them.
"""

from __future__ import annotations

import numpy as np

# Entries kept per memo; a memo is cleared when full (each entry holds its id array alive,
# so an id() is never reused while its entry exists)
MAX_PADDED_SETS = 4096
MAX_FLAT_ENTRIES = 16384

_PADDED: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def padded_ids(ids: np.ndarray, width: int) -> np.ndarray:
    """``ids`` (1 to ``width`` of them) as ``width`` intp ids, the rest repeats of the
    first (read-only; memoised per array and width)."""
    key = (id(ids), width)
    hit = _PADDED.get(key)
    if hit is not None and hit[0] is ids:
        return hit[1]
    out = np.full(width, ids[0], dtype=np.intp)
    out[: ids.size] = ids
    out.flags.writeable = False
    if len(_PADDED) >= MAX_PADDED_SETS:
        _PADDED.clear()
    _PADDED[key] = (ids, out)
    return out


class FlatIndex:
    """``padded(row, ids, vocab, width)`` -> int64 ``row * vocab + padded_ids(ids,
    width)`` (read-only; memoised on the row, the array's identity, vocab and width)."""

    def __init__(self, capacity: int = MAX_FLAT_ENTRIES):
        self.capacity = capacity
        self._memo: dict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def padded(self, row: int, ids: np.ndarray, vocab: int, width: int) -> np.ndarray:
        key = (row, id(ids), vocab, width)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is ids:
            return hit[1]
        flat = padded_ids(ids, width).astype(np.int64) + row * vocab
        flat.flags.writeable = False
        if len(self._memo) >= self.capacity:
            self._memo.clear()
        self._memo[key] = (ids, flat)
        return flat

    def __len__(self) -> int:
        return len(self._memo)
