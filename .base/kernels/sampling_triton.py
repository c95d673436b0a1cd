"""Triton sampler (the GPU path): one program per row, the pivot search of sampling_torch.py.

Pass 0 reads the row once (max + first candidate); each round reads it once more
(mass above the pivot, mass of the top-k/min-p set, next candidate). Per-lane
accumulators keep the loops free of reductions; the noise is recomputed from the
counter-based hash (rng.py) in every pass instead of being stored. Per-row parameters
(greedy flag, 1/T, log min-p, noise keys) are derived in the kernel from the raw
inputs, exactly as sampling.row_params does in torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _args, rng

MAX_ROUNDS = 64
GOLDEN = tl.constexpr(rng.GOLDEN)
M1 = tl.constexpr(rng.M1)
M2 = tl.constexpr(rng.M2)
SALT_A = tl.constexpr(rng.KEY_SALT_A)
SALT_B = tl.constexpr(rng.KEY_SALT_B)
GREEDY_EPS = tl.constexpr(_args.GREEDY_EPS)


@triton.jit
def _hash32(x):
    x = x ^ (x >> 16)
    x = x * M1
    x = x ^ (x >> 15)
    x = x * M2
    return x ^ (x >> 16)


@triton.jit
def _lo_hi(v):
    """int64 scalar -> (low, high) 32-bit words as uint32."""
    lo = (v & 0xFFFFFFFF).to(tl.uint32)
    hi = ((v >> 32) & 0xFFFFFFFF).to(tl.uint32)
    return lo, hi


@triton.jit
def _row_keys(seed, step):
    s_lo, s_hi = _lo_hi(seed)
    t_lo, t_hi = _lo_hi(step)
    a = _hash32(s_lo ^ _hash32(s_hi + SALT_A))
    b = _hash32(t_lo ^ _hash32(t_hi + SALT_B) ^ _hash32(a))
    return a, b


@triton.jit
def _gumbel(offs, key_a, key_b):
    h = offs.to(tl.uint32) * GOLDEN + key_a
    h = _hash32(_hash32(h) ^ key_b)
    u = ((h >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07  # 2**-23
    return -tl.log(-tl.log(u))


@triton.jit
def _sample_kernel(
    x_ptr, x_stride, V, out_ptr,
    temp_ptr, top_p_ptr, min_p_ptr, theta_k_ptr, seed_ptr, step_ptr,
    BLOCK: tl.constexpr, MAX_R: tl.constexpr,
    HAS_TEMP: tl.constexpr, SCALED: tl.constexpr, HAS_TOP_P: tl.constexpr,
    HAS_MIN_P: tl.constexpr, HAS_TOP_K: tl.constexpr, HAS_STEP: tl.constexpr,
):
    row = tl.program_id(0)
    xrow = x_ptr + row.to(tl.int64) * x_stride
    ninf = float("-inf")
    # per-row parameters (same rules as sampling.row_params)
    greedy = row < 0  # False
    inv_t = 1.0
    if HAS_TEMP:
        t = tl.load(temp_ptr + row)
        greedy = t < GREEDY_EPS
        if not SCALED:
            inv_t = tl.where(greedy, 1.0, tl.math.div_rn(tl.full([], 1.0, tl.float32), t))
    noise = tl.where(greedy, 0.0, 1.0)
    top_p = 1.0
    if HAS_TOP_P:
        top_p = tl.where(greedy, 1.0, tl.load(top_p_ptr + row))
    log_min_p = ninf
    if HAS_MIN_P:
        mp = tl.load(min_p_ptr + row)
        log_min_p = tl.where((mp > 0) & (greedy == 0), tl.log(tl.maximum(mp, 1e-30)), ninf)
    theta_k = ninf
    if HAS_TOP_K:
        theta_k = tl.load(theta_k_ptr + row)
    step = tl.full([], 0, tl.int64)
    if HAS_STEP:
        step = tl.load(step_ptr + row)
    key_a, key_b = _row_keys(tl.load(seed_ptr + row), step)
    lanes = tl.arange(0, BLOCK)

    # pass 0: row max, invalid values, first candidate
    mx = tl.full([BLOCK], ninf, tl.float32)
    bad = tl.zeros([BLOCK], tl.int32)
    best = tl.full([BLOCK], ninf, tl.float32)
    best_i = tl.zeros([BLOCK], tl.int32)
    for start in range(0, V, BLOCK):
        offs = start + lanes
        x = tl.load(xrow + offs, mask=offs < V, other=ninf).to(tl.float32)
        isnan = x != x
        bad = bad | (isnan | (x == float("inf"))).to(tl.int32)
        x = tl.where(isnan, ninf, x)
        xs = x * inv_t
        mx = tl.maximum(mx, xs)
        key = tl.where(x >= theta_k, xs + _gumbel(offs, key_a, key_b) * noise, ninf)
        upd = key > best
        best = tl.where(upd, key, best)
        best_i = tl.where(upd, offs, best_i)
    m = tl.max(mx, 0)
    is_bad = tl.max(bad, 0) != 0
    top = tl.max(best, 0)
    cand = tl.min(tl.where(best == top, best_i, V), 0)
    cand = tl.minimum(cand, V - 1)
    thr = m + log_min_p
    xc = tl.load(xrow + cand).to(tl.float32)
    cand_xs = tl.where(xc != xc, ninf, xc) * inv_t
    valid = cand_xs >= thr
    done = is_bad | (m == ninf) | (valid & (top_p >= 1.0))

    r = 0
    while (done == 0) & (r < MAX_R):
        acc_above = tl.zeros([BLOCK], tl.float32)
        acc_r = tl.zeros([BLOCK], tl.float32)
        best = tl.full([BLOCK], ninf, tl.float32)
        best_i = tl.zeros([BLOCK], tl.int32)
        for start in range(0, V, BLOCK):
            offs = start + lanes
            x = tl.load(xrow + offs, mask=offs < V, other=ninf).to(tl.float32)
            x = tl.where(x != x, ninf, x)
            xs = x * inv_t
            in_r = (x >= theta_k) & (xs >= thr)
            e = tl.exp(xs - m)
            above = xs > cand_xs
            acc_above += tl.where(above, e, 0.0)
            acc_r += tl.where(in_r, e, 0.0)
            key = tl.where(above & in_r, xs + _gumbel(offs, key_a, key_b) * noise, ninf)
            upd = key > best
            best = tl.where(upd, key, best)
            best_i = tl.where(upd, offs, best_i)
        mass_above = tl.sum(acc_above, 0)
        mass_r = tl.sum(acc_r, 0)
        top = tl.max(best, 0)
        new = tl.minimum(tl.min(tl.where(best == top, best_i, V), 0), V - 1)
        has_new = top > ninf
        accept = valid & (mass_above < top_p * mass_r)
        take = (accept == 0) & has_new
        xn = tl.load(xrow + new).to(tl.float32)
        cand = tl.where(take, new, cand)
        cand_xs = tl.where(take, xn * inv_t, cand_xs)
        valid = valid | take
        done = accept | (has_new == 0) | (take & (top_p >= 1.0))
        r += 1
    tl.store(out_ptr + row, tl.where(is_bad | (m == ninf), -1, cand).to(tl.int64))


def sample_triton(logits: torch.Tensor, a, block: int | None = None,
                  num_warps: int | None = None) -> torch.Tensor:
    """``a``: sampling.SamplingArgs. Returns int64 [B] (-1 for invalid rows)."""
    b, v = logits.shape
    out = torch.empty(b, dtype=torch.int64, device=logits.device)
    if b == 0:
        return out
    block = block or min(8192, triton.next_power_of_2(v))  # 8192 x 16 warps: best on H200
    num_warps = num_warps or (16 if block >= 4096 else 4)

    def ptr(t):
        return logits if t is None else t  # placeholder when the HAS_* flag is off

    _sample_kernel[(b,)](
        logits, logits.stride(0), v, out,
        ptr(a.temperature), ptr(a.top_p), ptr(a.min_p), ptr(a.theta_k), a.seeds, ptr(a.steps),
        BLOCK=block, MAX_R=MAX_ROUNDS,
        HAS_TEMP=a.temperature is not None, SCALED=a.logits_scaled,
        HAS_TOP_P=a.top_p is not None, HAS_MIN_P=a.min_p is not None,
        HAS_TOP_K=a.theta_k is not None, HAS_STEP=a.steps is not None,
        num_warps=num_warps,
    )
    return out
