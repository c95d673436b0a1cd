"""Dispatcher for the fused logit controls: Triton on CUDA, numpy for float32 logits on
the CPU, vectorised torch elsewhere."""

from __future__ import annotations

import torch

from ._args import _as, check_logits, csr, per_row
from . import logit_controls_numpy
from .logit_controls_torch import apply_logit_controls_torch


def _use_triton(logits: torch.Tensor) -> bool:
    return logits.is_cuda


def _on_rows(logits: torch.Tensor, rows: torch.Tensor, apply) -> torch.Tensor:
    """``apply`` on the rows ``rows`` of ``logits``: gathered, controlled, scattered back."""
    rows = rows.to(logits.device, torch.long)
    sub = logits.index_select(0, rows)
    apply(sub)
    logits.index_copy_(0, rows, sub)
    return logits


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
    logit_rows: torch.Tensor | None = None,
    host_bound: bool = False,
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
    On CUDA the table is read in place by the kernel, where a slot outside it bans its
    whole row (fail closed; elsewhere it is an error).
    ``logit_rows`` int [k]: the controls describe k rows (every per-row argument has k
    entries), row j applying to logits row ``logit_rows[j]``; the other rows are left as
    they are. Rows must be distinct and in range: checked when ``logit_rows`` is on the
    CPU, the caller's guarantee when it is already on the GPU (no synchronisation). On
    CUDA the kernels index the rows in place; elsewhere the rows are gathered, controlled
    and scattered back.
    ``host_bound``: the caller has just waited for the device, so the GPU idles until the
    launch: on CUDA one launch wherever the lists are short, at any batch size (see
    :func:`.logit_controls_triton.pick_mode`); elsewhere no effect.
    """
    check_logits(logits)
    if logit_rows is not None:
        controls = {k: a for k, a in locals().items() if k not in ("logits", "logit_rows")}
        return _apply_to_rows(logits, logit_rows, controls)
    return _apply(logits, None, bias_indptr, bias_token_ids, bias_values, banned_bitmask,
                  penalty_indptr, penalty_token_ids, penalty_output_counts, penalty_in_prompt,
                  repetition_penalty, presence_penalty, frequency_penalty, temperature,
                  mask_table, mask_rows, banned_indptr, banned_token_ids, host_bound)


def _apply_to_rows(logits: torch.Tensor, logit_rows: torch.Tensor,
                   controls: dict) -> torch.Tensor:
    """``apply_logit_controls`` on the rows ``logit_rows`` of ``logits``."""
    if logit_rows.dim() != 1 or logit_rows.dtype.is_floating_point or logit_rows.is_complex():
        raise TypeError("logit_rows must be a 1-D integer tensor")
    b = logits.shape[0]
    if logit_rows.device.type == "cpu" and logit_rows.numel():
        lo, hi = int(logit_rows.min()), int(logit_rows.max())
        if lo < 0 or hi >= b:
            raise IndexError(f"logit_rows must lie in [0, {b}), got [{lo}, {hi}]")
        if torch.unique(logit_rows).numel() != logit_rows.numel():
            raise ValueError("logit_rows must be distinct")
    if _use_triton(logits):
        rows = logit_rows.to(logits.device, torch.int32)
        return _apply(logits, rows, **controls)
    return _on_rows(logits, logit_rows, lambda sub: _apply(sub, None, **controls))


def _apply(logits, logit_rows, bias_indptr=None, bias_token_ids=None, bias_values=None,
           banned_bitmask=None, penalty_indptr=None, penalty_token_ids=None,
           penalty_output_counts=None, penalty_in_prompt=None, repetition_penalty=None,
           presence_penalty=None, frequency_penalty=None, temperature=None, mask_table=None,
           mask_rows=None, banned_indptr=None, banned_token_ids=None,
           host_bound=False) -> torch.Tensor:
    """The dispatcher's body; ``logit_rows`` (CUDA only): int32 rows on the device."""
    v = logits.shape[1]
    b = logits.shape[0] if logit_rows is None else logit_rows.numel()
    dev = logits.device
    kw = {}
    if logit_rows is not None:
        kw["logit_rows"] = logit_rows
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
        if _use_triton(logits) and mask_table.device == dev:
            # the kernel reads the table in place, row mask_rows[j] for row j
            if mask_table.stride(1) != 1:
                mask_table = mask_table.contiguous()
            kw["banned_bitmask"] = mask_table
            kw["mask_rows"] = _as(mask_rows, torch.int32, dev)
        elif logit_controls_numpy.supports(logits) and mask_table.device.type == "cpu":
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
    if banned_bitmask is not None and "banned_bitmask" not in kw:
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
    if not kw or list(kw) == ["logit_rows"]:
        return logits
    if _use_triton(logits):
        from .logit_controls_triton import apply_logit_controls_triton

        bans = kw.pop("banned_indptr", None), kw.pop("banned_token_ids", None)
        if kw:
            apply_logit_controls_triton(logits, **kw, host_bound=host_bound)
        if bans[0] is None:
            return logits
        # after the kernel: -inf then is -inf at the mask stage (no later stage moves it)
        if logit_rows is None:
            return apply_logit_controls_torch(logits, banned_indptr=bans[0],
                                              banned_token_ids=bans[1])
        return _on_rows(logits, logit_rows, lambda sub: apply_logit_controls_torch(
            sub, banned_indptr=bans[0], banned_token_ids=bans[1]))
    if logit_controls_numpy.supports(logits):
        return logit_controls_numpy.apply_logit_controls_numpy(logits, **kw)
    return apply_logit_controls_torch(logits, **kw)
