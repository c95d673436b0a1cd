"""Reading back, before a step's forward pass is queued, what runner V2 committed for some
request slots: each slot's length (``total_len``) and newest token (the token history at
``total_len - 1``).

Runner V2's ``post_update`` writes both on the device at the end of each step; a read
queued after it and before the next forward pass (one gather of both into one device
buffer, one asynchronous copy to a page-locked host buffer, one event) is waited for on
its own, without waiting for that forward pass. :class:`StagedFedRead` keeps the buffers
and the slots' device indices between steps. It imports nothing from vLLM, so that a GPU
machine without vLLM can check it (``benchmarks/steering_device_check.py``); the runner-V2
adapter (:mod:`.logits_processor_v2`) uses it from ``apply_staged_writes``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class FedRead(NamedTuple):
    """A read queued by :meth:`StagedFedRead.start`."""

    place: np.ndarray  # per slot: its column in ``host`` (-1: not read)
    event: torch.cuda.Event | None  # recorded after the copy (None off CUDA: done)
    host: np.ndarray  # [2, n]: the read slots' lengths, then their newest tokens

    def wait(self) -> None:
        """Wait for the read only (on CUDA: its event; what was queued after it, such as
        the forward pass, goes on)."""
        if self.event is not None:
            self.event.synchronize()


class StagedFedRead:
    def __init__(self) -> None:
        self._slots: tuple | None = None  # (slots, on the device, their offsets, places)
        self._dev: torch.Tensor | None = None  # the read's device buffer
        self._host: torch.Tensor | None = None  # and its page-locked host buffer
        self._np: np.ndarray | None = None
        self._event: torch.cuda.Event | None = None

    def start(self, history: torch.Tensor, total_len: torch.Tensor, slots: np.ndarray,
              n_slots: int) -> FedRead | None:
        """Queue the read of ``slots`` (ascending, each below ``n_slots``): ``history``
        [slots, max length] (contiguous), ``total_len`` [slots], on one device. None
        when there is nothing to read, or ``history`` is not a contiguous 2-D tensor."""
        if not slots.size or history.dim() != 2 or not history.is_contiguous():
            return None
        cuda = history.is_cuda
        cached = self._slots
        if cached is None or cached[3].size != n_slots or not np.array_equal(cached[0], slots):
            # the slots on the device, and each slot's row offset in the flat history
            # less one (its newest token is at offset + total_len - 1); kept while the
            # slots stay the same (sent from page-locked memory: no wait)
            host_slots = torch.from_numpy(slots.astype(np.int64))
            if cuda:
                host_slots = host_slots.pin_memory()
            at = host_slots.to(history.device, non_blocking=cuda)
            place = np.full(n_slots, -1, dtype=np.int64)
            place[slots] = np.arange(slots.size)
            cached = self._slots = (slots.copy(), at, at * history.stride(0) - 1, place)
        _, at, base, place = cached
        n = slots.size
        dev = self._dev  # (in the history's dtype: int32 in vLLM)
        if dev is None or dev.numel() < 2 * n or dev.dtype != history.dtype:
            size = max(64, 1 << (2 * n - 1).bit_length())
            dev = self._dev = torch.empty(size, dtype=history.dtype, device=history.device)
            self._host = torch.empty(size, dtype=history.dtype, pin_memory=cuda)
            self._np = self._host.numpy()
            self._event = torch.cuda.Event() if cuda else None
        lengths, newest = dev[:n], dev[n:2 * n]
        if total_len.dtype == history.dtype:
            torch.index_select(total_len, 0, at, out=lengths)
        else:
            lengths.copy_(total_len.index_select(0, at))
        # (a slot with no token yet reads its row's first entry, never the row before)
        torch.index_select(history.view(-1), 0, base + lengths.clamp(min=1), out=newest)
        self._host[:2 * n].copy_(dev[:2 * n], non_blocking=cuda)
        if self._event is not None:
            self._event.record()
        return FedRead(place, self._event, self._np[:2 * n].reshape(2, n))
