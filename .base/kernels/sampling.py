"""Dispatcher for the sampler: min-p / top-k / top-p filtering + Gumbel-max sampling.

No full sort. Both paths compute, per row, ``argmax over kept tokens of (x/T + g)``
with counter-based Gumbel noise ``g`` (see rng.py) and find the kept set by an exact
pivot search (see sampling_torch.py); top-k's threshold comes from ``torch.topk``.
On CUDA the per-row parameters (greedy flag, 1/T, log min-p, noise keys) are derived
inside the kernel, so a call is a handful of launches at most.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._args import GREEDY_EPS, check_logits, per_row
from .rng import row_keys


@dataclass
class SamplingArgs:
    """Normalised inputs: float32 / int64 tensors [B] on the logits' device, or None."""

    temperature: torch.Tensor | None
    top_p: torch.Tensor | None
    min_p: torch.Tensor | None
    theta_k: torch.Tensor | None  # raw-logit top-k threshold (k-th largest), -inf if off
    seeds: torch.Tensor
    steps: torch.Tensor | None
    logits_scaled: bool = False


@dataclass
class RowParams:
    """Per-row tensors [B] derived from SamplingArgs (the torch path's form)."""

    inv_temp: torch.Tensor  # 1/T, or 1 for greedy rows and pre-scaled logits
    noise_scale: torch.Tensor  # 0 for greedy rows, else 1
    theta_k: torch.Tensor  # -inf if off
    top_p: torch.Tensor  # 1 if off or greedy
    log_min_p: torch.Tensor  # -inf if off or greedy
    key_a: torch.Tensor  # int32 noise key words
    key_b: torch.Tensor


def top_k_threshold(logits: torch.Tensor, top_k) -> torch.Tensor | None:
    """k-th largest raw logit per row (ties kept by ``x >= theta``); -inf where off."""
    if top_k is None:
        return None
    b, v = logits.shape
    if isinstance(top_k, int):
        kmax = top_k if 0 < top_k < v else 0
        k = torch.full((b,), kmax, dtype=torch.long, device=logits.device)
    else:
        k = per_row(top_k, b, torch.long, logits.device, "top_k")
        k = torch.where((k <= 0) | (k >= v), torch.zeros_like(k), k)
        kmax = int(k.max().item()) if b else 0  # one sync: torch.topk needs a Python int
    theta = torch.full((b,), float("-inf"), dtype=torch.float32, device=logits.device)
    if kmax == 0:
        return theta
    vals = torch.topk(logits, kmax, dim=1, sorted=True).values
    kth = vals.gather(1, (k.clamp(min=1) - 1).view(b, 1)).view(b).to(torch.float32)
    return torch.where(k > 0, kth, theta)


def normalize_args(logits, *, temperature=None, top_k=None, top_p=None, min_p=None, seeds=None,
                   steps=None, generator=None, logits_scaled=False) -> SamplingArgs:
    b, _ = logits.shape
    dev = logits.device
    f32 = torch.float32
    if seeds is None:
        seeds = torch.randint(-(2**63), 2**63 - 1, (b,), generator=generator, dtype=torch.int64)
    return SamplingArgs(
        temperature=per_row(temperature, b, f32, dev, "temperature"),
        top_p=per_row(top_p, b, f32, dev, "top_p"),
        min_p=per_row(min_p, b, f32, dev, "min_p"),
        theta_k=top_k_threshold(logits, top_k),
        seeds=per_row(seeds, b, torch.int64, dev, "seeds"),
        steps=per_row(steps, b, torch.int64, dev, "steps"),
        logits_scaled=bool(logits_scaled),
    )


def row_params(a: SamplingArgs, b: int, device) -> RowParams:
    f32 = torch.float32
    ones = torch.ones(b, dtype=f32, device=device)
    ninf = torch.full((b,), float("-inf"), dtype=f32, device=device)
    if a.temperature is None:
        greedy = torch.zeros(b, dtype=torch.bool, device=device)
        inv_temp = ones
    else:
        greedy = a.temperature < GREEDY_EPS
        inv_temp = ones if a.logits_scaled else torch.where(greedy, ones, 1.0 / a.temperature)
    top_p = ones if a.top_p is None else torch.where(greedy, ones, a.top_p)
    log_min_p = ninf
    if a.min_p is not None:
        log_min_p = torch.where((a.min_p > 0) & ~greedy, torch.log(a.min_p.clamp(min=1e-30)), ninf)
    steps = a.steps if a.steps is not None else torch.zeros(b, dtype=torch.int64, device=device)
    key_a, key_b = row_keys(a.seeds, steps)
    return RowParams(inv_temp, (~greedy).to(f32), ninf if a.theta_k is None else a.theta_k,
                     top_p, log_min_p, key_a, key_b)


def prepare_rows(logits, **kw) -> RowParams:
    """normalize_args + row_params (for tests and the torch path)."""
    a = normalize_args(logits, **kw)
    return row_params(a, logits.shape[0], logits.device)


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
    args = normalize_args(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                          min_p=min_p, seeds=seeds, steps=steps, generator=generator,
                          logits_scaled=logits_scaled)
    if logits.is_cuda:
        from .sampling_triton import sample_triton

        return sample_triton(logits, args)
    from .sampling_torch import sample_torch

    return sample_torch(logits, row_params(args, logits.shape[0], logits.device))
