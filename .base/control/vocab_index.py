"""Per-tokenizer vocabulary index for the ban automaton (built once per process).

For every token id it holds

* ``token_bytes`` — the bytes the token contributes to the decoded output (``None`` for
  special / added-special tokens: with ``skip_special_tokens`` they contribute nothing
  and are never banned);
* ``texts`` — the folded text (:func:`.normalize.fold_text`, leading separator kept,
  internal runs collapsed) of those bytes decoded as UTF-8 *when no bytes are pending*,
  with invalid bytes decoded to U+FFFD (a separator), and ``tails`` — the trailing bytes
  of an incomplete UTF-8 sequence, which stay pending until the next token;
* ``sorted_texts`` / ``sorted_ids`` — the folded texts sorted by code point: the tokens
  whose folded text starts with a string ``r`` form one contiguous range, found with two
  binary searches (:meth:`VocabIndex.prefix_ranges`, vectorised with ``np.searchsorted``);
* ``sep_texts`` / ``sep_ids`` — every suffix of every folded text that starts at a
  separator, sorted: the tokens that *contain* ``SEP + pattern`` somewhere are a union of
  ranges there;
* ``cont_ids`` — tokens whose bytes start with a UTF-8 continuation byte (they are the
  only ones whose meaning depends on pending bytes).

Token bytes come from the tokenizer's own model: byte-level BPE (GPT-2 byte alphabet,
exact), SentencePiece-style with byte fallback ("▁" = space, "<0xAB>" = byte, exact), or
— for anything else — ``tokenizer.decode([id])`` per token (approximate; a warning is
logged, and the guarantee then only holds as far as per-token decoding is faithful).
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .normalize import SEP, fold_text

logger = logging.getLogger("greyelephant.control")

_HI = "\U0010ffff"  # never in folded text (not alnum, so it would fold to SEP)
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode`` alphabet."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def decode_utf8(data: bytes) -> tuple[str, bytes]:
    """Decode as much of ``data`` as is complete (invalid bytes → U+FFFD); return the text
    and the incomplete tail that must wait for more bytes."""
    text, used = codecs.utf_8_decode(data, "replace", False)
    return text, data[used:]


def _decoder_kind(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(
        tokenizer, "_tokenizer", None
    )
    if backend is None:
        return "other"
    try:
        spec = json.loads(backend.to_str()).get("decoder") or {}
    except Exception:  # pragma: no cover - exotic backends
        return "other"
    kinds = {spec.get("type")} | {d.get("type") for d in spec.get("decoders", []) or []}
    if "ByteLevel" in kinds:
        return "bytelevel"
    if "ByteFallback" in kinds or "Metaspace" in kinds or "Replace" in kinds:
        return "sentencepiece"
    return "other"


def token_bytes_table(tokenizer: Any) -> tuple[list[bytes | None], str]:
    """Bytes each token id contributes to decoded text (None = special, contributes
    nothing), and the decoding kind used."""
    n = len(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    for tid, tok in added.items():
        if getattr(tok, "special", False):
            special.add(int(tid))
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    kind = _decoder_kind(tokenizer)
    table: list[bytes | None] = []
    if kind == "bytelevel":
        bd = byte_decoder()
        for tid, piece in enumerate(pieces):
            if tid in special or piece is None:
                table.append(None)
            elif tid in added:
                table.append(str(getattr(added[tid], "content", piece)).encode())
            else:
                try:
                    table.append(bytes(bd[c] for c in piece))
                except KeyError:
                    table.append(piece.encode())
    elif kind == "sentencepiece":
        for tid, piece in enumerate(pieces):
            if tid in special or piece is None:
                table.append(None)
                continue
            m = _BYTE_FALLBACK.match(piece)
            table.append(bytes([int(m.group(1), 16)]) if m else piece.replace("▁", " ").encode())
    else:
        logger.warning("steering: unknown tokenizer decoder; using per-token decode()")
        for tid in range(n):
            table.append(None if tid in special else tokenizer.decode([tid]).encode())
    return table, kind


@dataclass
class VocabIndex:
    key: str
    kind: str
    vocab_size: int
    token_bytes: list[bytes | None]
    texts: list[str]
    tails: list[bytes]
    sorted_texts: np.ndarray
    sorted_ids: np.ndarray
    sep_texts: np.ndarray
    sep_ids: np.ndarray
    cont_ids: np.ndarray
    build_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n_words(self) -> int:
        return (self.vocab_size + 31) // 32

    @classmethod
    def from_token_bytes(
        cls, table: list[bytes | None], key: str = "", kind: str = "bytelevel",
        vocab_size: int | None = None,
    ) -> VocabIndex:
        t0 = time.perf_counter()
        n = len(table)
        vocab_size = max(vocab_size or n, n)
        texts: list[str] = []
        tails: list[bytes] = []
        cont: list[int] = []
        ids: list[int] = []
        sep_suffixes: list[str] = []
        sep_owner: list[int] = []
        for tid, b in enumerate(table):
            if b is None:
                texts.append("")
                tails.append(b"")
                continue
            text, tail = decode_utf8(b)
            f = fold_text(text, prev_sep=False)
            texts.append(f)
            tails.append(tail)
            ids.append(tid)
            if b and 0x80 <= b[0] <= 0xBF:
                cont.append(tid)
            start = f.find(SEP)
            while start >= 0:
                sep_suffixes.append(f[start:])
                sep_owner.append(tid)
                start = f.find(SEP, start + 1)
        id_arr = np.asarray(ids, dtype=np.int64)
        tx = np.asarray([texts[i] for i in ids], dtype=str)
        order = np.argsort(tx, kind="stable")
        sx = np.asarray(sep_suffixes, dtype=str) if sep_suffixes else np.asarray([""], str)[:0]
        sorder = np.argsort(sx, kind="stable")
        return cls(
            key=key,
            kind=kind,
            vocab_size=vocab_size,
            token_bytes=table,
            texts=texts,
            tails=tails,
            sorted_texts=tx[order],
            sorted_ids=id_arr[order].astype(np.int32),
            sep_texts=sx[sorder],
            sep_ids=np.asarray(sep_owner, dtype=np.int32)[sorder],
            cont_ids=np.asarray(cont, dtype=np.int32),
            build_seconds=time.perf_counter() - t0,
        )

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, vocab_size: int | None = None) -> VocabIndex:
        t0 = time.perf_counter()
        table, kind = token_bytes_table(tokenizer)
        key = f"{getattr(tokenizer, 'name_or_path', '')}|{len(tokenizer)}|{kind}"
        idx = cls.from_token_bytes(table, key=key, kind=kind, vocab_size=vocab_size)
        idx.build_seconds = time.perf_counter() - t0
        return idx

    # -- range queries ---------------------------------------------------------------
    @staticmethod
    def _ranges(arr: np.ndarray, prefixes: list[str], exact: bool) -> tuple[np.ndarray, ...]:
        if not prefixes or arr.size == 0:
            z = np.zeros(0, dtype=np.int64)
            return z, z
        q = np.asarray(prefixes, dtype=str)
        lo = np.searchsorted(arr, q, side="left")
        if exact:
            hi = np.searchsorted(arr, q, side="right")
        else:
            hi = np.searchsorted(arr, np.char.add(q, _HI), side="left")
        return lo, hi

    def prefix_ranges(self, prefixes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) ranges in ``sorted_texts`` of the texts starting with each prefix."""
        return self._ranges(self.sorted_texts, prefixes, exact=False)

    def exact_ranges(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) ranges in ``sorted_texts`` of the texts equal to each string."""
        return self._ranges(self.sorted_texts, texts, exact=True)

    def sep_prefix_ranges(self, prefixes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) ranges in ``sep_texts`` (suffixes starting at a separator)."""
        return self._ranges(self.sep_texts, prefixes, exact=False)

    def sep_exact_ranges(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) ranges in ``sep_texts`` of the separator-suffixes equal to each string
        (the tokens whose folded text *ends with* it, starting at a separator)."""
        return self._ranges(self.sep_texts, texts, exact=True)

    def tokens_in(self, ranges: tuple[np.ndarray, np.ndarray], *, sep: bool = False
                  ) -> np.ndarray:
        """Boolean [vocab_size] mask of the tokens inside [lo, hi) ranges of
        ``sorted_texts`` (or of ``sep_texts`` when ``sep``)."""
        ids = self.sep_ids if sep else self.sorted_ids
        out = np.zeros(self.vocab_size, dtype=bool)
        out[ids[ranges_to_mask(*ranges, ids.size)]] = True
        return out

    @property
    def textless(self) -> np.ndarray:
        """Boolean [vocab_size]: tokens that contribute no text (special tokens, and ids
        past the tokenizer's table)."""
        cached = self.__dict__.get("_textless")
        if cached is None:
            cached = np.ones(self.vocab_size, dtype=bool)
            cached[: len(self.token_bytes)] = [b is None for b in self.token_bytes]
            self.__dict__["_textless"] = cached
        return cached

    @property
    def foldless(self) -> np.ndarray:
        """Boolean [vocab_size]: tokens with text that folds to nothing (combining marks,
        zero-width characters): they leave the folded text as it was."""
        cached = self.__dict__.get("_foldless")
        if cached is None:
            cached = np.zeros(self.vocab_size, dtype=bool)
            cached[: len(self.token_bytes)] = [
                b is not None and not f and not t
                for b, f, t in zip(self.token_bytes, self.texts, self.tails, strict=True)]
            self.__dict__["_foldless"] = cached
        return cached

    @property
    def tail_ids(self) -> np.ndarray:
        """Tokens that end inside a UTF-8 character (their last bytes stay pending)."""
        cached = self.__dict__.get("_tail_ids")
        if cached is None:
            cached = np.asarray([i for i, t in enumerate(self.tails) if t], dtype=np.int32)
            self.__dict__["_tail_ids"] = cached
        return cached


def ranges_to_mask(lo: np.ndarray, hi: np.ndarray, size: int) -> np.ndarray:
    """Boolean [size] array, True inside any [lo, hi)."""
    diff = np.zeros(size + 1, dtype=np.int32)
    keep = hi > lo
    if keep.any():
        np.add.at(diff, lo[keep], 1)
        np.add.at(diff, hi[keep], -1)
    return np.cumsum(diff[:-1]) > 0


def pack_bool(mask: np.ndarray, n_words: int) -> np.ndarray:
    """Pack a boolean token mask into int32 words: bit j of word w ⇔ token 32*w + j."""
    padded = np.zeros(n_words * 32, dtype=bool)
    padded[: mask.size] = mask
    return np.packbits(padded, bitorder="little").view("<i4").astype(np.int32, copy=False)


def unpack_words(words: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`pack_bool` (for tests and debugging)."""
    u8 = np.ascontiguousarray(words, dtype="<i4").view(np.uint8)
    return np.unpackbits(u8, bitorder="little")[:size].astype(bool)


_INDEXES: dict[Any, tuple[Any, VocabIndex]] = {}
_INDEX_LOCK = threading.Lock()


def vocab_index_for(tokenizer: Any, vocab_size: int | None = None) -> VocabIndex:
    """Process-wide cached :class:`VocabIndex` of a tokenizer object."""
    key = (id(tokenizer), getattr(tokenizer, "name_or_path", ""), len(tokenizer), vocab_size)
    with _INDEX_LOCK:
        hit = _INDEXES.get(key)
        if hit is None:  # the tokenizer is kept alive with its index, so id() stays unique
            hit = _INDEXES[key] = (tokenizer, VocabIndex.from_tokenizer(tokenizer, vocab_size))
        return hit[1]
