"""One host-to-device copy per decode step for the steering plan's small arrays.

A step's plan is a handful of int32 / float32 (and int64) arrays (the rows' mask slots,
bias and ban lists, penalties, the rows to control, the tokens to force). Sent one ``.to(device)`` at
a time, each costs a pageable copy and a launch: tens of microseconds a step on a GPU
host. :class:`StepUpload` packs them into one page-locked host buffer, sends that with
one asynchronous copy, and hands back device views of it.

Reuse is safe without synchronising the host each step: the host buffers alternate, and
before one is written again the event recorded after its last copy is waited on (the copy
has long finished by then: a step reads the sampled tokens back, which waits for it). The
device buffers alternate too; a copy into one is ordered after the kernels that read it
a step earlier, on the same stream.
"""

from __future__ import annotations

import numpy as np
import torch

_ALIGN = 4  # entries (16 bytes): each array starts aligned for vector loads
_SENDABLE = (np.dtype(np.int32), np.dtype(np.float32), np.dtype(np.int64))
_TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.int64): torch.int64}


class StepUpload:
    def __init__(self, device: torch.device | str, *, pack: bool | None = None):
        """``pack``: pack the arrays into one buffer (default: on any device but the CPU,
        where tensors share the arrays' memory instead; True there exercises the packing
        in tests, with plain host buffers)."""
        self.device = torch.device(device)
        self.pack = self.device.type != "cpu" if pack is None else pack
        self._cuda = self.device.type == "cuda"
        self._host: list[torch.Tensor | None] = [None, None]
        self._dev: list[torch.Tensor | None] = [None, None]
        self._views: list[np.ndarray | None] = [None, None]  # the host buffers' numpy views
        self._events: list[torch.cuda.Event | None] = [None, None]
        self._turn = 0
        self.copies = 0  # host-to-device copies made (for tests and logs)

    def send(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Device tensors with the contents, dtypes and shapes of ``arrays`` (each int32,
        float32 or int64, 1-D), sent in one copy. On the CPU: tensors sharing the arrays'
        memory. The tensors stay valid until the second ``send`` after this one."""
        if not self.pack:
            return {k: torch.from_numpy(a) for k, a in arrays.items()}
        spans, n = [], 0
        for a in arrays.values():
            if a.dtype not in _SENDABLE or a.ndim != 1:
                raise TypeError(f"step arrays are 1-D int32/float32/int64, got {a.dtype} "
                                f"{a.shape}")
            size = a.size * (a.dtype.itemsize // 4)  # (int32 entries: an int64 takes 2)
            spans.append((n, size))
            n += -(-size // _ALIGN) * _ALIGN
        if n == 0:
            return {k: torch.from_numpy(a).to(self.device) for k, a in arrays.items()}
        t = self._turn
        self._turn ^= 1
        host, dev = self._buffers(t, n)
        view = self._views[t]
        for (at, size), a in zip(spans, arrays.values(), strict=True):
            view[at:at + size] = a.view(np.int32)  # (an int64 array: its two halves)
        dev[:n].copy_(host[:n], non_blocking=self._cuda)
        if self._cuda:
            event = self._events[t]
            if event is None:
                event = self._events[t] = torch.cuda.Event()
            event.record()
        self.copies += 1
        # all the views in one call (each torch call costs microseconds on a GPU host)
        pieces = []  # (the array, its padding) for each array, then the buffer's rest
        for _, size in spans:
            pieces += (size, -size % _ALIGN)
        pieces.append(dev.numel() - n)
        parts = dev.split_with_sizes(pieces)[:-1:2]
        out = {}
        for (key, a), part in zip(arrays.items(), parts, strict=True):
            out[key] = part if a.dtype == np.int32 else part.view(_TORCH_DTYPE[a.dtype])
        return out

    def _buffers(self, t: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Buffer pair ``t``, holding at least ``n`` entries, its last copy finished."""
        event = self._events[t]
        if event is not None:
            event.synchronize()
        host = self._host[t]
        if host is None or host.numel() < n:
            size = max(1024, 1 << (n - 1).bit_length())
            host = self._host[t] = torch.empty(size, dtype=torch.int32,
                                               pin_memory=self._cuda)
            self._views[t] = host.numpy()
            self._dev[t] = torch.empty(size, dtype=torch.int32, device=self.device)
        return host, self._dev[t]
