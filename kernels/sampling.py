"""Dispatcher for the sampler: min-p / top-k / top-p filtering + Gumbel-max sampling.

No full sort. Both paths compute, per row, ``argmax over kept tokens of (x/T + g)``
with counter-based Gumbel noise ``g`` (see rng.py) and find the kept set by an exact
pivot search (see sampling_torch.py); top-k's threshold comes from ``torch.topk``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._args import GREEDY_EPS, check_logits, per_row
from .rng import row_keys


@dataclass
class RowParams:
    """Per-row float32/int32 tensors [B] consumed by both sampling paths."""

    inv_temp: torch.Tensor  # 1/T, or 1 for greedy rows and pre-scaled logits
    noise_scale: torch.Tensor  # 0 for greedy rows, else 1
    theta_k: torch.Tensor  # raw-logit top-k threshold (k-th largest), -inf if off
    top_p: torch.Tensor  # 1 if off
    log_min_p: torch.Tensor  # log(min_p), -inf if off
    key_a: torch.Tensor  # int32 noise key words
    key_b: torch.Tensor
    check_top_p: bool  # some row may have top_p < 1


def prepare_rows(logits, *, temperature=None, top_k=None, top_p=None, min_p=None, seeds=None,
                 steps=None, generator=None, logits_scaled=False) -> RowParams:
    b, v = logits.shape
    dev = logits.device
    f32 = torch.float32
    temp = per_row(temperature, b, f32, dev, "temperature")
    if temp is None:
        greedy = torch.zeros(b, dtype=torch.bool, device=dev)
        inv_temp = torch.ones(b, dtype=f32, device=dev)
    else:
        greedy = temp < GREEDY_EPS
        inv_temp = torch.where(greedy | logits_scaled, torch.ones_like(temp), 1.0 / temp)
    noise_scale = (~greedy).to(f32)

    theta_k = torch.full((b,), float("-inf"), dtype=f32, device=dev)
    if top_k is not None:
        if isinstance(top_k, int):
            kmax = top_k if 0 < top_k < v else 0
            k = torch.full((b,), kmax, dtype=torch.long, device=dev)
        else:
            k = per_row(top_k, b, torch.long, dev, "top_k")
            k = torch.where((k <= 0) | (k >= v), torch.zeros_like(k), k)
            kmax = int(k.max().item()) if b else 0  # one sync: torch.topk needs a Python int
        if kmax > 0:
            vals = torch.topk(logits, kmax, dim=1, sorted=True).values.to(f32)
            kth = vals.gather(1, (k.clamp(min=1) - 1).view(b, 1)).view(b)
            theta_k = torch.where((k > 0) & ~greedy, kth, theta_k)

    tp = per_row(top_p, b, f32, dev, "top_p")
    tp = torch.ones(b, dtype=f32, device=dev) if tp is None else torch.where(
        greedy, torch.ones_like(tp), tp)
    mp = per_row(min_p, b, f32, dev, "min_p")
    log_min_p = torch.full((b,), float("-inf"), dtype=f32, device=dev)
    if mp is not None:
        log_min_p = torch.where((mp > 0) & ~greedy, torch.log(mp.clamp(min=1e-30)), log_min_p)

    if seeds is None:
        seeds = torch.randint(-(2**63), 2**63 - 1, (b,), generator=generator, dtype=torch.int64)
    seeds = per_row(seeds, b, torch.int64, dev, "seeds")
    steps = per_row(0 if steps is None else steps, b, torch.int64, dev, "steps")
    key_a, key_b = row_keys(seeds, steps)
    return RowParams(inv_temp.contiguous(), noise_scale, theta_k.contiguous(), tp.contiguous(),
                     log_min_p, key_a, key_b, check_top_p=top_p is not None)


def sample_from_logits(
    logits: torch.Tensor,
    *,
    temperature: torch.Tensor | float | None = None,
    top_k: torch.Tensor | int | None = None,
    top_p: torch.Tensor | float | None = None,
    min_p: torch.Tensor | float | None = None,
    seeds: torch.Tensor | int | None = None,
    steps: torch.Tensor | int | None = None,
    generator: torch.Generator | None = None,
    logits_scaled: bool = False,
) -> torch.Tensor:
    """Sample one token id per row of ``logits`` [B, V] (not modified). Returns int64 [B].

    Per row: ``x / temperature`` (skipped when ``logits_scaled``, e.g. after
    ``apply_logit_controls(temperature=...)``), then min-p (keep ``p >= min_p * p_max``),
    top-k (keep ``x >= k-th largest``, ties kept; ``k <= 0`` or ``>= V`` = off), top-p
    (keep the smallest high-probability set whose renormalised mass reaches ``top_p``,
    ties at the boundary kept), then a Gumbel-max draw. Rows with temperature < 1e-5
    are greedy: argmax, filters ignored. Noise is a pure function of ``(seeds[r],
    steps[r], token)``: same seed and step -> same token, on CPU and GPU alike; vary
    ``steps`` per decode step. Without seeds, seeds are drawn from ``generator``.
    Rows containing NaN or +inf, or no finite logit, return -1.
    """
    check_logits(logits)
    rows = prepare_rows(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                        seeds=seeds, steps=steps, generator=generator,
                        logits_scaled=logits_scaled)
    if logits.is_cuda:
        from .sampling_triton import sample_triton

        return sample_triton(logits, rows)
    from .sampling_torch import sample_torch

    return sample_torch(logits, rows)
