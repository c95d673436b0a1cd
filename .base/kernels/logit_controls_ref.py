"""Reference for the fused logit controls: dense, obvious, any float dtype (tests use float64).

Returns a new tensor; the input is not modified. Stage order (same as vLLM's sampler):
bias -> repetition/presence/frequency penalties -> banned bitmask -> temperature.
"""

from __future__ import annotations

import torch

from ._args import GREEDY_EPS
from .bitmask import unpack_token_bitmask


def _dense_from_csr(indptr, token_ids, values, batch: int, vocab: int, dtype) -> torch.Tensor:
    """Scatter a CSR list into a dense [B, V] tensor (duplicates summed, ids outside [0, V) dropped)."""
    dense = torch.zeros(batch, vocab, dtype=dtype, device=token_ids.device)
    counts = (indptr[1:] - indptr[:-1]).to(torch.long)
    rows = torch.repeat_interleave(torch.arange(batch, device=token_ids.device), counts)
    ids = token_ids.to(torch.long)
    keep = (ids >= 0) & (ids < vocab)
    dense.index_put_((rows[keep], ids[keep]), values.to(dtype)[keep], accumulate=True)
    return dense


def logit_controls_reference(
    logits: torch.Tensor,
    *,
    bias_indptr=None,
    bias_token_ids=None,
    bias_values=None,
    banned_bitmask=None,
    penalty_indptr=None,
    penalty_token_ids=None,
    penalty_output_counts=None,
    penalty_in_prompt=None,
    repetition_penalty=None,
    presence_penalty=None,
    frequency_penalty=None,
    temperature=None,
    banned_indptr=None,
    banned_token_ids=None,
) -> torch.Tensor:
    x = logits.clone()
    b, v = x.shape
    dt = x.dtype
    if bias_indptr is not None:
        x += _dense_from_csr(bias_indptr, bias_token_ids, bias_values, b, v, dt)
    has_pen = any(p is not None for p in (repetition_penalty, presence_penalty, frequency_penalty))
    if penalty_indptr is not None and has_pen:
        n = penalty_token_ids.numel()
        counts = penalty_output_counts if penalty_output_counts is not None else torch.zeros(n)
        prompt = penalty_in_prompt if penalty_in_prompt is not None else torch.zeros(n)
        c = _dense_from_csr(penalty_indptr, penalty_token_ids, counts.to(dt), b, v, dt)
        p = _dense_from_csr(penalty_indptr, penalty_token_ids, (prompt != 0).to(dt), b, v, dt)
        seen = (p > 0) | (c > 0)
        if repetition_penalty is not None:
            r = repetition_penalty.to(dt).view(b, 1)
            x = torch.where(seen, torch.where(x > 0, x / r, x * r), x)
        if frequency_penalty is not None:
            x = x - frequency_penalty.to(dt).view(b, 1) * c
        if presence_penalty is not None:
            x = x - presence_penalty.to(dt).view(b, 1) * (c > 0).to(dt)
    if banned_bitmask is not None:
        x = x.masked_fill(unpack_token_bitmask(banned_bitmask, v), float("-inf"))
    if banned_indptr is not None:
        ones = torch.ones(banned_token_ids.numel(), dtype=dt, device=x.device)
        listed = _dense_from_csr(banned_indptr, banned_token_ids, ones, b, v, dt) > 0
        x = x.masked_fill(listed, float("-inf"))
    if temperature is not None:
        t = temperature.to(dt).view(b, 1)
        x = x / torch.where(t < GREEDY_EPS, torch.ones_like(t), t)
    return x
