"""The string-level ban (and the preferred-entity nudge), compiled against a vocabulary.

THE GUARANTEE. For a row decoded under :meth:`CompiledSteering.banned_words` at every
step, the decoded output text never contains an avoided pattern at a word start, in the
folded sense of :mod:`.normalize` (case-, accent-, width-insensitive, invisible characters
ignored, any run of non-alphanumerics = one separator, text start = a separator) —
whatever tokenization the model picks. Consequently :class:`.detector.Detector` never
finds an avoided entity in it (a detector mention needs the form at a word start *and* a
word end; the ban already forbids the word start).

How. Each row carries (avoid state, prefer state, pending bytes):

* the avoid state is a node of an Aho–Corasick automaton (:mod:`.aho_corasick`) over the
  folded patterns, each prefixed with a separator, reading the folded output stream;
* "pending bytes" are the tail of an incomplete UTF-8 character (byte-level BPE splits
  characters); characters are fed only once complete, exactly as a UTF-8 decoder with
  ``errors="replace"`` would emit them (:func:`.vocab_index.decode_utf8`); special tokens
  feed nothing.

The banned set of a state q (no bytes pending) is every token whose folded text would
*complete* a pattern — banning completions is enough, since a match that never completes
never exists. Exactly (Aho–Corasick): a token completes a pattern either entirely inside
itself — its folded text contains ``SEP + pattern`` (one set per spec, from the sorted
separator-suffix index) — or by finishing a match already under way, i.e. for some state
p on q's failure chain (the suffixes of the text so far that are pattern prefixes) and
some pattern key f extending p, the token's text starts with ``f[len(p):]``; when p ends
with a separator, also ``SEP + f[len(p):]`` (a leading separator collapses into p's).
Every such set is a contiguous range of the sorted token texts (two binary searches).

With bytes pending (rare), a token that does not start with a UTF-8 continuation byte
makes the pending bytes invalid (U+FFFD, a separator), so its fate is that of the same
token in state ``step(q, SEP)``; the few tokens that do start with a continuation byte
are simulated exactly. So every mask is exact: no over-banning beyond "completes a form".

Masks are computed lazily per visited state, cached per compiled spec, and returned as
packed int32 words (bit j of word w ⇔ token 32*w + j is banned).

PREFERRED ENTITIES. While no preferred form has appeared in the row's output, tokens that
begin a preferred form at a word start (the token brings the separator, or the row is at
one) or continue a partially emitted one get ``+prefer_bias`` — provided that after the
token at least :data:`PREFER_MIN_CHARS` characters of the form (counting the separator)
are in place, so bare "L" or " " is never boosted for "Louvre", and that the token adds
a letter or digit of the form. A form that no token of that length can start (" Ad"+"idas")
gets its longest available start boosted instead. A leading article is dropped from
preferred forms ("The Rolling Stones" is matched and boosted as "rolling stones"), or
every "the" would count as a partial match. Once a preferred form has appeared the boost
stops for that row, and it is spent after :data:`MAX_PREFER_MISSES` abandoned attempts (the
row sampled a boosted token, then the text left the form unfinished): a fixed boost
otherwise turns into an attractor and degenerates into repetition. The boost never forces
anything; the ban wins where both apply.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .aho_corasick import ROOT, Automaton, minimal_patterns
from .limits import DEFAULT_PREFER_BIAS, MAX_PREFER_BIAS, MAX_PREFER_MISSES, PREFER_MIN_CHARS
from .normalize import SEP, fold_form, fold_text
from .surface_forms import ARTICLES
from .vocab_index import VocabIndex, decode_utf8, pack_bool, ranges_to_mask, unpack_words

MAX_CACHED_STATES = 4096  # per compiled spec and per kind of cache; LRU beyond

_EMPTY_IDS = np.zeros(0, dtype=np.int32)
_EMPTY_VALS = np.zeros(0, dtype=np.float32)


@dataclass
class RowState:
    """Per-row decoding state. ``violated`` is set if a banned form got through anyway
    (only possible if someone sampled a token this row's mask banned)."""

    avoid: int
    prefer: int
    pending: bytes = b""
    prefer_done: bool = False  # the boost is over: a preferred form appeared, or it is spent
    violated: bool = False
    prefer_trying: bool = False  # the row took a boosted token; the form is not finished
    prefer_misses: int = 0  # boosted attempts the row abandoned
    n_tokens: int = 0


class _LRU(OrderedDict):
    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap

    def get_or(self, key, make):
        v = self.get(key)
        if v is not None:
            self.move_to_end(key)
        else:
            v = make()
            self[key] = v
            if len(self) > self.cap:
                self.popitem(last=False)
        return v


class CompiledSteering:
    """A steering spec compiled against one :class:`VocabIndex`. Not thread-safe per
    instance (one engine thread drives it)."""

    def __init__(
        self,
        index: VocabIndex,
        avoid_patterns: Iterable[str],
        prefer_patterns: Iterable[str] = (),
        prefer_bias: float = DEFAULT_PREFER_BIAS,
        *,
        max_cached_states: int = MAX_CACHED_STATES,
    ):
        t0 = time.perf_counter()
        self.index = index
        self.n_words = index.n_words
        self.avoid = Automaton(minimal_patterns(_folded(avoid_patterns)))
        self.prefer = Automaton(minimal_patterns(_strip_articles(_folded(prefer_patterns))))
        self.prefer_bias = float(min(max(prefer_bias, 0.0), MAX_PREFER_BIAS))
        self.has_avoid = bool(self.avoid.patterns)
        self.has_prefer = bool(self.prefer.patterns) and self.prefer_bias > 0
        self._zero_words = np.zeros(self.n_words, dtype=np.int32)
        # tokens whose text contains a whole ``SEP + pattern``: banned in every state
        if self.has_avoid:
            lo, hi = index.sep_prefix_ranges(self.avoid.keys)
            inside = ranges_to_mask(lo, hi, index.sep_ids.size)
            self._base = np.zeros(index.vocab_size, dtype=bool)
            self._base[index.sep_ids[inside]] = True
        else:
            self._base = np.zeros(index.vocab_size, dtype=bool)
        self._masks = _LRU(max_cached_states)
        self._pending_masks = _LRU(max_cached_states)
        self._bias = _LRU(max_cached_states)
        self._avoid_trans: dict[tuple[int, int], tuple[int, bool]] = {}
        self._prefer_trans: dict[tuple[int, int], tuple[int, bool, bool]] = {}
        self.compile_seconds = time.perf_counter() - t0

    # -- rows --------------------------------------------------------------------------
    def new_row(self) -> RowState:
        return RowState(avoid=self.avoid.start, prefer=self.prefer.start,
                        prefer_done=not self.has_prefer)

    def advance(self, row: RowState, token_id: int) -> None:
        """Feed one sampled token into the row's state."""
        row.n_tokens += 1
        idx = self.index
        if token_id < 0 or token_id >= len(idx.token_bytes):
            return
        data = idx.token_bytes[token_id]
        if data is None:
            return  # special tokens contribute no text
        q0 = row.prefer
        if not row.pending:
            key = (row.avoid, token_id)
            t = self._avoid_trans.get(key)
            if t is None:
                t = self._avoid_trans[key] = self.avoid.feed(row.avoid, idx.texts[token_id])
            row.avoid, hit = t
            if not row.prefer_done:
                key = (q0, token_id)
                t = self._prefer_trans.get(key)
                if t is None:  # (next state, form completed, token was boosted)
                    t = self._prefer_trans[key] = (
                        *self.prefer.feed(q0, idx.texts[token_id]), self._boosted(q0, token_id)
                    )
                row.prefer, row.prefer_done, boosted = t
                if boosted:
                    row.prefer_trying = True
            row.pending = idx.tails[token_id]
        else:
            text, row.pending = decode_utf8(row.pending + data)
            folded = fold_text(text, prev_sep=False)
            row.avoid, hit = self.avoid.feed(row.avoid, folded)
            if not row.prefer_done:
                row.prefer, row.prefer_done = self.prefer.feed(q0, folded)
        if (row.prefer_trying and not row.prefer_done and row.prefer != q0
                and self.prefer.depth[row.prefer] <= self.prefer.depth[q0]):
            # the text left the form the row had been nudged into: an abandoned attempt
            row.prefer_trying = False
            row.prefer_misses += 1
            if row.prefer_misses >= MAX_PREFER_MISSES:
                row.prefer_done = True  # the boost is spent for this row
        if hit:
            row.violated = True

    def advance_many(self, row: RowState, token_ids: Iterable[int]) -> None:
        for t in token_ids:
            self.advance(row, t)

    # -- banned tokens -----------------------------------------------------------------
    def banned_words(self, row: RowState) -> np.ndarray:
        """Packed int32 [n_words] mask of the tokens banned for the row's next token."""
        if not self.has_avoid:
            return self._zero_words
        if row.pending:
            key = (row.avoid, row.pending)
            return self._pending_masks.get_or(key, lambda: self._pending_mask(*key))
        return self._masks.get_or(row.avoid, lambda: self._state_mask(row.avoid))

    def banned_bool(self, row: RowState) -> np.ndarray:
        return unpack_words(self.banned_words(row), self.index.vocab_size)

    def _state_mask(self, q: int) -> np.ndarray:
        ac, idx = self.avoid, self.index
        queries: list[str] = []
        for p in ac.chain(q):
            lo, hi = ac.key_range(p)
            d = ac.depth[p]
            rs = [k[d:] for k in ac.keys[lo:hi] if len(k) > d]
            queries.extend(rs)
            if ac.ends_sep(p):
                queries.extend([SEP + r for r in rs])
        banned = self._base.copy()
        if queries:
            lo, hi = idx.prefix_ranges(queries)
            covered = ranges_to_mask(lo, hi, idx.sorted_ids.size)
            banned[idx.sorted_ids[covered]] = True
        return pack_bool(banned, self.n_words)

    def _pending_mask(self, q: int, pending: bytes) -> np.ndarray:
        idx, ac = self.index, self.avoid
        banned = unpack_words(self._masks.get_or(
            ac.step(q, SEP), lambda: self._state_mask(ac.step(q, SEP))
        ), idx.vocab_size).copy()
        cont = idx.cont_ids
        banned[cont] = False
        for tid in cont.tolist():
            text, _ = decode_utf8(pending + idx.token_bytes[tid])
            _, hit = ac.feed(q, fold_text(text, prev_sep=False))
            if hit:
                banned[tid] = True
        return pack_bool(banned, self.n_words)

    # -- preferred tokens --------------------------------------------------------------
    def _boosted(self, q: int, token_id: int) -> bool:
        ids = self._bias.get_or(q, lambda: self._prefer_tokens(q))[0]
        i = int(np.searchsorted(ids, token_id))
        return i < ids.size and int(ids[i]) == token_id

    def bias(self, row: RowState) -> tuple[np.ndarray, np.ndarray]:
        """(token ids int32, bias values float32) for the row's next token."""
        if row.prefer_done or row.pending:
            return _EMPTY_IDS, _EMPTY_VALS
        return self._bias.get_or(row.prefer, lambda: self._prefer_tokens(row.prefer))

    def _prefer_tokens(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        ac, idx = self.prefer, self.index
        starts: list[str] = []
        exact: list[str] = []
        # (whole rest, pieces long enough, shorter pieces longest first) per key and
        # separator choice: the shorter pieces are the fallback of a form that the
        # vocabulary can only start with a short token
        options: list[tuple[str, list[str], list[str]]] = []
        for p in [*ac.chain(q), ROOT]:
            d = ac.depth[p]
            lo, hi = ac.key_range(p) if p != ROOT else (0, len(ac.keys))
            seps = ("", SEP) if p != ROOT and ac.ends_sep(p) else ("",)
            for key in ac.keys[lo:hi]:
                r = key[d:]
                if not r:
                    continue
                need = max(1, min(len(key), PREFER_MIN_CHARS) - d)
                ks = [k for k in range(1, len(r)) if r[:k].strip(SEP)]
                for s in seps:
                    options.append((s + r, [s + r[:k] for k in ks if k >= need],
                                    [s + r[:k] for k in reversed(ks) if k < need]))
        if not options:
            return _EMPTY_IDS, _EMPTY_VALS
        starts = [o[0] for o in options]
        exact = [piece for o in options for piece in o[1]]
        lo, hi = idx.prefix_ranges(starts)
        start_ok = lo < hi
        sel = ranges_to_mask(lo, hi, idx.sorted_ids.size)
        long_ok = np.zeros(0, dtype=bool)
        if exact:
            lo, hi = idx.exact_ranges(exact)
            long_ok = lo < hi
            sel |= ranges_to_mask(lo, hi, idx.sorted_ids.size)
        # A form no token of >= PREFER_MIN_CHARS characters can start (" X"+"box",
        # " Ad"+"idas") gets its longest available start boosted instead: otherwise it is
        # only ever boosted once the model has started it on its own.
        fallback: list[str] = []
        at = 0
        for j, (_, longer, shorter) in enumerate(options):
            n = len(longer)
            if shorter and not start_ok[j] and not long_ok[at:at + n].any():
                lo, hi = idx.exact_ranges(shorter)
                hit = np.flatnonzero(lo < hi)
                if hit.size:
                    fallback.append(shorter[hit[0]])
            at += n
        if fallback:
            lo, hi = idx.exact_ranges(fallback)
            sel |= ranges_to_mask(lo, hi, idx.sorted_ids.size)
        ids = np.unique(idx.sorted_ids[sel]).astype(np.int32)
        return ids, np.full(ids.size, self.prefer_bias, dtype=np.float32)


def _strip_articles(patterns: list[str]) -> list[str]:
    """Preferred forms without a leading article ("the rolling stones" and the joined
    "therolling stones" → "rolling stones", when that form exists too): otherwise every
    "the" would start a boosted partial match."""
    pats = set(patterns)
    out = set()
    for p in pats:
        for art in ARTICLES:
            rest = p[len(art):].lstrip(SEP) if p.startswith(art) else ""
            if rest and rest in pats:
                p = rest
                break
        out.add(p)
    return sorted(out)


_ALREADY_FOLDED = re.compile(r"[a-z0-9]+(?: [a-z0-9]+)*")


def _folded(patterns: Iterable[str]) -> list[str]:
    # fold again (idempotent on folded input, and display forms are accepted too); plain
    # ASCII folded patterns skip the per-character work
    out = []
    for p in patterns:
        if not _ALREADY_FOLDED.fullmatch(p):
            p = fold_form(p)
        if p:
            out.append(p)
    return out


# -- compile cache ----------------------------------------------------------------------
def steering_key(avoid: Sequence[str], prefer: Sequence[str], prefer_bias: float) -> str:
    blob = json.dumps([sorted(avoid), sorted(prefer), round(float(prefer_bias), 4)],
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class SteeringCache:
    """LRU of :class:`CompiledSteering`, keyed by (vocabulary, spec inputs)."""

    def __init__(self, capacity: int = 256):
        self._lru = _LRU(capacity)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, index: VocabIndex, avoid: Sequence[str], prefer: Sequence[str] = (),
            prefer_bias: float = DEFAULT_PREFER_BIAS) -> CompiledSteering:
        key = (index.key, id(index), steering_key(avoid, prefer, prefer_bias))
        with self._lock:
            hit = self._lru.get(key)
            if hit is not None:
                self._lru.move_to_end(key)
                self.hits += 1
                return hit
            self.misses += 1
            return self._lru.get_or(
                key, lambda: CompiledSteering(index, avoid, prefer, prefer_bias)
            )


DEFAULT_CACHE = SteeringCache()


def compile_steering(index: VocabIndex, avoid: Sequence[str], prefer: Sequence[str] = (),
                     prefer_bias: float = DEFAULT_PREFER_BIAS) -> CompiledSteering:
    """Cached compile (process-wide LRU)."""
    return DEFAULT_CACHE.get(index, avoid, prefer, prefer_bias)
