"""A device-resident table of packed ban masks, filled lazily, with a memory budget.

The ban automaton's masks depend only on (compiled spec, automaton state, mask kind), and
a batch's rows revisit the same states step after step. Instead of copying every steered
row's whole mask from the host each step, the masks live on the device in one table
``[slots, words]`` (int32, the layout of :mod:`greyelephant.kernels.bitmask`); a step sends
only one slot index per row, and the kernels gather the rows' masks on the device
(``apply_logit_controls(mask_table=..., mask_rows=...)``).

* Slot 0 is all zeros: rows without a mask point there.
* A mask is uploaded the first time its key is used (one small host-to-device copy).
* The table grows by doubling up to ``budget_bytes`` (default 256 MiB: 13.8 K states of a
  152 K vocabulary, 43 K of SmolLM2's 49 K); past that, the least recently used slots are
  reused (by step: slots last used in the same step rank as equals), never one that the
  current step already handed out.
* A hit costs one dict lookup and one write (the step that last used the slot, in
  :attr:`MaskTable.used_in`): the steps run it once per steered row off the plan pool.
  Recency is read from those steps only when a slot must be reused.
* Each upload gives its slot a new owner stamp (:attr:`MaskTable.stamps`, unique across
  tables): a caller that remembers a (slot, stamp) pair instead of the key — the plan
  pool, for the lanes' step states — knows the slot still holds its mask while the stamps
  match, and marks it used this step itself (:attr:`MaskTable.used_in`).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable

import numpy as np
import torch

DEFAULT_BUDGET_BYTES = 256 << 20
INITIAL_SLOTS = 256
_STAMPS = itertools.count(1)  # owner stamps of uploads, never reused (0: slot 0's)


class MaskTable:
    def __init__(self, n_words: int, device: torch.device | str = "cpu",
                 budget_bytes: int = DEFAULT_BUDGET_BYTES):
        self.n_words = n_words
        self.device = torch.device(device)
        self.max_slots = max(2, budget_bytes // (4 * n_words))
        self.table = torch.zeros(min(INITIAL_SLOTS, self.max_slots), n_words, dtype=torch.int32,
                                 device=self.device)
        self._slots: dict[Hashable, int] = {}  # key -> slot
        self._keys: dict[int, Hashable] = {}  # slot -> key
        # slot -> the step that last handed it out (slot 0, never reused: a step of its own)
        self.used_in = np.zeros(self.table.shape[0], dtype=np.int64)
        self.stamps = np.zeros(self.table.shape[0], dtype=np.int64)  # slot -> its upload's
        self._free = list(range(self.table.shape[0] - 1, 0, -1))  # slot 0: zeros
        self.step = 0
        self.uploads = 0
        self.evictions = 0  # slots taken back from a key (for tests and logs)

    def begin_step(self) -> None:
        self.step += 1

    def slot(self, key: Hashable, words: np.ndarray) -> int:
        """The slot holding ``words`` (uploaded under ``key`` the first time)."""
        s = self._slots.get(key)
        if s is None:
            s = self._take()
            w = min(self.n_words, words.size)
            self.table[s, :w] = torch.from_numpy(np.ascontiguousarray(words[:w])).to(
                self.device, non_blocking=False)
            if w < self.n_words:
                self.table[s, w:] = 0
            self._slots[key] = s
            self._keys[s] = key
            self.stamps[s] = next(_STAMPS)
            self.uploads += 1
        self.used_in[s] = self.step
        return s

    def _take(self) -> int:
        if self._free:
            return self._free.pop()
        if self.table.shape[0] < self.max_slots:
            old = self.table.shape[0]
            grown = torch.zeros(min(2 * old, self.max_slots), self.n_words, dtype=torch.int32,
                                device=self.device)
            grown[:old] = self.table
            self.table = grown
            for name in ("used_in", "stamps"):
                a = np.zeros(grown.shape[0], dtype=np.int64)
                a[:old] = getattr(self, name)
                setattr(self, name, a)
            self._free = list(range(grown.shape[0] - 1, old, -1))
            return old
        # the least recently used slot (slot 0 excluded), unless this step handed it out
        self.used_in[0] = self.step
        s = int(np.argmin(self.used_in))
        if self.used_in[s] == self.step:
            raise RuntimeError("mask table: every slot is in use by this step; raise the "
                               "budget")
        del self._slots[self._keys.pop(s)]
        self.evictions += 1
        return s

    @property
    def bytes(self) -> int:
        return self.table.numel() * 4
