"""Flat indices of token ids into a batch's logits storage, memoised per row and id array.

A steered decode step on the CPU applies each stage (prefer biases, banned ids, the
rollback check's gathers) to every row at once through flat indices ``row * vocab + id``
into the row-major [B, vocab] logits. The id arrays a row uses are cached ones (a spec's
bias lists per automaton state, a mask's banned-id list, a whole-form list), so a row
usually reuses the same arrays step after step, at the same batch position: its flat
indices are computed once and a step only concatenates them.
"""

from __future__ import annotations

import numpy as np

# Entries kept; the memo is cleared when full (each entry holds its id array alive, so an
# id() is never reused while its entry exists)
MAX_FLAT_ENTRIES = 16384


class FlatIndex:
    """``flat(row, ids, vocab)`` -> int64 ``row * vocab + ids`` (read-only; memoised on
    (row, the array's identity, vocab)). Ids must lie in [0, vocab): callers pass id
    arrays already known to (see ``SteeringBatch.apply``)."""

    def __init__(self, capacity: int = MAX_FLAT_ENTRIES):
        self.capacity = capacity
        self._memo: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, row: int, ids: np.ndarray, vocab: int) -> np.ndarray:
        key = (row, id(ids), vocab)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is ids:
            return hit[1]
        flat = ids.astype(np.int64) + row * vocab
        flat.flags.writeable = False
        if len(self._memo) >= self.capacity:
            self._memo.clear()
        self._memo[key] = (ids, flat)
        return flat

    def padded(self, row: int, ids: np.ndarray, vocab: int, width: int) -> np.ndarray:
        """``row * vocab + ids`` padded to ``width`` entries with repeats of the first
        (1 to ``width`` ids; the repeats leave a maximum over them unchanged), memoised
        like :meth:`__call__`."""
        key = (row, id(ids), vocab, width)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is ids:
            return hit[1]
        flat = np.full(width, int(ids[0]) + row * vocab, dtype=np.int64)
        flat[: ids.size] = ids
        flat[: ids.size] += row * vocab
        flat.flags.writeable = False
        if len(self._memo) >= self.capacity:
            self._memo.clear()
        self._memo[key] = (ids, flat)
        return flat

    def __len__(self) -> int:
        return len(self._memo)
