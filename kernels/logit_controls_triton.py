"""Triton kernel for the fused logit controls (the GPU path).

One launch, grid ``(B, cdiv(V, BLOCK))``. Program ``(r, j)`` owns tokens
``[j*BLOCK, (j+1)*BLOCK)`` of row ``r`` and runs three steps:

1. bias: scan row r's bias CSR range in chunks, keep entries whose token falls in the
   block, read-modify-write those logits (float32 math, stored in the logits dtype);
2. penalties: the same over the penalty CSR range (repetition on the biased value);
3. dense: read the block once as a ``[BLOCK/32, 32]`` tile (one bitmask word per tile
   row), set banned tokens to -inf, divide by the row's temperature, write once.

Steps are separated by a CTA barrier; each token is touched by exactly one program, so
no atomics are needed. Dense traffic is one read + one write of the logits plus the
bitmask (1/8 byte per token); the sparse lists are re-read per block from L2 (they are
small) and their scattered updates hit lines the dense step is about to read.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._args import GREEDY_EPS

SPARSE_CHUNK = 128


@triton.jit
def _logit_controls_kernel(
    x_ptr, x_stride, V, span,
    b_indptr, b_ids, b_vals,
    m_ptr, m_stride, W,
    p_indptr, p_ids, p_counts, p_prompt,
    rep_ptr, pres_ptr, freq_ptr, temp_ptr,
    greedy_eps,
    BLOCK: tl.constexpr, CHUNK: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_PEN: tl.constexpr, HAS_COUNTS: tl.constexpr,
    HAS_PROMPT: tl.constexpr, HAS_REP: tl.constexpr, HAS_PRES: tl.constexpr,
    HAS_FREQ: tl.constexpr, HAS_MASK: tl.constexpr, HAS_TEMP: tl.constexpr,
    DENSE: tl.constexpr,
):
    row = tl.program_id(0)
    blk = tl.program_id(1)
    lo = blk * span
    hi = tl.minimum(lo + span, V)
    xrow = x_ptr + row.to(tl.int64) * x_stride
    out_ty = x_ptr.dtype.element_ty

    if HAS_BIAS:
        start = tl.load(b_indptr + row)
        end = tl.load(b_indptr + row + 1)
        for i in range(start, end, CHUNK):
            j = i + tl.arange(0, CHUNK)
            m = j < end
            tok = tl.load(b_ids + j, mask=m, other=-1)
            m = m & (tok >= lo) & (tok < hi)
            bias = tl.load(b_vals + j, mask=m, other=0.0)
            x = tl.load(xrow + tok, mask=m, other=0.0).to(tl.float32)
            tl.store(xrow + tok, (x + bias).to(out_ty), mask=m)
        tl.debug_barrier()

    if HAS_PEN:
        rep = 1.0
        pres = 0.0
        freq = 0.0
        if HAS_REP:
            rep = tl.load(rep_ptr + row)
        if HAS_PRES:
            pres = tl.load(pres_ptr + row)
        if HAS_FREQ:
            freq = tl.load(freq_ptr + row)
        start = tl.load(p_indptr + row)
        end = tl.load(p_indptr + row + 1)
        for i in range(start, end, CHUNK):
            j = i + tl.arange(0, CHUNK)
            m = j < end
            tok = tl.load(p_ids + j, mask=m, other=-1)
            m = m & (tok >= lo) & (tok < hi)
            x = tl.load(xrow + tok, mask=m, other=0.0).to(tl.float32)
            if HAS_COUNTS:
                cnt = tl.load(p_counts + j, mask=m, other=0).to(tl.float32)
            else:
                cnt = tl.zeros([CHUNK], dtype=tl.float32)
            in_out = cnt > 0
            if HAS_REP:
                seen = in_out
                if HAS_PROMPT:
                    seen = seen | (tl.load(p_prompt + j, mask=m, other=0) != 0)
                scaled = tl.where(x > 0, tl.math.div_rn(x, tl.full([CHUNK], 1.0, tl.float32) * rep), x * rep)
                x = tl.where(seen, scaled, x)
            if HAS_FREQ:
                x = x - freq * cnt
            if HAS_PRES:
                x = x - tl.where(in_out, pres, 0.0)
            tl.store(xrow + tok, x.to(out_ty), mask=m)
        tl.debug_barrier()

    if DENSE:
        WPB: tl.constexpr = BLOCK // 32
        words_idx = blk * WPB + tl.arange(0, WPB)
        offs = words_idx[:, None] * 32 + tl.arange(0, 32)[None, :]
        valid = offs < V
        x = tl.load(xrow + offs, mask=valid, other=0.0).to(tl.float32)
        if HAS_MASK:
            words = tl.load(m_ptr + row.to(tl.int64) * m_stride + words_idx,
                            mask=words_idx < W, other=0)
            bits = (words[:, None] >> tl.arange(0, 32)[None, :]) & 1
            x = tl.where(bits != 0, float("-inf"), x)
        if HAS_TEMP:
            t = tl.load(temp_ptr + row)
            t = tl.where(t < greedy_eps, 1.0, t)
            x = tl.math.div_rn(x, tl.full([WPB, 32], 1.0, tl.float32) * t)
        tl.store(xrow + offs, x.to(out_ty), mask=valid)


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def pick_config(batch: int, vocab: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK, num_warps): the largest block that still gives >= 2 programs per SM."""
    sms = _num_sms(device)
    for block in (8192, 4096, 2048, 1024):
        if batch * triton.cdiv(vocab, block) >= 2 * sms:
            break
    return block, (8 if block >= 4096 else 4)


def apply_logit_controls_triton(
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
    block: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Launch the kernel. Arguments must already be normalised (see logit_controls.py)."""
    b, v = logits.shape
    if b == 0 or v == 0:
        return logits
    has_bias = bias_indptr is not None
    has_pen = penalty_indptr is not None and any(
        p is not None for p in (repetition_penalty, presence_penalty, frequency_penalty))
    has_mask = banned_bitmask is not None
    has_temp = temperature is not None
    dense = has_mask or has_temp
    if not (has_bias or has_pen or dense):
        return logits
    cfg_block, cfg_warps = pick_config(b, v, logits.device)
    block = block or cfg_block
    num_warps = num_warps or cfg_warps
    if dense:
        span, nblocks = block, triton.cdiv(v, block)
    else:  # sparse stages only: one program per row covers the whole vocabulary
        span, nblocks = v, 1
    dummy = logits  # any tensor; never dereferenced when its HAS_* flag is off
    prompt = penalty_in_prompt
    if prompt is not None and prompt.dtype == torch.bool:
        prompt = prompt.view(torch.uint8)
    _logit_controls_kernel[(b, nblocks)](
        logits, logits.stride(0), v, span,
        bias_indptr if has_bias else dummy,
        bias_token_ids if has_bias else dummy,
        bias_values if has_bias else dummy,
        banned_bitmask if has_mask else dummy,
        banned_bitmask.stride(0) if has_mask else 0,
        banned_bitmask.shape[1] if has_mask else 0,
        penalty_indptr if has_pen else dummy,
        penalty_token_ids if has_pen else dummy,
        penalty_output_counts if (has_pen and penalty_output_counts is not None) else dummy,
        prompt if (has_pen and prompt is not None) else dummy,
        repetition_penalty if repetition_penalty is not None else dummy,
        presence_penalty if presence_penalty is not None else dummy,
        frequency_penalty if frequency_penalty is not None else dummy,
        temperature if has_temp else dummy,
        GREEDY_EPS,
        BLOCK=block, CHUNK=SPARSE_CHUNK,
        HAS_BIAS=has_bias, HAS_PEN=has_pen,
        HAS_COUNTS=penalty_output_counts is not None,
        HAS_PROMPT=penalty_in_prompt is not None,
        HAS_REP=repetition_penalty is not None,
        HAS_PRES=presence_penalty is not None,
        HAS_FREQ=frequency_penalty is not None,
        HAS_MASK=has_mask, HAS_TEMP=has_temp, DENSE=dense,
        num_warps=num_warps,
        enable_fp_fusion=False,  # no FMA contraction: same IEEE ops as the torch path
    )
    return logits
