"""The string-level ban (and the preferred-entity nudge), compiled against a vocabulary.

THE GUARANTEE. For a row decoded under this module's masks — :meth:`CompiledSteering.
banned_words` at every step, :meth:`~CompiledSteering.final_words` at the last one, and the
row's stop tokens banned whenever :meth:`~CompiledSteering.ends_form` — the decoded output
text never contains a mention of an avoided entity in the detector's sense
(:mod:`.detector`): a folded surface form at a word start, optionally followed by a plural
``s``/``es``, followed by a word end (a separator or the end of the text). Folding is
:mod:`.normalize`'s: case-, accent-, width-insensitive, invisible characters ignored, any
run of non-alphanumerics = one separator, text start = a separator. This holds whatever
tokenization the model picks. A word that merely *starts* with a form and goes on with
more letters is a different word and stays allowed ("Romeo" under a Rome ban).

How. Each avoided form f becomes the patterns ``f SEP``, ``fs SEP`` and ``fes SEP``
(:func:`closed_patterns`). Each row carries (avoid state, prefer state, pending bytes):

* the avoid state is a node of an Aho–Corasick automaton (:mod:`.aho_corasick`) over the
  patterns, each prefixed with a separator, reading the folded output stream;
* "pending bytes" are the tail of an incomplete UTF-8 character (byte-level BPE splits
  characters); characters are fed only once complete, exactly as a UTF-8 decoder with
  ``errors="replace"`` would emit them (:func:`.vocab_index.decode_utf8`); special tokens
  feed nothing.

The banned set of a state q (no bytes pending) is every token whose folded text would
*complete* a pattern. Exactly (Aho–Corasick): a token completes a pattern either entirely
inside itself — its folded text contains ``SEP + pattern`` (one set per spec, from the
sorted separator-suffix index) — or by finishing a match already under way, i.e. for some
state p on q's failure chain (the suffixes of the text so far that are pattern prefixes)
and some pattern key k extending p, the token's text starts with ``k[len(p):]``; when p
ends with a separator, also ``SEP + k[len(p):]`` (a leading separator collapses into
p's). Every such set is a contiguous range of the sorted token texts (two binary
searches). The text can also end right after a whole form: the last step bans the tokens
that would leave the text ending with one (exact-match queries, plus the tokens without
text when the text already ends with a form), and at every other step the caller bans the
row's stop tokens while :meth:`~CompiledSteering.ends_form` holds. A token ending inside
a UTF-8 character right after a whole form is banned as well (whatever follows decodes to
a separator).

With bytes pending (rare), a token that does not start with a UTF-8 continuation byte
makes the pending bytes invalid (U+FFFD, a separator), so its fate is that of the same
token in state ``step(q, SEP)``; the few tokens that do start with a continuation byte
are simulated exactly.

START BANS (rollback). :meth:`~CompiledSteering.start_words` is the mask for a position
a rollback returned to: it also bans every token that *begins* a form of the named
entities there, so the row says something else instead of the name.

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

import itertools
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .aho_corasick import ROOT, Automaton, minimal_patterns
from .detector import END_SUFFIXES
from .limits import DEFAULT_PREFER_BIAS, MAX_PREFER_BIAS, MAX_PREFER_MISSES, PREFER_MIN_CHARS
from .normalize import SEP, fold_form, fold_text
from .surface_forms import ARTICLES
from .vocab_index import VocabIndex, decode_utf8, pack_bool, ranges_to_mask, unpack_words

MAX_CACHED_STATES = 4096
_UIDS = itertools.count(1)  # per compiled spec and per kind of cache; LRU beyond

_EMPTY_IDS = np.zeros(0, dtype=np.int32)
_EMPTY_VALS = np.zeros(0, dtype=np.float32)
_NO_TOKENS = np.zeros(0, dtype=np.int64)
_UNSEEN = object()  # a transition cache's miss (None is a cached "no text")


@dataclass(slots=True)
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

    def get_or(self, key, make, *args):
        v = self.get(key)
        if v is not None:
            self.move_to_end(key)
        else:
            v = make(*args)
            self[key] = v
            if len(self) > self.cap:
                self.popitem(last=False)
        return v


class CompiledSteering:
    """A steering spec compiled against one :class:`VocabIndex`. Not thread-safe per
    instance (one engine thread drives it).

    ``avoid`` holds the avoided entities' folded surface forms: a string is an entity of
    its own, a sequence of strings is one entity's forms (the group a start ban names)."""

    def __init__(
        self,
        index: VocabIndex,
        avoid: Iterable[str | Sequence[str]],
        prefer_patterns: Iterable[str] = (),
        prefer_bias: float = DEFAULT_PREFER_BIAS,
        *,
        max_cached_states: int = MAX_CACHED_STATES,
    ):
        t0 = time.perf_counter()
        self.uid = next(_UIDS)  # names this compile in caches keyed across specs
        self.index = index
        self.n_words = index.n_words
        self.groups: list[list[str]] = [
            _folded([g] if isinstance(g, str) else g) for g in avoid
        ]
        owners: dict[str, set[int]] = {}
        for g, forms in enumerate(self.groups):
            for p in closed_patterns(forms):
                owners.setdefault(p, set()).add(g)
        self.avoid = Automaton(minimal_patterns(owners))
        # entity groups of each automaton key (keys are sorted like the patterns)
        self.key_groups: list[frozenset[int]] = [frozenset(owners[p])
                                                 for p in self.avoid.patterns]
        self.prefer = Automaton(minimal_patterns(_strip_articles(_folded(prefer_patterns))))
        self.prefer_bias = float(min(max(prefer_bias, 0.0), MAX_PREFER_BIAS))
        self.has_avoid = bool(self.avoid.patterns)
        self.has_prefer = bool(self.prefer.patterns) and self.prefer_bias > 0
        self._zero_words = np.zeros(self.n_words, dtype=np.int32)
        # tokens whose text contains a whole ``SEP + pattern``: banned in every state
        self._base = (index.tokens_in(index.sep_prefix_ranges(self.avoid.keys), sep=True)
                      if self.has_avoid else np.zeros(index.vocab_size, dtype=bool))
        self._masks = _LRU(max_cached_states)
        self._pending_masks = _LRU(max_cached_states)
        self._final_masks = _LRU(max_cached_states)
        self._union_masks = _LRU(max_cached_states)
        self._open_base: np.ndarray | None = None
        self._start_masks = _LRU(max_cached_states)
        self._start_cache: dict[frozenset[int], tuple[np.ndarray, np.ndarray]] = {}
        self._ends_form: dict[int, bool] = {}
        self._ends_inside: np.ndarray | None = None
        self._whole_exact: np.ndarray | None = None
        self._whole_any: np.ndarray | None = None
        self._whole_some: bool | None = None
        self._whole_ids: dict[tuple[int, bool], np.ndarray] = {}
        self._bias = _LRU(max_cached_states)
        self._boost_sets = _LRU(max_cached_states)  # q -> the token ids boosted there
        self._avoid_trans: dict[tuple[int, int], tuple[int, bool, bytes] | None] = {}
        self._prefer_trans: dict[tuple[int, int], tuple[int, bool, bool]] = {}
        self.compile_seconds = time.perf_counter() - t0

    # -- rows --------------------------------------------------------------------------
    def new_row(self) -> RowState:
        return RowState(avoid=self.avoid.start, prefer=self.prefer.start,
                        prefer_done=not self.has_prefer)

    def feed_text(self, row: RowState, token_id: int) -> str | None:
        """The folded text the row's automata read for ``token_id`` (None: the token
        contributes no text); updates the row's pending bytes."""
        idx = self.index
        if token_id < 0 or token_id >= len(idx.token_bytes):
            return None
        data = idx.token_bytes[token_id]
        if data is None:
            return None  # special tokens contribute no text
        if not row.pending:
            row.pending = idx.tails[token_id]
            return idx.texts[token_id]
        text, row.pending = decode_utf8(row.pending + data)
        return fold_text(text, prev_sep=False)

    def advance(self, row: RowState, token_id: int) -> None:
        """Feed one sampled token into the row's state. With no bytes pending (the common
        case) the avoid automaton's move is one cached (state, token) lookup, which also
        gives the bytes the token leaves pending; so is the prefer automaton's."""
        row.n_tokens += 1
        q0 = row.prefer
        if not row.pending:
            key = (row.avoid, token_id)
            t = self._avoid_trans.get(key, _UNSEEN)
            if t is _UNSEEN:
                t = self._avoid_trans[key] = self._plain_move(row.avoid, token_id)
            if t is None:
                return  # special tokens (and ids past the vocabulary) contribute no text
            row.avoid, hit, row.pending = t
            if not row.prefer_done:
                key = (q0, token_id)
                t = self._prefer_trans.get(key)
                if t is None:  # (next state, form completed, token was boosted)
                    t = self._prefer_trans[key] = (
                        *self.prefer.feed(q0, self.index.texts[token_id]),
                        self._boosted(q0, token_id))
                row.prefer, row.prefer_done, boosted = t
                if boosted:
                    row.prefer_trying = True
        else:
            folded = self.feed_text(row, token_id)
            if folded is None:
                return
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

    def _plain_move(self, q: int, token_id: int) -> tuple[int, bool, bytes] | None:
        """(next avoid state, a form completed, bytes left pending) for ``token_id`` read
        from state ``q`` with no bytes pending; None for a token with no text."""
        idx = self.index
        if not 0 <= token_id < len(idx.token_bytes) or idx.token_bytes[token_id] is None:
            return None
        return (*self.avoid.feed(q, idx.texts[token_id]), idx.tails[token_id])

    def advance_many(self, row: RowState, token_ids: Iterable[int]) -> None:
        for t in token_ids:
            self.advance(row, t)

    # -- where a row stands --------------------------------------------------------------
    def inside_form(self, row: RowState) -> bool:
        """The row has written the beginning of an avoided form (at least one letter or
        digit of it, at a word start) and has not left it."""
        return self.avoid.depth[row.avoid] >= 2

    def ends_form(self, q: int) -> bool:
        """The text read so far ends with a whole form (plural suffix included): a word
        end — a separator, or the end of the text — would complete a mention."""
        hit = self._ends_form.get(q)
        if hit is None:
            hit = self._ends_form[q] = self.avoid.accept(self.avoid.step(q, SEP)) >= 0
        return hit

    def whole_form_groups(self, row: RowState, token_id: int) -> frozenset[int]:
        """The entity groups of a whole form (plural included) that ``token_id`` would
        write at once from the row's state — at a word start inside the token, running to
        its end, so that only a word end is missing (" Nike", or "Nike" at a word start);
        empty when it would not."""
        if row.pending or not self.has_avoid:
            return frozenset()
        whole = self._ends_inside_mask()[token_id] or (
            self.avoid.ends_sep(row.avoid) and self._whole_exact_mask()[token_id])
        if not whole:
            return frozenset()
        s, _ = self.avoid.feed(row.avoid, self.index.texts[token_id])
        return self.groups_at(s) if self.ends_form(s) else frozenset()

    def whole_form_mask(self) -> np.ndarray:
        """bool [V]: the tokens that may write a whole form at once from some state (a
        whole form at a word start inside the token, running to its end, or the token's
        whole text a form): a superset of the tokens :meth:`whole_form_groups` returns
        groups for, from any state; its cheap first test."""
        if self._whole_any is None:
            self._whole_any = (self._ends_inside_mask() | self._whole_exact_mask()
                               if self.has_avoid else np.zeros(self.index.vocab_size, bool))
        return self._whole_any

    def whole_form_ids(self, row: RowState, vocab: int) -> np.ndarray:
        """int64 ids below ``vocab`` of the tokens that may write a whole form at once
        from the row's state (no bytes pending): a superset of those
        :meth:`whole_form_groups` returns groups for (cached per kind of state: at a word
        start or not; the rows of a spec in one kind share the array)."""
        at_start = self.avoid.ends_sep(row.avoid)
        hit = self._whole_ids.get((vocab, at_start))
        if hit is None:
            mask = self.whole_form_mask() if at_start else self._ends_inside_mask()
            ids = np.flatnonzero(mask)
            hit = self._whole_ids[(vocab, at_start)] = ids[ids < vocab]
        return hit

    def any_whole_form_token(self) -> bool:
        """Whether any token may write a whole form at once (cached)."""
        if self._whole_some is None:
            self._whole_some = bool(self.whole_form_mask().any())
        return self._whole_some

    def groups_at(self, q: int) -> frozenset[int]:
        """Entity groups whose forms extend the row's partial match at state ``q``."""
        lo, hi = self.avoid.key_range(q)
        out: set[int] = set()
        for g in self.key_groups[lo:hi]:
            out |= g
        return frozenset(out)

    # -- banned tokens -----------------------------------------------------------------
    def banned_words(self, row: RowState) -> np.ndarray:
        """Packed int32 [n_words] mask of the tokens banned for the row's next token:
        every token that would complete an avoided form followed by a word end."""
        if not self.has_avoid:
            return self._zero_words
        if row.pending:
            key = (row.avoid, row.pending)
            return self._pending_masks.get_or(key, self._pending_mask, *key)
        return self._masks.get_or(row.avoid, self._state_mask, row.avoid)

    def prefix_words(self, row: RowState) -> np.ndarray:
        """The stricter mask of rows without rollback: :meth:`banned_words` plus every
        token that would complete a form at a word start *whatever follows* ("Rome" in
        "Romeo" too). A model that cannot roll back is better held off the whole name
        than left to end it in a glued look-alike ("Coca-Cola" + "Tm")."""
        if not self.has_avoid:
            return self._zero_words
        key = (row.avoid, row.pending, "prefix")
        return self._union_masks.get_or(key, lambda: pack_bool(
            unpack_words(self.banned_words(row), self.index.vocab_size)
            | self._open_bool(row.avoid, row.pending), self.n_words))

    def with_prefix(self, row: RowState, words: np.ndarray, kind: str) -> np.ndarray:
        """``words`` (a cached mask of kind ``kind`` for the row) OR :meth:`prefix_words`."""
        key = (row.avoid, row.pending, kind, id(words))
        hit = self._union_masks.get(key)
        if hit is not None and hit[0] is words:
            return hit[1]
        out = self.prefix_words(row) | words
        self._union_masks[key] = (words, out)
        if len(self._union_masks) > self._union_masks.cap:
            self._union_masks.popitem(last=False)
        return out

    def final_words(self, row: RowState) -> np.ndarray:
        """Mask for a row's LAST token (the text ends after it): :meth:`banned_words` plus
        every token after which the text would end with a whole form — a token finishing
        a form, one leaving an incomplete UTF-8 tail after a form (it decodes to U+FFFD, a
        separator), and, when the text already ends with a form, every token without
        text."""
        if not self.has_avoid:
            return self._zero_words
        key = (row.avoid, row.pending)
        return self._final_masks.get_or(key, lambda: self._final_mask(*key))

    def start_words(self, row: RowState, groups: Iterable[int]) -> np.ndarray:
        """Mask for the position a rollback returned to: :meth:`banned_words` plus every
        token that *begins* a form of the entity groups ``groups`` there — a token whose
        text, from a word start inside it (or from its first character when the row is at
        a word start), is a non-empty prefix of such a form — under any tokenization."""
        groups = frozenset(g for g in groups if 0 <= g < len(self.groups))
        base = self.banned_words(row)
        if not groups:
            return base
        at_boundary = bool(row.pending) or self.avoid.ends_sep(row.avoid)
        key = (row.avoid, row.pending, groups)
        return self._start_masks.get_or(key, lambda: self._start_mask(base, groups, at_boundary))

    def _state_mask(self, q: int) -> np.ndarray:
        return pack_bool(self._state_bool(q), self.n_words)

    def _state_bool(self, q: int) -> np.ndarray:
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
            banned |= idx.tokens_in(idx.prefix_ranges(queries))
        # A token ending inside a UTF-8 character right after a whole form would leave the
        # row with no way out (whatever comes next decodes to a separator, or to U+FFFD):
        # such tokens are banned too.
        for tid in idx.tail_ids.tolist():
            if not banned[tid]:
                s, hit = ac.feed(q, idx.texts[tid])
                banned[tid] = hit or self.ends_form(s)
        return banned

    def _pending_mask(self, q: int, pending: bytes) -> np.ndarray:
        idx, ac = self.index, self.avoid
        q_sep = ac.step(q, SEP)
        if ac.accept(q_sep) >= 0:  # U+FFFD would complete a form: only continuations
            banned = ~idx.textless
        else:  # a token without a continuation byte turns the pending bytes into U+FFFD
            banned = self._state_bool(q_sep)
        cont = idx.cont_ids
        banned[cont] = False
        for tid in cont.tolist():
            text, tail = decode_utf8(pending + idx.token_bytes[tid])
            s, hit = ac.feed(q, fold_text(text, prev_sep=False))
            banned[tid] = hit or (bool(tail) and self.ends_form(s))
        return pack_bool(banned, self.n_words)

    def _final_mask(self, q: int, pending: bytes) -> np.ndarray:
        idx, ac = self.index, self.avoid
        if pending:
            # a token without a continuation byte turns the pending bytes into U+FFFD (a
            # separator): its fate is that of the same token from step(q, SEP)
            banned = (unpack_words(self.final_words(RowState(ac.step(q, SEP), 0)),
                                   idx.vocab_size)
                      | unpack_words(self._pending_masks.get_or(
                          (q, pending), lambda: self._pending_mask(q, pending)),
                          idx.vocab_size))
            cont = idx.cont_ids
            banned[cont] = False
            for tid in cont.tolist():
                text, tail = decode_utf8(pending + idx.token_bytes[tid])
                s, hit = ac.feed(q, fold_text(text, prev_sep=False))
                banned[tid] = hit or self.ends_form(s)
            # ending now leaves the pending bytes as U+FFFD
            banned |= idx.textless & (self.ends_form(q) or ac.accept(ac.step(q, SEP)) >= 0)
            return pack_bool(banned, self.n_words)
        banned = self._state_bool(q) | self._ends_inside_mask()
        queries: list[str] = []
        for p in ac.chain(q):
            lo, hi = ac.key_range(p)
            d = ac.depth[p]
            rs = [k[d:-1] for k in ac.keys[lo:hi] if len(k) > d + 1]
            queries.extend(rs)
            if ac.ends_sep(p):
                queries.extend([SEP + r for r in rs])
        if queries:
            banned |= idx.tokens_in(idx.exact_ranges(queries))
        for tid in idx.tail_ids.tolist():  # an incomplete tail ends the text as U+FFFD
            if not banned[tid]:
                s, _ = ac.feed(q, idx.texts[tid])
                banned[tid] = ac.accept(ac.step(s, SEP)) >= 0
        if self.ends_form(q):  # tokens that add nothing leave the text ending with it
            banned |= idx.textless | idx.foldless
        return pack_bool(banned, self.n_words)

    def _open_bool(self, q: int, pending: bytes) -> np.ndarray:
        """Tokens that would complete a form at a word start, whatever follows it."""
        idx, ac = self.index, self.avoid
        if pending:
            banned = self._open_bool(ac.step(q, SEP), b"")
            cont = idx.cont_ids
            banned[cont] = False
            for tid in cont.tolist():
                text, _ = decode_utf8(pending + idx.token_bytes[tid])
                banned[tid] = self._passes_form(q, fold_text(text, prev_sep=False))
            return banned
        if self._open_base is None:
            self._open_base = idx.tokens_in(idx.sep_prefix_ranges([k[:-1] for k in ac.keys]),
                                            sep=True)
        queries: list[str] = []
        for p in ac.chain(q):
            lo, hi = ac.key_range(p)
            d = ac.depth[p]
            rs = [k[d:-1] for k in ac.keys[lo:hi] if len(k) - 1 > d]
            queries.extend(rs)
            if ac.ends_sep(p):
                queries.extend([SEP + r for r in rs])
        banned = self._open_base.copy()
        if queries:
            banned |= idx.tokens_in(idx.prefix_ranges(queries))
        return banned

    def _passes_form(self, q: int, folded: str) -> bool:
        ac = self.avoid
        for ch in folded:
            q = ac.step(q, ch)
            if ac.accept(q) >= 0 or self.ends_form(q):
                return True
        return False

    def _whole_exact_mask(self) -> np.ndarray:
        """Tokens whose whole text is a form (" Nike" minus its word start: "Nike")."""
        if self._whole_exact is None:
            bodies = [k[1:-1] for k in self.avoid.keys]
            self._whole_exact = self.index.tokens_in(self.index.exact_ranges(bodies))
        return self._whole_exact

    def _ends_inside_mask(self) -> np.ndarray:
        """Tokens whose own text ends with ``SEP + form`` (a whole form at a word start
        inside the token, running to its end)."""
        if self._ends_inside is None:
            bodies = [k[:-1] for k in self.avoid.keys]
            self._ends_inside = self.index.tokens_in(self.index.sep_exact_ranges(bodies),
                                                     sep=True)
        return self._ends_inside

    def _start_sets(self, groups: frozenset[int]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens with a word start inside them whose rest is a form prefix, tokens whose
        whole text is a form prefix) for the forms of ``groups``."""
        hit = self._start_cache.get(groups)
        if hit is None:
            bodies = closed_patterns(f for g in sorted(groups) for f in self.groups[g])
            prefixes = sorted({b[:j] for b in bodies for j in range(1, len(b))})
            idx = self.index
            inside = idx.tokens_in(idx.sep_exact_ranges([SEP + x for x in prefixes]), sep=True)
            whole = idx.tokens_in(idx.exact_ranges(prefixes))
            hit = self._start_cache[groups] = (inside, whole)
        return hit

    def _start_mask(self, base: np.ndarray, groups: frozenset[int], at_boundary: bool
                    ) -> np.ndarray:
        inside, whole = self._start_sets(groups)
        banned = unpack_words(base, self.index.vocab_size) | inside
        if at_boundary:
            banned |= whole
        return pack_bool(banned, self.n_words)

    # -- preferred tokens --------------------------------------------------------------
    def _boosted(self, q: int, token_id: int) -> bool:
        """Whether the prefer bias boosts ``token_id`` in prefer state ``q`` (a set lookup:
        it runs on every new (state, token) pair a row meets)."""
        return token_id in self._boost_sets.get_or(q, self._boost_set, q)

    def _boost_set(self, q: int) -> frozenset[int]:
        return frozenset(self._bias.get_or(q, self._prefer_tokens, q)[0].tolist())

    def boosted_ids(self, q: int) -> np.ndarray:
        """The token ids the prefer bias boosts in prefer state ``q`` (sorted int32: the
        set :meth:`advance` tests a row's token against)."""
        return self._bias.get_or(q, self._prefer_tokens, q)[0]

    def bias(self, row: RowState) -> tuple[np.ndarray, np.ndarray]:
        """(token ids int32, bias values float32) for the row's next token."""
        if row.prefer_done or row.pending:
            return _EMPTY_IDS, _EMPTY_VALS
        return self._bias.get_or(row.prefer, self._prefer_tokens, row.prefer)

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


def closed_patterns(forms: Iterable[str]) -> set[str]:
    """The ban's patterns for folded forms: each form followed by a word end, possibly
    after a plural suffix — exactly the detector's mention rule (``form (s|es)? SEP``;
    the end of the text is handled by :meth:`CompiledSteering.final_words` and by the
    caller banning the stop tokens when :meth:`CompiledSteering.ends_form`)."""
    return {f + suf + SEP for f in forms if f for suf in ("", *END_SUFFIXES)}


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
def steering_key(avoid: Sequence[str | Sequence[str]], prefer: Sequence[str],
                 prefer_bias: float) -> tuple:
    """The compile cache's key of a spec's inputs: the avoided entities in order (their
    order gives the group ids), each one's forms and the preferred forms as sorted tuples,
    and the bias rounded to 4 places. A plain tuple of the strings: hashing it is the
    only per-form work a cache hit does."""
    groups = tuple((g,) if isinstance(g, str) else tuple(sorted(g)) for g in avoid)
    return groups, tuple(sorted(prefer)), round(float(prefer_bias), 4)


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
