"""Triton kernels for the fused logit controls (the GPU path).

Two ways to run the same stages (bias -> penalties -> ban -> temperature):

* ``fused`` — one launch, grid ``(B, cdiv(V, BLOCK))``. Program ``(r, j)`` owns tokens
  ``[j*BLOCK, (j+1)*BLOCK)`` of row ``r``: it scans row r's bias and penalty CSR ranges,
  read-modify-writes the entries that fall in its block (a CTA barrier after each
  stage), then streams the block once: ban + temperature. Each token is touched by
  exactly one program, so no atomics. Costs a scan of the row's lists per block.
* ``split`` — two launches: a sparse kernel, grid ``(B,)``, applies bias then penalties
  to the listed tokens of its row; then a dense kernel streams ban + temperature.

Sparse stages, hoisted form (default, ``_row_lists`` + ``_sparse_rest``): both lists'
bounds, then both lists' entries, then one gather of all listed logits are issued
together (3 dependent trips instead of 6); penalties reload their logits after the bias
stores + a barrier (a token may be in both lists). Staged form (``_sparse_stages``):
bias chain, barrier, penalty chain. See ``pick_hoist``.

All move one read + one write of the logits plus the bitmask (1/8 byte per token);
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

FUSED_CHUNK = 256  # sparse entries scanned per step by each fused program (staged code)
SPARSE_CHUNK = 512  # ... by each program of the split sparse kernel, and by the hoisted code


@triton.jit
def _penalize(x, cnt, prm, rep, pres, freq, HAS_PROMPT: tl.constexpr, HAS_REP: tl.constexpr,
              HAS_PRES: tl.constexpr, HAS_FREQ: tl.constexpr):
    """Repetition, frequency, presence penalties on float32 ``x`` (cnt float32, prm bool)."""
    in_out = cnt > 0
    if HAS_REP:
        seen = in_out
        if HAS_PROMPT:
            seen = seen | prm
        scaled = tl.where(x > 0, tl.math.div_rn(x, tl.full(x.shape, 1.0, tl.float32) * rep),
                          x * rep)
        x = tl.where(seen, scaled, x)
    if HAS_FREQ:
        x = x - freq * cnt
    if HAS_PRES:
        x = x - tl.where(in_out, pres, 0.0)
    return x


@triton.jit
def _row_penalties(rep_ptr, pres_ptr, freq_ptr, row, HAS_REP: tl.constexpr,
                   HAS_PRES: tl.constexpr, HAS_FREQ: tl.constexpr):
    rep = 1.0
    pres = 0.0
    freq = 0.0
    if HAS_REP:
        rep = tl.load(rep_ptr + row)
    if HAS_PRES:
        pres = tl.load(pres_ptr + row)
    if HAS_FREQ:
        freq = tl.load(freq_ptr + row)
    return rep, pres, freq


@triton.jit
def _pen_entries(j, m, p_counts, p_prompt, CHUNK: tl.constexpr, HAS_COUNTS: tl.constexpr,
                 HAS_PROMPT: tl.constexpr):
    """Output counts (float32) and in-prompt flags (bool) of penalty entries j."""
    if HAS_COUNTS:
        cnt = tl.load(p_counts + j, mask=m, other=0).to(tl.float32)
    else:
        cnt = tl.zeros([CHUNK], dtype=tl.float32)
    if HAS_PROMPT:
        prm = tl.load(p_prompt + j, mask=m, other=0) != 0
    else:
        prm = cnt < 0  # all False
    return cnt, prm


@triton.jit
def _finish(x, banned, inv, HAS_MASK: tl.constexpr, HAS_TEMP: tl.constexpr):
    """Ban, then temperature, on float32 ``x`` (the dense stages; same ops for every token)."""
    if HAS_MASK:
        x = tl.where(banned, float("-inf"), x)
    if HAS_TEMP:
        x = x * inv
    return x


@triton.jit
def _inv_temp(temp_ptr, row, greedy_eps, HAS_TEMP: tl.constexpr):
    inv = 1.0
    if HAS_TEMP:
        t = tl.load(temp_ptr + row)
        inv = tl.where(t < greedy_eps, 1.0, tl.math.div_rn(tl.full([], 1.0, tl.float32), t))
    return inv


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
    """Staged form: bias, barrier, penalties, for entries whose token is in
    [lo, hi). Every load waits for the one before it (indptr -> ids -> logits)."""
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
        rep, pres, freq = _row_penalties(rep_ptr, pres_ptr, freq_ptr, row, HAS_REP, HAS_PRES,
                                         HAS_FREQ)
        start = tl.load(p_indptr + row)
        end = tl.load(p_indptr + row + 1)
        for i in range(start, end, CHUNK):
            j = i + tl.arange(0, CHUNK)
            m = j < end
            tok = tl.load(p_ids + j, mask=m, other=-1)
            m = m & (tok >= lo) & (tok < hi)
            x = tl.load(xrow + tok, mask=m, other=0.0).to(tl.float32)
            cnt, prm = _pen_entries(j, m, p_counts, p_prompt, CHUNK, HAS_COUNTS, HAS_PROMPT)
            x = _penalize(x, cnt, prm, rep, pres, freq, HAS_PROMPT, HAS_REP, HAS_PRES, HAS_FREQ)
            tl.store(xrow + tok, x.to(out_ty), mask=m)
        tl.debug_barrier()


@triton.jit
def _row_lists(
    row, lo, hi,
    b_indptr, b_ids, b_vals,
    p_indptr, p_ids, p_counts, p_prompt,
    CHUNK: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_PEN: tl.constexpr, HAS_COUNTS: tl.constexpr,
    HAS_PROMPT: tl.constexpr,
):
    """Both lists' bounds and first CHUNK entries (tokens in [lo, hi) only), with no load
    waiting on another list's loads: the two chains indptr -> ids/values/counts/prompt
    are issued together."""
    offs = tl.arange(0, CHUNK)
    bs = tl.full([], 0, tl.int32)
    be = bs
    ps = bs
    pe = bs
    tb = tl.full([CHUNK], -1, tl.int32)
    mb = tb >= 0  # all False
    vb = tl.zeros([CHUNK], dtype=tl.float32)
    tp = tb
    mp = mb
    cnt = vb
    prm = mb
    if HAS_BIAS:
        bs = tl.load(b_indptr + row)
        be = tl.load(b_indptr + row + 1)
    if HAS_PEN:
        ps = tl.load(p_indptr + row)
        pe = tl.load(p_indptr + row + 1)
    if HAS_BIAS:
        jb = bs + offs
        mb = jb < be
        tb = tl.load(b_ids + jb, mask=mb, other=-1)
        mb = mb & (tb >= lo) & (tb < hi)
        vb = tl.load(b_vals + jb, mask=mb, other=0.0)
    if HAS_PEN:
        jp = ps + offs
        mp = jp < pe
        tp = tl.load(p_ids + jp, mask=mp, other=-1)
        mp = mp & (tp >= lo) & (tp < hi)
        cnt, prm = _pen_entries(jp, mp, p_counts, p_prompt, CHUNK, HAS_COUNTS, HAS_PROMPT)
    return bs, be, tb, mb, vb, ps, pe, tp, mp, cnt, prm


@triton.jit
def _prefetched(ptrs, toks, x_early, mask, hi):
    """Keep the early load ``x_early`` of ``ptrs`` alive: a store under a condition that is
    false at run time (``hi < 0``), which the compiler cannot prove. Issued with the bias gather, that load brings the
    penalty tokens' lines into the caches, so the reload after the bias stores (needed
    for tokens in both lists) hits them instead of making a second DRAM trip. A plain use
    such as ``where(bits equal, x_early, reload)`` is folded away by the compiler."""
    tl.store(ptrs, x_early, mask=mask & ((toks * 0 + hi) < 0))  # vector form: interpreter


@triton.jit
def _sparse_rest(
    xrow, row, lo, hi,
    bs, be, tb, mb, vb, ps, pe, tp, mp, cnt, prm,
    b_ids, b_vals, p_ids, p_counts, p_prompt,
    rep_ptr, pres_ptr, freq_ptr,
    CHUNK: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_PEN: tl.constexpr, HAS_COUNTS: tl.constexpr,
    HAS_PROMPT: tl.constexpr, HAS_REP: tl.constexpr, HAS_PRES: tl.constexpr,
    HAS_FREQ: tl.constexpr,
):
    """Hoisted form of the sparse stages, in memory (after :func:`_row_lists`): one gather
    for both lists' first chunks, bias stores, barrier, penalties. Entries past the first
    CHUNK of a list go through the staged loop."""
    out_ty = xrow.dtype.element_ty
    if HAS_BIAS:
        xb = tl.load(xrow + tb, mask=mb, other=0.0).to(tl.float32)
    if HAS_PEN:
        rep, pres, freq = _row_penalties(rep_ptr, pres_ptr, freq_ptr, row, HAS_REP, HAS_PRES,
                                         HAS_FREQ)
        xp = tl.load(xrow + tp, mask=mp, other=0.0)  # original values
        if HAS_BIAS:
            _prefetched(xrow + tp, tp, xp, mp, hi)
    if HAS_BIAS:
        tl.store(xrow + tb, (xb + vb).to(out_ty), mask=mb)
        for i in range(bs + CHUNK, be, CHUNK):
            j = i + tl.arange(0, CHUNK)
            m = j < be
            tok = tl.load(b_ids + j, mask=m, other=-1)
            m = m & (tok >= lo) & (tok < hi)
            bias = tl.load(b_vals + j, mask=m, other=0.0)
            x = tl.load(xrow + tok, mask=m, other=0.0).to(tl.float32)
            tl.store(xrow + tok, (x + bias).to(out_ty), mask=m)
        tl.debug_barrier()
    if HAS_PEN:
        if HAS_BIAS:  # a penalty token may also be biased: reload (a cache hit)
            xp = tl.load(xrow + tp, mask=mp, other=0.0)
        x = _penalize(xp.to(tl.float32), cnt, prm, rep, pres, freq, HAS_PROMPT, HAS_REP,
                      HAS_PRES, HAS_FREQ)
        tl.store(xrow + tp, x.to(out_ty), mask=mp)
        for i in range(ps + CHUNK, pe, CHUNK):
            j = i + tl.arange(0, CHUNK)
            m = j < pe
            tok = tl.load(p_ids + j, mask=m, other=-1)
            m = m & (tok >= lo) & (tok < hi)
            x = tl.load(xrow + tok, mask=m, other=0.0).to(tl.float32)
            c, pr = _pen_entries(j, m, p_counts, p_prompt, CHUNK, HAS_COUNTS, HAS_PROMPT)
            x = _penalize(x, c, pr, rep, pres, freq, HAS_PROMPT, HAS_REP, HAS_PRES, HAS_FREQ)
            tl.store(xrow + tok, x.to(out_ty), mask=m)
        tl.debug_barrier()


@triton.jit
def _tile_offsets(blk, V, BLOCK: tl.constexpr):
    WPB: tl.constexpr = BLOCK // 32
    words_idx = blk * WPB + tl.arange(0, WPB)
    offs = words_idx[:, None] * 32 + tl.arange(0, 32)[None, :]
    return words_idx, offs, offs < V


@triton.jit
def _tile_banned(row, words_idx, m_ptr, m_stride, W, mr_ptr, S, HAS_MASK: tl.constexpr,
                 HAS_MROWS: tl.constexpr):
    """The tile's banned flags: bitmask row ``row``, or with ``HAS_MROWS`` table row
    ``mr_ptr[row]``; a slot outside [0, S) bans the whole tile (fail closed: no host
    check, which would cost a synchronisation)."""
    if HAS_MASK:
        mrow = row
        if HAS_MROWS:
            slot = tl.load(mr_ptr + row)
            ok = (slot >= 0) & (slot < S)
            mrow = tl.where(ok, slot, 0)
        words = tl.load(m_ptr + mrow.to(tl.int64) * m_stride + words_idx,
                        mask=words_idx < W, other=0)
        if HAS_MROWS:
            words = tl.where(ok, words, -1)
        banned = (words[:, None] & (1 << tl.arange(0, 32))[None, :]) != 0
    else:
        banned = False
    return banned


@triton.jit
def _dense_tile(
    xrow, row, blk, V, m_ptr, m_stride, W, mr_ptr, S, temp_ptr, greedy_eps,
    BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, HAS_MROWS: tl.constexpr,
    HAS_TEMP: tl.constexpr,
):
    """One read + one write of tokens [blk*BLOCK, (blk+1)*BLOCK): ban, then temperature."""
    words_idx, offs, valid = _tile_offsets(blk, V, BLOCK)
    x = tl.load(xrow + offs, mask=valid, other=0.0).to(tl.float32)
    banned = _tile_banned(row, words_idx, m_ptr, m_stride, W, mr_ptr, S, HAS_MASK, HAS_MROWS)
    x = _finish(x, banned, _inv_temp(temp_ptr, row, greedy_eps, HAS_TEMP), HAS_MASK, HAS_TEMP)
    tl.store(xrow + offs, x.to(xrow.dtype.element_ty), mask=valid)


@triton.jit
def _logits_row(xr_ptr, row, HAS_XROWS: tl.constexpr):
    """The logits row of controls row ``row``: itself, or ``xr_ptr[row]``."""
    out = row
    if HAS_XROWS:
        out = tl.load(xr_ptr + row)
    return out


@triton.jit
def _fused_kernel(
    x_ptr, x_stride, V, span, xr_ptr,
    b_indptr, b_ids, b_vals,
    m_ptr, m_stride, W, mr_ptr, S,
    p_indptr, p_ids, p_counts, p_prompt,
    rep_ptr, pres_ptr, freq_ptr, temp_ptr,
    greedy_eps,
    BLOCK: tl.constexpr, CHUNK: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_PEN: tl.constexpr, HAS_COUNTS: tl.constexpr,
    HAS_PROMPT: tl.constexpr, HAS_REP: tl.constexpr, HAS_PRES: tl.constexpr,
    HAS_FREQ: tl.constexpr, HAS_MASK: tl.constexpr, HAS_TEMP: tl.constexpr,
    DENSE: tl.constexpr, HOIST: tl.constexpr, HAS_XROWS: tl.constexpr,
    HAS_MROWS: tl.constexpr,
):
    row = tl.program_id(0)  # the controls' row; its logits row: xr_ptr[row] with HAS_XROWS
    blk = tl.program_id(1)
    lo = blk * span
    hi = tl.minimum(lo + span, V)
    xrow = x_ptr + _logits_row(xr_ptr, row, HAS_XROWS).to(tl.int64) * x_stride
    if HOIST:
        bs, be, tb, mb, vb, ps, pe, tp, mp, cnt, prm = _row_lists(
            row, lo, hi, b_indptr, b_ids, b_vals, p_indptr, p_ids, p_counts, p_prompt,
            CHUNK, HAS_BIAS, HAS_PEN, HAS_COUNTS, HAS_PROMPT)
        _sparse_rest(xrow, row, lo, hi, bs, be, tb, mb, vb, ps, pe, tp, mp, cnt, prm,
                     b_ids, b_vals, p_ids, p_counts, p_prompt, rep_ptr, pres_ptr, freq_ptr,
                     CHUNK, HAS_BIAS, HAS_PEN, HAS_COUNTS, HAS_PROMPT, HAS_REP, HAS_PRES,
                     HAS_FREQ)
    else:
        _sparse_stages(xrow, row, lo, hi, b_indptr, b_ids, b_vals, p_indptr, p_ids, p_counts,
                       p_prompt, rep_ptr, pres_ptr, freq_ptr, CHUNK, HAS_BIAS, HAS_PEN,
                       HAS_COUNTS, HAS_PROMPT, HAS_REP, HAS_PRES, HAS_FREQ)
    if DENSE:
        _dense_tile(xrow, row, blk, V, m_ptr, m_stride, W, mr_ptr, S, temp_ptr, greedy_eps,
                    BLOCK, HAS_MASK, HAS_MROWS, HAS_TEMP)


@triton.jit
def _dense_kernel(
    x_ptr, x_stride, V, xr_ptr, m_ptr, m_stride, W, mr_ptr, S, temp_ptr, greedy_eps,
    BLOCK: tl.constexpr, HAS_MASK: tl.constexpr, HAS_TEMP: tl.constexpr,
    HAS_XROWS: tl.constexpr, HAS_MROWS: tl.constexpr,
):
    row = tl.program_id(0)
    xrow = x_ptr + _logits_row(xr_ptr, row, HAS_XROWS).to(tl.int64) * x_stride
    _dense_tile(xrow, row, tl.program_id(1), V, m_ptr, m_stride, W, mr_ptr, S, temp_ptr,
                greedy_eps, BLOCK, HAS_MASK, HAS_MROWS, HAS_TEMP)


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def pick_config(batch: int, vocab: int, elem_size: int, device: torch.device,
                mode: str = "fused") -> tuple[int, int]:
    """(BLOCK, num_warps), 4 warps. Fused programs: 8 KB tiles (64 bytes per
    thread, 4 x 16-byte accesses; fewer programs = fewer rescans of the row's lists).
    The split form's dense kernel: 4 KB tiles (2048 bf16 / 1024 fp32). Smaller blocks
    when the grid would leave SMs idle (B = 1). The measurements behind these choices are
    in docs/kernels.md."""
    tile_bytes = 4096 if mode == "split" else 8192
    block = tile_bytes // elem_size
    sms = _num_sms(device)
    while block > 512 and batch * triton.cdiv(vocab, block) < 2 * sms:
        block //= 2
    return block, 4


def pick_mode(batch: int, nnz: int, host_bound: bool = False) -> str:
    """One fused launch for small batches (one launch less of host time); the split form
    from B = 128 and whenever the sparse lists are long (more than 1024 entries per row on
    average), because every fused program rescans its row's lists. docs/kernels.md has
    the measurements. ``host_bound`` (the caller has just waited for the device, so the
    GPU idles until the launch): fused at any batch while the lists are short, since a
    second launch costs ~40 µs of host time (H200, docs/kernels.md) where the split form
    saves 1.6-13 µs of GPU time at B = 256."""
    if nnz > 1024 * max(batch, 1):
        return "split"
    if batch >= 128 and not host_bound:
        return "split"
    return "fused"


def pick_hoist(mode: str, elem_size: int, grid: int) -> bool:
    """Hoisted sparse code, except for the one kind of shape where the staged code was
    measured faster: fused, 16-bit logits, a grid of 769-1056 programs (a single fitted
    point, probably occupancy; docs/kernels.md)."""
    return not (mode == "fused" and elem_size == 2 and 768 < grid <= 1056)


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
    mask_rows=None,
    logit_rows=None,
    mode: str = "auto",
    block: int | None = None,
    num_warps: int | None = None,
    hoist: bool | None = None,
    host_bound: bool = False,
) -> torch.Tensor:
    """Launch the kernel(s). Arguments must already be normalised (see logit_controls.py).
    ``mode``: "fused" (one launch, sparse stages then the tile), "split" (sparse kernel,
    then dense kernel) or "auto" (see :func:`pick_mode`, which ``host_bound`` informs).
    ``hoist``: True = sparse stages with all independent loads issued up front, False =
    the staged form, None = :func:`pick_hoist`.
    ``mask_rows`` int32 [k]: ``banned_bitmask`` is a table and row j's mask is its row
    ``mask_rows[j]``, read in place (a slot outside the table bans the whole row).
    ``logit_rows`` int32 [k]: the controls' row j applies to logits row ``logit_rows[j]``
    (distinct rows, each in range: the caller's guarantee); the other rows are left
    alone. Without it, k is the logits' row count."""
    b, v = logits.shape
    if logit_rows is not None:
        b = logit_rows.numel()
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
    has_mrows = has_mask and mask_rows is not None
    mask_args = (
        banned_bitmask if has_mask else x,
        banned_bitmask.stride(0) if has_mask else 0,
        banned_bitmask.shape[1] if has_mask else 0,
        mask_rows if has_mrows else x,
        banned_bitmask.shape[0] if has_mask else 0,
    )
    has_xrows = logit_rows is not None
    xr = logit_rows if has_xrows else x
    rows_flags = dict(HAS_XROWS=has_xrows, HAS_MROWS=has_mrows)
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
        mode = pick_mode(b, nnz, host_bound)
    if mode not in ("fused", "split"):
        raise ValueError(f"mode must be 'fused', 'split' or 'auto', got {mode!r}")
    if block is None:
        block, warps = pick_config(b, v, logits.element_size(), logits.device, mode)
        num_warps = num_warps or warps
    num_warps = num_warps or 4
    if hoist is None:
        hoist = pick_hoist(mode, logits.element_size(), b * triton.cdiv(v, block))
    sparse = has_bias or has_pen
    if mode == "split" and dense:
        if sparse:
            _fused_kernel[(b, 1)](
                logits, logits.stride(0), v, v, xr, *sparse_args, *mask_args, *pen_args,
                temp, GREEDY_EPS, BLOCK=32, CHUNK=SPARSE_CHUNK, **flags,
                HAS_MASK=False, HAS_TEMP=False, DENSE=False, HOIST=hoist,
                HAS_XROWS=has_xrows, HAS_MROWS=False, num_warps=4, enable_fp_fusion=False)
        _dense_kernel[(b, triton.cdiv(v, block))](
            logits, logits.stride(0), v, xr, *mask_args, temp, GREEDY_EPS,
            BLOCK=block, HAS_MASK=has_mask, HAS_TEMP=has_temp, **rows_flags,
            num_warps=num_warps, enable_fp_fusion=False)
        return logits
    if dense:
        span, nblocks = block, triton.cdiv(v, block)
        chunk = SPARSE_CHUNK if hoist else FUSED_CHUNK
    else:  # sparse stages only: one program per row covers the whole vocabulary
        span, nblocks, chunk, block = v, 1, SPARSE_CHUNK, 32
    _fused_kernel[(b, nblocks)](
        logits, logits.stride(0), v, span, xr, *sparse_args, *mask_args, *pen_args, temp,
        GREEDY_EPS, BLOCK=block, CHUNK=chunk, **flags,
        HAS_MASK=has_mask, HAS_TEMP=has_temp, DENSE=dense, HOIST=hoist, **rows_flags,
        num_warps=num_warps, enable_fp_fusion=False,  # same IEEE ops as the torch path
    )
    return logits
