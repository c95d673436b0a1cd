"""Helpers for tests that drive two steering batches side by side over the same rows."""

from __future__ import annotations


def move_in_both(pairs, a: int, b: int, swap: bool) -> None:
    """``batch.move(a, b, swap)`` in each (batch, output lists) pair, with the output
    lists following their rows (a row moved onto another drops that one's list)."""
    for batch, outs in pairs:
        batch.move(a, b, swap)
        if swap:
            outs[a], outs[b] = outs[b], outs[a]
        else:
            outs[b], outs[a] = outs[a], []
