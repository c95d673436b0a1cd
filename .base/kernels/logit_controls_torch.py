"""Vectorised torch implementation of the fused logit controls (the CPU path).

In place, no Python loops over rows or tokens: the sparse stages gather the touched
logits through flat indices, compute in float32 and write them back with index_put_;
the bitmask is expanded sparsely (few banned tokens) or applied as bitwise selects on the
logits' bits (dense rows), a CSR list of banned tokens with one index_fill_; temperature
is one mul_ by 1/T (as the Triton kernel: within an ulp of dividing). Float32 logits on
the CPU take the numpy path instead (:mod:`.logit_controls_numpy`); this one serves half
precision there, and the banned-token lists after the Triton kernel on CUDA.

Arithmetic is float32; for bf16/fp16 logits each sparse stage rounds its result to the
logits dtype (exactly as the Triton kernel does), the dense stages round once.
"""

from __future__ import annotations

import torch

from ._args import GREEDY_EPS
from .bitmask import banned_flat_indices

# Per row: below this share of non-zero mask words, banned tokens are expanded sparsely and
# written with one index_fill_ (a steering mask bans a handful of tokens per row); above it
# the dense unpack + masked_fill_ of that row is cheaper.
SPARSE_MASK_MAX_WORD_SHARE = 1 / 16


def _apply_bitmask(logits: torch.Tensor, flat: torch.Tensor, words: torch.Tensor) -> None:
    """-inf at the banned tokens, chosen per row: rows whose non-zero words are at most
    SPARSE_MASK_MAX_WORD_SHARE of the row are expanded sparsely (one index_fill_ for all of
    them); the others (a mask that bans most of the vocabulary, e.g. every token that
    starts a new word) are written densely, only those rows (:func:`_fill_dense`)."""
    b, v = logits.shape
    per_row = torch.count_nonzero(words, dim=1)
    dense = per_row > SPARSE_MASK_MAX_WORD_SHARE * words.shape[1]
    n_dense = int(dense.sum())
    if n_dense == b:
        _fill_dense(logits, words)
        return
    if n_dense:
        rows = dense.nonzero().flatten()
        sub = logits.index_select(0, rows)
        _fill_dense(sub, words.index_select(0, rows))
        logits.index_copy_(0, rows, sub)
        words = words.masked_fill(dense.unsqueeze(1), 0)
    if bool(per_row.any()):
        flat.index_fill_(0, banned_flat_indices(words, v, logits.stride(0)), float("-inf"))


_BIT_SHIFTS: dict[torch.device, torch.Tensor] = {}


def _fill_dense(logits: torch.Tensor, words: torch.Tensor) -> None:
    """``logits[b, t] = -inf`` where bit t of row b of ``words`` is set, as bitwise
    selects on the logits' bits (``x & ~m | m & bits(-inf)``, m all ones at banned
    tokens): the result of ``masked_fill_`` (NaN included), without the CPU's slow
    boolean fill."""
    b, v = logits.shape
    int_type = {4: torch.int32, 2: torch.int16, 8: torch.int64}[logits.element_size()]
    shifts = _BIT_SHIFTS.get(words.device)
    if shifts is None:
        shifts = _BIT_SHIFTS[words.device] = torch.arange(32, dtype=torch.int32,
                                                         device=words.device)
    bits = ((words.unsqueeze(-1) >> shifts) & 1).view(b, -1)[:, :v]
    m = bits.to(int_type).neg_()  # -1 (all ones) at banned tokens, 0 elsewhere
    neg_inf = torch.tensor(float("-inf"), dtype=logits.dtype).view(int_type).item()
    x = logits.view(int_type)
    x.bitwise_and_(~m).bitwise_or_(m & neg_inf)


def _flat_index(indptr, token_ids, batch: int, vocab: int, row_stride: int):
    """(flat index into the logits storage, row of each entry, keep-mask) for a CSR list."""
    lengths = (indptr[1:] - indptr[:-1]).to(torch.long)
    rows = torch.repeat_interleave(torch.arange(batch, device=token_ids.device), lengths,
                                   output_size=token_ids.numel())
    ids = token_ids.to(torch.long)
    keep = (ids >= 0) & (ids < vocab)
    return rows * row_stride + ids, rows, keep


def apply_logit_controls_torch(
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
    b, v = logits.shape
    # A flat 1-D view over the rows' storage (rows may be strided, columns are contiguous).
    flat = logits.as_strided(((b - 1) * logits.stride(0) + v,), (1,))
    stride = logits.stride(0)

    if bias_indptr is not None and bias_token_ids.numel() > 0:
        idx, _, keep = _flat_index(bias_indptr, bias_token_ids, b, v, stride)
        vals = bias_values
        if not bool(keep.all()):
            idx, vals = idx[keep], vals[keep]
        flat.index_put_((idx,), (flat[idx].float() + vals.float()).to(logits.dtype))

    has_pen = any(p is not None for p in (repetition_penalty, presence_penalty, frequency_penalty))
    if penalty_indptr is not None and has_pen and penalty_token_ids.numel() > 0:
        idx, rows, keep = _flat_index(penalty_indptr, penalty_token_ids, b, v, stride)
        counts, prompt = penalty_output_counts, penalty_in_prompt
        if not bool(keep.all()):
            idx, rows = idx[keep], rows[keep]
            counts = None if counts is None else counts[keep]
            prompt = None if prompt is None else prompt[keep]
        x = flat[idx].float()
        cnt = counts.float() if counts is not None else torch.zeros_like(x)
        in_output = cnt > 0
        if repetition_penalty is not None:
            seen = in_output if prompt is None else in_output | (prompt != 0)
            r = repetition_penalty.float()[rows]
            x = torch.where(seen, torch.where(x > 0, x / r, x * r), x)
        if frequency_penalty is not None:
            x = x - frequency_penalty.float()[rows] * cnt
        if presence_penalty is not None:
            x = x - presence_penalty.float()[rows] * in_output.float()
        flat.index_put_((idx,), x.to(logits.dtype))

    if banned_bitmask is not None:
        _apply_bitmask(logits, flat, banned_bitmask)
    if banned_indptr is not None and banned_token_ids.numel() > 0:
        idx, _, keep = _flat_index(banned_indptr, banned_token_ids, b, v, stride)
        flat.index_fill_(0, idx[keep], float("-inf"))

    if temperature is not None:
        t = temperature.float()
        inv = torch.where(t < GREEDY_EPS, torch.ones_like(t), 1.0 / t)
        logits.mul_(inv.view(b, 1))  # x * (1/T) in float32, rounded once to the logits dtype
    return logits
