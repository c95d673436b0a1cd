"""Unfused torch baselines the kernels are measured against.

* ``unfused_torch_chain``: the separate-op sequence of vLLM's legacy sampler / a plain
  torch logits processor: fp32 copy, bias scatter-add, bitmask unpack + masked_fill,
  penalties through dense per-step count tensors (bincount-style scatter into
  zeros [B, V]), temperature division. Out of place, returns float32.
* ``sort_top_p_sample``: vLLM's sort-based top-p followed by exponential-race sampling.
"""

from __future__ import annotations

import torch

from greyelephant.kernels.bitmask import unpack_token_bitmask


def unfused_torch_chain(logits, *, bias_indptr, bias_token_ids, bias_values, banned_bitmask,
                        penalty_indptr, penalty_token_ids, penalty_output_counts,
                        penalty_in_prompt, repetition_penalty, presence_penalty,
                        frequency_penalty, temperature):
    b, v = logits.shape
    dev = logits.device
    x = logits.to(torch.float32)
    # bias: dense scatter-add of the sparse list
    brows = torch.repeat_interleave(torch.arange(b, device=dev),
                                    (bias_indptr[1:] - bias_indptr[:-1]).long(),
                                    output_size=bias_token_ids.numel())  # no host sync
    x.index_put_((brows, bias_token_ids.long()), bias_values, accumulate=True)
    # banned tokens
    x.masked_fill_(unpack_token_bitmask(banned_bitmask, v), float("-inf"))
    # penalties: dense count tensor and masks rebuilt every step
    prows = torch.repeat_interleave(torch.arange(b, device=dev),
                                    (penalty_indptr[1:] - penalty_indptr[:-1]).long(),
                                    output_size=penalty_token_ids.numel())
    pids = penalty_token_ids.long()
    counts = torch.zeros(b, v, dtype=torch.int32, device=dev)
    counts.index_put_((prows, pids), penalty_output_counts, accumulate=True)
    prompt_mask = torch.zeros(b, v, dtype=torch.bool, device=dev)
    prompt_mask.index_put_((prows, pids), penalty_in_prompt)
    output_mask = counts > 0
    rep = repetition_penalty.view(b, 1).expand(b, v)
    pen = torch.where(prompt_mask | output_mask, rep, torch.ones_like(rep))
    x *= torch.where(x > 0, 1.0 / pen, pen)
    x -= frequency_penalty.view(b, 1) * counts
    x -= presence_penalty.view(b, 1) * output_mask
    # temperature (greedy rows divided by 1)
    t = temperature.view(b, 1)
    x.div_(torch.where(t < 1e-5, torch.ones_like(t), t))
    return x


def sort_top_p_sample(logits, temperature, top_p, generator=None):
    """vLLM v1 ``apply_top_k_top_p`` (k=None) + ``random_sample`` (exponential race)."""
    x = logits.to(torch.float32) / temperature.view(-1, 1)
    srt, idx = x.sort(dim=-1, descending=False)
    cum = srt.softmax(dim=-1).cumsum(dim=-1)
    drop = cum <= 1 - top_p.view(-1, 1)
    drop[:, -1] = False
    srt.masked_fill_(drop, float("-inf"))
    x = srt.scatter(dim=-1, index=idx, src=srt)
    probs = x.softmax(dim=-1, dtype=torch.float32)
    q = torch.empty_like(probs).exponential_(generator=generator)
    return probs.div_(q).argmax(dim=-1)
