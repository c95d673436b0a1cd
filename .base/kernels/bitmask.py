"""Packed banned-token bitmasks.

Layout: int32 words, 32 tokens per word, shape ``[B, bitmask_words(V)]``.
Bit ``j`` (least significant bit = 0) of word ``w`` set means token ``32 * w + j``
is banned. Bits past ``V`` in the last word are ignored.
"""

from __future__ import annotations

import torch



def bitmask_words(vocab_size: int) -> int:
    """Number of int32 words per row for a vocabulary of ``vocab_size`` tokens."""
    return (int(vocab_size) + 31) // 32


def pack_token_bitmask(banned: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor ``[B, V]`` (True = banned) into int32 words ``[B, ceil(V/32)]``."""
    if banned.dim() != 2:
        raise ValueError(f"banned must be [B, V], got shape {tuple(banned.shape)}")
    b, v = banned.shape
    w = bitmask_words(v)
    padded = torch.zeros((b, w * 32), dtype=torch.int64, device=banned.device)
    padded[:, :v] = banned.to(torch.int64)
    weights = torch.ones(32, dtype=torch.int64, device=banned.device) << torch.arange(
        32, device=banned.device
    )
    words = (padded.view(b, w, 32) * weights).sum(-1)  # in [0, 2**32)
    words = torch.where(words >= 2**31, words - 2**32, words)  # reinterpret as signed
    return words.to(torch.int32)


def unpack_token_bitmask(words: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Inverse of :func:`pack_token_bitmask`: int32 ``[B, W]`` -> bool ``[B, V]``.

    Vectorised: the words are viewed as little-endian bytes and each byte is
    shifted by 0..7, so the temporary costs one byte per token.
    """
    if words.dtype != torch.int32 or words.dim() != 2:
        raise ValueError("bitmask must be an int32 tensor [B, W]")
    b, w = words.shape
    if w * 32 < vocab_size:
        raise ValueError(f"bitmask has {w} words, needs {bitmask_words(vocab_size)}")
    as_bytes = words.contiguous().view(torch.uint8)  # [B, 4W], little-endian byte order
    if not _little_endian():
        as_bytes = as_bytes.view(b, w, 4).flip(-1).reshape(b, 4 * w)
    shifts = torch.arange(8, dtype=torch.uint8, device=words.device)
    bits = (as_bytes.unsqueeze(-1) >> shifts) & 1  # [B, 4W, 8] uint8 in {0, 1}
    return bits.view(b, 32 * w)[:, :vocab_size].view(torch.bool)


def banned_flat_indices(words: torch.Tensor, vocab_size: int, row_stride: int) -> torch.Tensor:
    """Flat indices (row * row_stride + token) of the banned tokens of a sparse bitmask.

    Only the non-zero words are expanded, so the cost follows the number of banned tokens,
    not ``B * V`` — the common case for steering masks (a few tokens per row).
    """
    rows, cols = words.nonzero(as_tuple=True)
    values = words[rows, cols]
    shifts = torch.arange(32, dtype=torch.int32, device=words.device)
    hit, bit = ((values.unsqueeze(1) >> shifts) & 1).nonzero(as_tuple=True)
    tokens = cols[hit] * 32 + bit
    keep = tokens < vocab_size
    return (rows[hit] * row_stride + tokens)[keep]


def _little_endian() -> bool:
    import sys

    return sys.byteorder == "little"
