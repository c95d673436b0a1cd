"""Triton kernels for the fused logit controls (the GPU path).

Two ways to run the same stages (bias -> penalties -> ban -> temperature):

* ``fused`` — one launch, grid ``(B, cdiv(V, BLOCK))``. Program ``(r, j)`` owns tokens
  ``[j*BLOCK, (j+1)*BLOCK)`` of row ``r``: it scans row r's bias and penalty CSR ranges,
  read-modify-writes the entries that fall in its block (a CTA barrier after each
  stage), then streams the block once: ban + temperature. Each token is touched by
  exactly one program, so no atomics. Costs a scan of the row's lists per block.
* ``split`` — two launches: a sparse kernel, grid ``(B,)``, applies bias then penalties
  to the listed tokens of its row; then a dense kernel streams ban + temperature.

Both move one read + one write of the logits plus the bitmask (1/8 byte per token);
the sparse lists are small. The dense tile is ``[BLOCK/32, 32]``: one bitmask word per
tile row, 16-byte vector accesses along the row. Arithmetic is float32; each stage
rounds to the logits dtype (bitwise the same as the torch path, see
logit_controls_torch.py). No FMA contraction (``enable_fp_fusion=False``).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._args import GREEDY_EPS

FUSED_CHUNK = 256  # sparse entries scanned per step by each fused program
SPARSE_CHUNK = 512  # ... by each program of the split sparse kernel


@triton.jit
def _sparse_stages(
    xrow, row, lo, hi,
    b_indptr, b_ids, b_vals,
    p_indptr, p_ids, p_counts, p_prompt,
    rep_ptr, pres_ptr, freq_ptr,
    CHUNK: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_PEN: tl.constexpr, HAS_COUNTS: tl.constexpr,
    HAS_PROMPT: tl.constexpr, HAS_REP: tl.constexpr, HAS_PRES: tl.constexpr,
    HAS_FREQ: tl.constexpr,
):
    """Bias, then penalties, for row entries whose token is in [lo, hi)."""
    out_ty = xrow.dtype.element_ty
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
                scaled = tl.where(x > 0, tl.math.div_rn(x, tl.full([CHUNK], 1.0, tl.float32) * rep),
                                  x * rep)
                x = tl.where(seen, scaled, x)
            if HAS_FREQ:
                x = x - freq * cnt
            if HAS_PRES:
                x = x - tl.where(in_out, pres, 0.0)
            tl.store(xrow + tok, x.to(out_ty), mask=m)
        tl.debug_barrier()


@triton.jit
def _dense_tile(
    xrow, row, blk, V, m_ptr, m_stride, W, temp_ptr, greedy_eps,
    BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, HAS_TEMP: tl.constexpr,
):
    """One read + one write of tokens [blk*BLOCK, (blk+1)*BLOCK): ban, then temperature."""
    WPB: tl.constexpr = BLOCK // 32
    words_idx = blk * WPB + tl.arange(0, WPB)
    offs = words_idx[:, None] * 32 + tl.arange(0, 32)[None, :]
    valid = offs < V
    x = tl.load(xrow + offs, mask=valid, other=0.0).to(tl.float32)
    if HAS_MASK:
        words = tl.load(m_ptr + row.to(tl.int64) * m_stride + words_idx,
                        mask=words_idx < W, other=0)
        bits = words[:, None] & (1 << tl.arange(0, 32))[None, :]
        x = tl.where(bits != 0, float("-inf"), x)
    if HAS_TEMP:
        t = tl.load(temp_ptr + row)
        inv = tl.where(t < greedy_eps, 1.0, tl.math.div_rn(tl.full([], 1.0, tl.float32), t))
        x = x * inv
    tl.store(xrow + offs, x.to(xrow.dtype.element_ty), mask=valid)


@triton.jit
def _fused_kernel(
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
    _sparse_stages(xrow, row, lo, hi, b_indptr, b_ids, b_vals, p_indptr, p_ids, p_counts,
                   p_prompt, rep_ptr, pres_ptr, freq_ptr, CHUNK, HAS_BIAS, HAS_PEN, HAS_COUNTS,
                   HAS_PROMPT, HAS_REP, HAS_PRES, HAS_FREQ)
    if DENSE:
        _dense_tile(xrow, row, blk, V, m_ptr, m_stride, W, temp_ptr, greedy_eps,
                    BLOCK, HAS_MASK, HAS_TEMP)


@triton.jit
def _dense_kernel(
    x_ptr, x_stride, V, m_ptr, m_stride, W, temp_ptr, greedy_eps,
    BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, HAS_TEMP: tl.constexpr,
):
    row = tl.program_id(0)
    xrow = x_ptr + row.to(tl.int64) * x_stride
    _dense_tile(xrow, row, tl.program_id(1), V, m_ptr, m_stride, W, temp_ptr, greedy_eps,
                BLOCK, HAS_MASK, HAS_TEMP)


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def pick_config(batch: int, vocab: int, elem_size: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK, num_warps): 64 bytes per thread with 4 warps (4 x 16-byte accesses), smaller
    blocks when the grid would leave SMs idle (B = 1)."""
    block = 128 * 64 // elem_size  # 2048 (fp32) / 4096 (bf16, fp16)
    sms = _num_sms(device)
    while block > 512 and batch * triton.cdiv(vocab, block) < 2 * sms:
        block //= 2
    return block, 4


def pick_mode(batch: int, nnz: int) -> str:
    """Measured on an H200 (benchmarks/results/kernels/run3_h200, 2026-11-27): one fused
    launch wins for B <= 32 (3.3-3.6 µs vs 4.6-4.8 µs at B = 1) and costs one launch less
    of host time; the split form wins at B = 256 in bf16 (47.9 vs 50.3 µs at V = 131072)
    and whenever the sparse lists are long (4096 penalties/row: 90 vs 148 µs), because
    every fused program rescans its row's lists."""
    if batch >= 128 or nnz > 1024 * max(batch, 1):
        return "split"
    return "fused"


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
    mode: str = "auto",
    block: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Launch the kernel(s). Arguments must already be normalised (see logit_controls.py).
    ``mode``: "fused" (one launch), "split" (sparse kernel, then dense kernel) or "auto"
    (see :func:`pick_mode`)."""
    b, v = logits.shape
    if b == 0 or v == 0:
        return logits
    has_bias = bias_indptr is not None
    has_pen = penalty_indptr is not None and (
        repetition_penalty is not None or presence_penalty is not None
        or frequency_penalty is not None)
    has_mask = banned_bitmask is not None
    has_temp = temperature is not None
    dense = has_mask or has_temp
    if not (has_bias or has_pen or dense):
        return logits
    if block is None:
        block, warps = pick_config(b, v, logits.element_size(), logits.device)
        num_warps = num_warps or warps
    num_warps = num_warps or 4
    x = logits  # placeholder pointer for inputs whose HAS_* flag is off (never read)
    prompt = penalty_in_prompt
    if prompt is not None and prompt.dtype == torch.bool:
        prompt = prompt.view(torch.uint8)
    sparse_args = (
        bias_indptr if has_bias else x, bias_token_ids if has_bias else x,
        bias_values if has_bias else x,
    )
    pen_args = (
        penalty_indptr if has_pen else x, penalty_token_ids if has_pen else x,
        penalty_output_counts if (has_pen and penalty_output_counts is not None) else x,
        prompt if (has_pen and prompt is not None) else x,
        repetition_penalty if repetition_penalty is not None else x,
        presence_penalty if presence_penalty is not None else x,
        frequency_penalty if frequency_penalty is not None else x,
    )
    mask_args = (
        banned_bitmask if has_mask else x,
        banned_bitmask.stride(0) if has_mask else 0,
        banned_bitmask.shape[1] if has_mask else 0,
    )
    flags = dict(
        HAS_BIAS=has_bias, HAS_PEN=has_pen,
        HAS_COUNTS=penalty_output_counts is not None,
        HAS_PROMPT=penalty_in_prompt is not None,
        HAS_REP=repetition_penalty is not None,
        HAS_PRES=presence_penalty is not None,
        HAS_FREQ=frequency_penalty is not None,
    )
    temp = temperature if has_temp else x
    if mode == "auto":
        nnz = (0 if bias_token_ids is None else bias_token_ids.numel()) + (
            0 if penalty_token_ids is None else penalty_token_ids.numel())
        mode = pick_mode(b, nnz)
    if mode == "split" and dense:
        if has_bias or has_pen:
            _fused_kernel[(b, 1)](
                logits, logits.stride(0), v, v, *sparse_args, *mask_args, *pen_args, temp,
                GREEDY_EPS, BLOCK=32, CHUNK=SPARSE_CHUNK, **flags,
                HAS_MASK=False, HAS_TEMP=False, DENSE=False,
                num_warps=4, enable_fp_fusion=False)
        _dense_kernel[(b, triton.cdiv(v, block))](
            logits, logits.stride(0), v, *mask_args, temp, GREEDY_EPS,
            BLOCK=block, HAS_MASK=has_mask, HAS_TEMP=has_temp,
            num_warps=num_warps, enable_fp_fusion=False)
        return logits
    if mode not in ("fused", "split"):
        raise ValueError(f"mode must be 'fused' or 'split', got {mode!r}")
    if dense:
        span, nblocks, chunk = block, triton.cdiv(v, block), FUSED_CHUNK
    else:  # sparse stages only: one program per row covers the whole vocabulary
        span, nblocks, chunk, block = v, 1, SPARSE_CHUNK, 32
    _fused_kernel[(b, nblocks)](
        logits, logits.stride(0), v, span, *sparse_args, *mask_args, *pen_args, temp,
        GREEDY_EPS, BLOCK=block, CHUNK=chunk, **flags,
        HAS_MASK=has_mask, HAS_TEMP=has_temp, DENSE=dense,
        num_warps=num_warps, enable_fp_fusion=False,  # same IEEE ops as the torch path
    )
    return logits
