"""Benchmark / GPU-check inputs: realistic sparse sizes for one decode step."""

from __future__ import annotations

import torch

from greyelephant.kernels import pack_token_bitmask


def csr(b, v, per_row, device, gen):
    """per_row unique random token ids per row (int32 CSR)."""
    per_row = min(per_row, v)
    ids = torch.stack([torch.randperm(v, generator=gen)[:per_row] for _ in range(min(b, 8))])
    ids = ids.repeat((b + 7) // 8, 1)[:b]  # few distinct rows: keeps setup cheap
    ids = (ids + torch.arange(b).view(b, 1) * 7919) % v  # still unique within a row
    indptr = torch.arange(0, (b + 1) * per_row, per_row, dtype=torch.int32)
    return indptr.to(device), ids.reshape(-1).to(torch.int32).to(device)


def controls_inputs(b, v, device, *, bias_per_row=64, penalty_per_row=512, banned_frac=0.01,
                    seed=0):
    g = torch.Generator().manual_seed(seed)
    kw = {}
    kw["bias_indptr"], kw["bias_token_ids"] = csr(b, v, bias_per_row, device, g)
    kw["bias_values"] = (torch.randn(kw["bias_token_ids"].numel(), generator=g) * 3).to(device)
    banned = torch.rand(min(b, 4), v, generator=g) < banned_frac
    kw["banned_bitmask"] = pack_token_bitmask(banned.repeat((b + 3) // 4, 1)[:b]).to(device)
    kw["penalty_indptr"], ids = csr(b, v, penalty_per_row, device, g)
    n = ids.numel()
    kw.update(
        penalty_token_ids=ids,
        penalty_output_counts=torch.randint(0, 5, (n,), generator=g, dtype=torch.int32).to(device),
        penalty_in_prompt=(torch.rand(n, generator=g) < 0.6).to(device),
        repetition_penalty=(torch.rand(b, generator=g) * 0.5 + 1.0).to(device),
        presence_penalty=(torch.rand(b, generator=g) * 0.5).to(device),
        frequency_penalty=(torch.rand(b, generator=g) * 0.5).to(device),
    )
    t = torch.rand(b, generator=g) * 0.2 + 0.9
    t[::5] = 0.0  # some greedy rows
    kw["temperature"] = t.to(device)
    return kw


def controls_bytes(b, v, elem_size, kw):
    """Bytes a single pass must move: logits read + written, bitmask, sparse lists."""
    n = 2 * b * v * elem_size + kw["banned_bitmask"].numel() * 4
    n += kw["bias_token_ids"].numel() * 8 + kw["penalty_token_ids"].numel() * 9
    n += 4 * (2 * (b + 1) + 4 * b)
    return n
