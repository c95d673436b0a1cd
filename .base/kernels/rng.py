"""Counter-based noise for the sampler: the same bits in torch (CPU) and Triton (GPU).

A token's uniform variate is a pure function of (row key, token id); the row key is a
function of (seed, step). Hash: Chris Wellons' ``lowbias32``, applied twice. The
uniform keeps 23 bits: ``u = ((h >> 9) + 0.5) * 2**-23``, exactly representable in
float32 and strictly inside (0, 1), so the Gumbel noise ``-log(-log(u))`` is finite.

torch has no uint32 arithmetic on the CPU, so the torch version works in int32 with
wrap-around multiplication and masks after right shifts (logical shifts).
"""

from __future__ import annotations

import torch

GOLDEN = 0x9E3779B1
M1 = 0x7FEB352D
M2 = 0x846CA68B
KEY_SALT_A = 0x68E31DA4
KEY_SALT_B = 0xB5297A4D


def _i32(c: int) -> int:
    """An unsigned 32-bit constant as the int32 with the same bits."""
    return c - (1 << 32) if c >= (1 << 31) else c


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    return (x >> s) & ((1 << (32 - s)) - 1)


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int32 tensors (bits as uint32)."""
    x = x ^ _shr(x, 16)
    x = x * _i32(M1)
    x = x ^ _shr(x, 15)
    x = x * _i32(M2)
    return x ^ _shr(x, 16)


def row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 seeds [B] and steps [B] -> two int32 key words [B] (uint32 bits)."""
    s = seeds.to(torch.int64)
    t = steps.to(torch.int64)

    def lo(v):
        return (v & 0xFFFFFFFF).to(torch.int64).sub((v & 0xFFFFFFFF).ge(1 << 31).long() << 32).to(torch.int32)

    def hi(v):
        return lo(v >> 32)

    a = hash32(lo(s) ^ hash32(hi(s) + _i32(KEY_SALT_A)))
    b = hash32(lo(t) ^ hash32(hi(t) + _i32(KEY_SALT_B)) ^ hash32(a))
    return a.contiguous(), b.contiguous()


def token_bits(key_a: torch.Tensor, key_b: torch.Tensor, vocab: int) -> torch.Tensor:
    """[B] x [B] -> int32 [B, V] hash bits for tokens 0..V-1."""
    tok = torch.arange(vocab, dtype=torch.int32, device=key_a.device)
    h = tok.view(1, -1) * _i32(GOLDEN) + key_a.view(-1, 1)
    h = hash32(h) ^ key_b.view(-1, 1)
    return hash32(h)


def uniform_from_bits(h: torch.Tensor) -> torch.Tensor:
    return (_shr(h, 9).to(torch.float32) + 0.5) * (2.0 ** -23)


def gumbel_noise(key_a: torch.Tensor, key_b: torch.Tensor, vocab: int) -> torch.Tensor:
    """float32 [B, V] Gumbel(0, 1) noise, deterministic in the keys."""
    u = uniform_from_bits(token_bits(key_a, key_b, vocab))
    return -torch.log(-torch.log(u))
