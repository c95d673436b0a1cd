"""Dispatcher for the fused logit controls: Triton on CUDA, numpy for float32 logits on
the CPU, vectorised torch elsewhere."""

from __future__ import annotations

import torch

from ._args import check_logits, csr, per_row
from . import logit_controls_numpy
from .logit_controls_torch import apply_logit_controls_torch


def _use_triton(logits: torch.Tensor) -> bool:
    return logits.is_cuda


def apply_logit_controls(
    logits: torch.Tensor,
    *,
    bias_indptr: torch.Tensor | None = None,
    bias_token_ids: torch.Tensor | None = None,
    bias_values: torch.Tensor | None = None,
    banned_bitmask: torch.Tensor | None = None,
    penalty_indptr: torch.Tensor | None = None,
    penalty_token_ids: torch.Tensor | None = None,
    penalty_output_counts: torch.Tensor | None = None,
    penalty_in_prompt: torch.Tensor | None = None,
    repetition_penalty: torch.Tensor | float | None = None,
    presence_penalty: torch.Tensor | float | None = None,
    frequency_penalty: torch.Tensor | float | None = None,
    temperature: torch.Tensor | float | None = None,
    mask_table: torch.Tensor | None = None,
    mask_rows: torch.Tensor | None = None,
    banned_indptr: torch.Tensor | None = None,
    banned_token_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply bias, penalties, banned bitmask and temperature to ``logits`` [B, V] in place.

    Order per row (vLLM's): ``x += bias``; for tokens seen in prompt or output
    ``x = x / rep if x > 0 else x * rep``; ``x -= frequency * count + presence * (count > 0)``;
    banned tokens ``-> -inf``; ``x *= 1 / temperature`` (rows with temperature < 1e-5,
    i.e. greedy, are left unscaled). Every argument but ``logits`` is optional (None skips
    the stage). CSR lists: ``*_indptr`` int32 [B+1], token ids int32 [nnz] (unique per
    row; ids outside [0, V) are ignored), bias values float32 [nnz], output counts int32
    [nnz], in-prompt flags bool/int8 [nnz]. Per-row penalties/temperature: float32 [B]
    or a Python number. NaN logits stay NaN unless banned (then -inf).
    Returns ``logits`` (the same tensor). CUDA: Triton (fused or split launch, see
    logit_controls_triton.pick_mode); float32 on the CPU: numpy (:mod:`.logit_controls_numpy`);
    otherwise the vectorised torch path. docs/kernels.md.
    ``mask_table`` int32 [S, ceil(V/32)] + ``mask_rows`` int [B]:
    instead of ``banned_bitmask``, row b's mask is ``mask_table[mask_rows[b]]``, gathered on
    the device (a table of masks that stays there; slot 0 all zeros for "no mask").
    ``banned_indptr`` int32 [B+1] + ``banned_token_ids`` int32 [nnz]: banned tokens as a
    CSR list (ids outside [0, V) ignored, duplicates allowed), banned like the bitmask's
    (``-inf``, NaN included); with a bitmask too, a token banned by either is banned.
    """
    check_logits(logits)
    b, v = logits.shape
    dev = logits.device
    kw = {}
    if mask_table is not None:
        # the rows' masks, gathered on the device from a table of packed masks
        if banned_bitmask is not None or mask_rows is None:
            raise ValueError("mask_table needs mask_rows, and excludes banned_bitmask")
        if mask_table.dtype != torch.int32 or mask_table.dim() != 2:
            raise TypeError("mask_table must be int32 [slots, ceil(V/32)]")
        if mask_rows.numel() != b:
            raise ValueError(f"mask_rows has {mask_rows.numel()} entries for {b} rows")
        if mask_table.shape[1] * 32 < v:
            raise ValueError(f"mask_table shape {tuple(mask_table.shape)} too small")
        if logit_controls_numpy.supports(logits) and mask_table.device.type == "cpu":
            # the numpy path reads the table in place, only the rows with a mask
            kw["mask_table"] = mask_table.contiguous()
            kw["mask_rows"] = mask_rows.to("cpu", torch.int64)
        else:
            banned_bitmask = mask_table.index_select(0, mask_rows.to(mask_table.device,
                                                                     torch.long))
    if bias_indptr is not None:
        if bias_token_ids is None or bias_values is None:
            raise ValueError("bias_indptr needs bias_token_ids and bias_values")
        kw["bias_indptr"], kw["bias_token_ids"], kw["bias_values"] = csr(
            bias_indptr, b, dev, "bias", (bias_token_ids, torch.int32), (bias_values, torch.float32))
    if banned_bitmask is not None:
        if banned_bitmask.dtype != torch.int32 or banned_bitmask.dim() != 2:
            raise TypeError("banned_bitmask must be int32 [B, ceil(V/32)]")
        if banned_bitmask.shape[0] != b or banned_bitmask.shape[1] * 32 < v:
            raise ValueError(f"banned_bitmask shape {tuple(banned_bitmask.shape)} too small")
        if banned_bitmask.stride(1) != 1:
            banned_bitmask = banned_bitmask.contiguous()
        kw["banned_bitmask"] = banned_bitmask.to(dev)
    pens = {
        "repetition_penalty": per_row(repetition_penalty, b, torch.float32, dev, "repetition_penalty"),
        "presence_penalty": per_row(presence_penalty, b, torch.float32, dev, "presence_penalty"),
        "frequency_penalty": per_row(frequency_penalty, b, torch.float32, dev, "frequency_penalty"),
    }
    if penalty_indptr is not None and any(p is not None for p in pens.values()):
        if penalty_token_ids is None:
            raise ValueError("penalty_indptr needs penalty_token_ids")
        prompt_dtype = torch.bool if penalty_in_prompt is None else (
            torch.bool if penalty_in_prompt.dtype == torch.bool else torch.int8)
        (kw["penalty_indptr"], kw["penalty_token_ids"], kw["penalty_output_counts"],
         kw["penalty_in_prompt"]) = csr(
            penalty_indptr, b, dev, "penalty", (penalty_token_ids, torch.int32),
            (penalty_output_counts, torch.int32), (penalty_in_prompt, prompt_dtype))
        kw.update({k: p for k, p in pens.items() if p is not None})
    if temperature is not None:
        kw["temperature"] = per_row(temperature, b, torch.float32, dev, "temperature")
    if banned_indptr is not None:
        if banned_token_ids is None:
            raise ValueError("banned_indptr needs banned_token_ids")
        kw["banned_indptr"], kw["banned_token_ids"] = csr(
            banned_indptr, b, dev, "banned", (banned_token_ids, torch.int32))
    if not kw:
        return logits
    if _use_triton(logits):
        from .logit_controls_triton import apply_logit_controls_triton

        bans = kw.pop("banned_indptr", None), kw.pop("banned_token_ids", None)
        if kw:
            apply_logit_controls_triton(logits, **kw)
        if bans[0] is None:
            return logits
        # after the kernel: -inf then is -inf at the mask stage (no later stage moves it)
        return apply_logit_controls_torch(logits, banned_indptr=bans[0],
                                          banned_token_ids=bans[1])
    if logit_controls_numpy.supports(logits):
        return logit_controls_numpy.apply_logit_controls_numpy(logits, **kw)
    return apply_logit_controls_torch(logits, **kw)
