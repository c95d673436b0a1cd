"""Applying a packed ban mask and sparse biases to logits.

Uses the fused op ``greyelephant.kernels.apply_logit_controls`` when it is importable (the
kernels package: Triton on CUDA, vectorised torch on CPU), otherwise the small torch
reference below, which has the same semantics: ``x += bias`` for the CSR entries, then
banned tokens ``-> -inf`` (so a ban always wins over a bias).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_OP: Callable | None = None


def reference_apply_logit_controls(
    logits: torch.Tensor,
    *,
    banned_bitmask: torch.Tensor | None = None,
    bias_indptr: torch.Tensor | None = None,
    bias_token_ids: torch.Tensor | None = None,
    bias_values: torch.Tensor | None = None,
) -> torch.Tensor:
    b, v = logits.shape
    if bias_indptr is not None and bias_token_ids is not None and bias_token_ids.numel():
        dev = logits.device
        lengths = (bias_indptr[1:] - bias_indptr[:-1]).to(device=dev, dtype=torch.long)
        rows = torch.repeat_interleave(torch.arange(b, device=dev), lengths)
        ids = bias_token_ids.to(device=dev, dtype=torch.long)
        keep = (ids >= 0) & (ids < v)
        rows, ids = rows[keep], ids[keep]
        vals = bias_values.to(device=dev)[keep]
        logits[rows, ids] = (logits[rows, ids].float() + vals.float()).to(logits.dtype)
    if banned_bitmask is not None:
        words = banned_bitmask.to(device=logits.device, dtype=torch.int32).contiguous()
        as_bytes = words.view(torch.uint8)  # little-endian byte order
        shifts = torch.arange(8, dtype=torch.uint8, device=logits.device)
        bits = ((as_bytes.unsqueeze(-1) >> shifts) & 1).view(b, -1)[:, :v].bool()
        logits.masked_fill_(bits, float("-inf"))
    return logits


def apply_logit_controls(logits: torch.Tensor, **kw) -> torch.Tensor:
    """Dispatch to the kernels package's fused op, or to the reference above."""
    global _OP
    if _OP is None:
        try:
            from greyelephant.kernels import apply_logit_controls as op  # type: ignore
        except Exception:  # kernels package absent (e.g. control used stand-alone)
            op = reference_apply_logit_controls
        _OP = op
    return _OP(logits, **kw)
