"""Argument normalisation shared by the dispatchers (small, no heavy imports)."""

from __future__ import annotations

import torch

GREEDY_EPS = 1e-5  # temperature below this => greedy row (same as vLLM's _SAMPLING_EPS)


def per_row(value, batch: int, dtype: torch.dtype, device: torch.device, name: str):
    """None -> None; scalar -> full [B]; tensor [B] (or [B, 1]) -> contiguous [B] of dtype."""
    if value is None:
        return None
    if isinstance(value, (int, float, bool)):
        return torch.full((batch,), value, dtype=dtype, device=device)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, a number or None")
    if (value.dtype == dtype and value.device == device and value.dim() == 1
            and value.numel() == batch and value.is_contiguous()):
        return value  # fast path: nothing to convert (the common case per decode step)
    t = value.reshape(-1)
    if t.numel() == 1 and batch != 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{name} must have {batch} entries, got {tuple(value.shape)}")
    return t.to(device=device, dtype=dtype).contiguous()


def csr(indptr, batch: int, device: torch.device, name: str, *arrays):
    """Validate a CSR block: indptr [B+1] int32 plus parallel [nnz] arrays (None allowed)."""
    if indptr.numel() != batch + 1:
        raise ValueError(f"{name}_indptr must have B+1 = {batch + 1} entries")
    out = [_as(indptr, torch.int32, device)]
    for arr, dtype in arrays:
        out.append(None if arr is None else _as(arr, dtype, device))
    return out


def _as(t: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if t.dtype == dtype and t.device == device and t.is_contiguous():
        return t
    return t.to(device=device, dtype=dtype).contiguous()


def check_logits(logits: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got shape {tuple(logits.shape)}")
    if logits.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"logits dtype {logits.dtype} not supported (fp32, bf16, fp16)")
    if logits.stride(1) != 1:
        raise ValueError("logits rows must be contiguous (stride(1) == 1)")
