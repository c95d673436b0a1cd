"""Near misses: misspelt, truncated or half-swapped names that are not exact mentions.

When a string-level ban blocks the token that would finish a name, a small model tends
to write the name misspelt ("Coca-Coloca", "Schwarzeneggar", "Buckingham Castle"). The
mention detector (:mod:`.detector`) rightly does not count these; this module flags them
as a second, separate finding.

Everything works on the folded text (:mod:`.normalize`) split into **words** (maximal
runs of letters/digits), against the **base forms** of each entity: its folded surface
forms (:func:`.surface_forms.fold_patterns` of the forms the detector uses) minus the
plural/possessive ones (a form equal to another with one word pluralised, or with a
trailing "s" word). Every spacing variant is a base form, so a text that joins or splits
a name at its part boundaries ("sputniak1", "sputniak 1") is compared with the variant
spaced the same way. Below, ``f`` is a base form with words ``f0 … f(k-1)``, ``P`` the
text shared with ``f`` from a word start, and sizes count letters/digits.

The lexicon is pyspellchecker's English frequency list (its ``en.json.gz``, folded,
contractions split at the apostrophe), read with two thresholds:

* a word is **common** at a count of at least :data:`COMMON_MIN_COUNT` (500: "window",
  "northern", "romeo" 626 are common; "eiffel" 318, "buckingham" 95 are not). A **rare**
  word is not common and has at least :data:`RARE_WORD_MIN_LEN` (4) letters: a shared
  rare word identifies the entity, a shared common one does not;
* a word is **known** at a count of at least :data:`KNOWN_MIN_COUNT` (100; every common
  word is known), or when it is the regular plural of a known word. A known word is a
  real word, never the misspelt part of a near miss ("austerity" 423 is not a misspelt
  "Austerlitz"; "beatlemania" 50 is unknown).

``P`` is **distinctive** when it has at least :data:`MIN_PREFIX` (4) characters and more
than :data:`PREFIX_FRACTION` (half) of ``f``'s.

**diverge** — at a word start the text equals ``f0 … f(i-1)`` word for word (``i >= 0``)
and its next word ``w`` differs from ``fi``:

* *inside a word* (rule a): ``w`` and ``fi`` share a prefix of ``c >= 1`` characters and
  both go on after it with a letter/digit ("coca col|oca" / "coca col|a", "beatle|mania" /
  "beatle|s"). Flagged when ``P = f0 … f(i-1) + fi[:c]`` is distinctive, ``w`` is not
  known, and either ``c >= MIN_PREFIX`` or one of ``f0 … f(i-1)`` is rare ("magna
  c|harte" counts, "new yo|ghurt" does not). Not a divergence — ``w`` is another word
  that starts with a whole word: ``c`` at a part boundary of a joined variant
  ("coca|ine" / "coca|cola"), or ``w[:c]`` a known word of ``MIN_PREFIX`` letters or
  more ("wind|pipe" / "wind|ows"). (``c == len(fi)``, "rome|o", is not inside the form.)
* *at a word boundary* (rule a'): ``i >= 1`` and ``w`` is any other word that does not
  start with ``fi`` ("buckingham |castle" / "buckingham |palace", "mcdonald |rekem" /
  "mcdonald |s"). Flagged when ``P = f0 … f(i-1)`` is distinctive and contains a rare
  word ("Northern Hemisphere", "Golden Gate Park": only common words shared). Text end or
  punctuation after the shared words is not a near miss.

The span runs from the word start to the end of ``w``.

**edit** (rule b) — ``k`` consecutive text words aligned with ``f0 … f(k-1)``, at least
one different, each different word ``w`` within optimal-string-alignment distance
(Damerau–Levenshtein, adjacent transpositions) of its form word ``fw``: 0 when ``fw`` has
fewer than 5 characters, 1 for 5–8, 2 for 9 or more (:data:`EDIT_ALLOWANCE`). ``w`` must
not be known, not be ``fw`` with letters added before or after ("pythonic", "cpython":
other words), and not be a whole part of a joined form word ("sputnik" for "sputnik1").
The last word may carry a regular plural suffix (as :func:`.surface_forms.pluralize` adds
them), which costs nothing; the word without it must not be known either. The span
covers the ``k`` words ("Swearovski", "Mount Rushmor", "the Hindenberg disaster" →
"Hindenberg disaster").

Output: :class:`NearMiss` spans on the ORIGINAL text (``text[nm.start:nm.end] ==
nm.text``), leftmost, longest at equal start, non-overlapping. A candidate that overlaps
an exact mention found by :meth:`.detector.Detector.find` is dropped (a text with both
counts once, as a mention; plurals and possessives the detector counts are mentions), and
so is one that reaches into a whole form of its entity glued to more letters
("Rachmaninoffx", "Magna Cartax" against the alias "Magna Charta"): like the detector,
that is another word.

Speed: only an uncommon text word can anchor a candidate (every rule needs one: the
unknown misspelt word or a rare shared word); each distinct uncommon word is looked up
once per finder in prefix/length indexes of the base-form words (memoised); the detector
runs only when there is a candidate (or not at all when the caller passes its mentions).
So a call costs about one fold of the text plus a set lookup per word. The lexicon (about 25k
common, 44k known words) is read once per process, on first use (about 0.1 s).
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from itertools import accumulate

from .detector import Detector, EntityForms, Span
from .normalize import SEP, fold_char, fold_text, fold_with_offsets
from .surface_forms import IRREGULAR_PLURALS, expand_entity, fold_patterns

COMMON_MIN_COUNT = 500  # common (not distinctive): this count or more in pyspellchecker's list
KNOWN_MIN_COUNT = 100  # known English word (never the misspelt part): this count or more
MIN_PREFIX = 4  # shared prefix P: at least this many letters/digits …
PREFIX_FRACTION = 0.5  # … and MORE than this fraction of the form's letters/digits
RARE_WORD_MIN_LEN = 4  # a shared complete word is distinctive: uncommon and this long
# (minimum form-word length, allowed distance), longest first; shorter words: exact only
EDIT_ALLOWANCE: tuple[tuple[int, int], ...] = ((9, 2), (5, 1))

LEXICON_PACKAGE = "spellchecker"
LEXICON_RESOURCE = "resources/en.json.gz"
_ANCHOR_CACHE_MAX = 8192
_END = ""  # trie key of the entities whose pattern ends at a node

_SINGULAR_IRREGULAR = {v: k for k, v in IRREGULAR_PLURALS.items()}


@dataclass(frozen=True)
class NearMiss:
    start: int  # index into the original text
    end: int  # exclusive
    entity: str  # canonical entity name
    text: str  # text[start:end]
    form: str  # the folded surface form it resembles
    kind: str  # "diverge" or "edit"


# -- lexicon -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _lexicon() -> tuple[frozenset[str], frozenset[str]]:
    """(known, common): folded words whose count in pyspellchecker's English list is at
    least KNOWN_MIN_COUNT / COMMON_MIN_COUNT. Contractions are split as folding splits
    them ("don't" → "don", "t")."""
    try:
        res = resources.files(LEXICON_PACKAGE).joinpath(LEXICON_RESOURCE)
        raw = res.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise RuntimeError(
            "near-miss detection needs the English word list of pyspellchecker "
            "(pip install pyspellchecker==0.9.1)"
        ) from e
    counts: dict[str, int] = json.loads(gzip.decompress(raw))
    known: set[str] = set()
    common: set[str] = set()
    low = min(KNOWN_MIN_COUNT, COMMON_MIN_COUNT)
    for word, n in counts.items():
        if n < low:
            continue
        if word.isascii() and word.isalnum():
            folded = [word.lower()]
        else:
            folded = [w for w in fold_text(word).split(SEP) if w]
        if n >= KNOWN_MIN_COUNT:
            known.update(folded)
        if n >= COMMON_MIN_COUNT:
            common.update(folded)
    return frozenset(known), frozenset(common)


def common_words() -> frozenset[str]:
    """Folded words counted at least :data:`COMMON_MIN_COUNT` times (loaded once)."""
    return _lexicon()[1]


def known_words() -> frozenset[str]:
    """Folded words counted at least :data:`KNOWN_MIN_COUNT` times (loaded once)."""
    return _lexicon()[0]


def is_common(word: str) -> bool:
    """Whether a folded word is a common English word (see :data:`COMMON_MIN_COUNT`)."""
    return word in common_words()


def is_known(word: str) -> bool:
    """Whether a folded word is a known English word (see :data:`KNOWN_MIN_COUNT`)."""
    return word in known_words()


# -- distance ------------------------------------------------------------------------


def osa_distance(a: str, b: str, cap: int) -> int:
    """Optimal-string-alignment distance of ``a`` and ``b``, or ``cap + 1`` if larger."""
    if a == b:
        return 0
    la, lb = len(a), len(b)
    i = 0
    while i < la and i < lb and a[i] == b[i]:
        i += 1
    j = 0
    while j < la - i and j < lb - i and a[la - 1 - j] == b[lb - 1 - j]:
        j += 1
    a, b = a[i : la - j], b[i : lb - j]
    la, lb = len(a), len(b)
    if abs(la - lb) > cap:
        return cap + 1
    if not la or not lb:
        return max(la, lb)
    prev2: list[int] = []
    prev = list(range(lb + 1))
    for x in range(1, la + 1):
        cur = [x] + [0] * lb
        ca = a[x - 1]
        for y in range(1, lb + 1):
            cb = b[y - 1]
            d = min(prev[y] + 1, cur[y - 1] + 1, prev[y - 1] + (ca != cb))
            if x > 1 and y > 1 and ca == b[y - 2] and a[x - 2] == cb:
                d = min(d, prev2[y - 2] + 1)
            cur[y] = d
        if min(cur) > cap:
            return cap + 1
        prev2, prev = prev, cur
    return min(prev[lb], cap + 1)


def edit_allowance(form_word: str) -> int:
    """Edits allowed in a misspelling of ``form_word`` (see :data:`EDIT_ALLOWANCE`)."""
    n = len(form_word)
    for min_len, allowed in EDIT_ALLOWANCE:
        if n >= min_len:
            return allowed
    return 0


# -- forms ---------------------------------------------------------------------------


def _singulars(word: str) -> list[str]:
    out = []
    if word.endswith("ies"):
        out.append(word[:-3] + "y")
    if word.endswith("es"):
        out.append(word[:-2])
    if word.endswith("s"):
        out.append(word[:-1])
    if word in _SINGULAR_IRREGULAR:
        out.append(_SINGULAR_IRREGULAR[word])
    return [w for w in out if w]


def _unplural(word: str) -> list[str]:
    """Singulars of ``word`` if it looks like a regular plural as
    :func:`.surface_forms.pluralize` makes them: +es after ss/x/z/ch/sh, -y → -ies, +s
    after anything but "s" ("meatless" is no plural)."""
    out = []
    if word.endswith("ies") and len(word) > 3:
        out.append(word[:-3] + "y")
    if word.endswith("es") and word[:-2].endswith(("ss", "x", "z", "ch", "sh")):
        out.append(word[:-2])
    if word.endswith("s") and len(word) > 1 and not word.endswith("ss"):
        out.append(word[:-1])
    return out


def _is_derived(pattern: str, patterns: set[str]) -> bool:
    """A plural/possessive of another pattern: a word pluralised, or a trailing "s" word."""
    words = pattern.split(SEP)
    if len(words) > 1 and words[-1] == "s" and SEP.join(words[:-1]) in patterns:
        return True
    for i, w in enumerate(words):
        for sing in _singulars(w):
            if SEP.join([*words[:i], sing, *words[i + 1 :]]) in patterns:
                return True
    return False


@dataclass(frozen=True)
class _Form:
    entity: str
    pattern: str
    words: tuple[str, ...]
    cum: tuple[int, ...]  # letters/digits before word i (len k + 1)
    min_prefix: int  # smallest distinctive P
    rare_before: tuple[bool, ...]  # some word before i is rare (len k + 1)
    bounds: tuple[frozenset[int], ...]  # part boundaries inside word i (joined variants)
    allow: tuple[int, ...]  # edit allowance per word


def _build_forms(entities: Sequence[EntityForms], common: frozenset[str]) -> list[_Form]:
    forms: list[_Form] = []
    for ent in entities:
        pats = set(fold_patterns(ent.forms))
        seps: dict[str, set[int]] = {}  # joined pattern -> separator positions (alnum idx)
        for p in pats:
            pos, n = set(), 0
            for ch in p:
                if ch == SEP:
                    pos.add(n)
                else:
                    n += 1
            seps.setdefault(p.replace(SEP, ""), set()).update(pos)
        for p in sorted(pats):
            if _is_derived(p, pats):
                continue
            words = tuple(p.split(SEP))
            cum = tuple(accumulate((len(w) for w in words), initial=0))
            rare, acc = [False], False
            for w in words:
                acc = acc or (len(w) >= RARE_WORD_MIN_LEN and w not in common)
                rare.append(acc)
            joined_bounds = seps.get(p.replace(SEP, ""), set())
            bounds = tuple(
                frozenset(b - cum[i] for b in joined_bounds if cum[i] < b < cum[i + 1])
                for i in range(len(words))
            )
            forms.append(
                _Form(
                    entity=ent.entity,
                    pattern=p,
                    words=words,
                    cum=cum,
                    min_prefix=max(MIN_PREFIX, math.floor(cum[-1] * PREFIX_FRACTION) + 1),
                    rare_before=tuple(rare),
                    bounds=bounds,
                    allow=tuple(edit_allowance(w) for w in words),
                )
            )
    return forms


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# -- finder --------------------------------------------------------------------------


class NearMissFinder:
    """Finds near misses of a fixed set of entities. Build once, call :meth:`find` often."""

    def __init__(self, entities: Iterable[EntityForms], detector: Detector | None = None):
        self.entities = tuple(entities)
        self._common = common_words()
        self._known = known_words()
        self._forms = _build_forms(self.entities, self._common)
        self._detector = detector
        # rare complete form words (anchors of rule a' and rare-prefixed rule a)
        self._exact: dict[str, list[tuple[int, int]]] = {}
        # rule a: (prefix length) -> prefix -> [(form, word)]
        self._prefix: dict[int, dict[str, list[tuple[int, int]]]] = {}
        # rule b: text word length -> [(form, word, its characters, max set difference)]
        self._by_len: dict[int, list[tuple[int, int, frozenset[str], int]]] = {}
        for fi, f in enumerate(self._forms):
            k = len(f.words)
            for j, fw in enumerate(f.words):
                if j < k - 1 and f.rare_before[j + 1] and not f.rare_before[j]:
                    self._exact.setdefault(fw, []).append((fi, j))
                need = max(1, f.min_prefix - f.cum[j])
                if not f.rare_before[j]:
                    need = max(need, MIN_PREFIX)
                if need < len(fw):
                    self._prefix.setdefault(need, {}).setdefault(fw[:need], []).append((fi, j))
                a = f.allow[j]
                if a:
                    last = j == k - 1  # may carry a plural suffix (up to +2 letters, +4 chars)
                    entry = (fi, j, frozenset(fw), 2 * a + (4 if last else 0))
                    for n in range(max(1, len(fw) - a), len(fw) + a + (2 if last else 0) + 1):
                        self._by_len.setdefault(n, []).append(entry)
        # every folded pattern (derived ones too): whole forms glued to more letters
        self._trie: dict = {}
        self._max_words = 1
        for ent in self.entities:
            for p in fold_patterns(ent.forms):
                node = self._trie
                for ch in p:
                    node = node.setdefault(ch, {})
                node.setdefault(_END, set()).add(ent.entity)
                self._max_words = max(self._max_words, p.count(SEP) + 1)
        self._anchor_cache: dict[str, tuple[tuple[int, int], ...]] = {}
        self._edit_cache: dict[tuple[str, int, int], bool] = {}

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = Detector(self.entities)
        return self._detector

    # -- word-level tests ------------------------------------------------------------
    def _is_known(self, w: str) -> bool:
        """A known word, or the regular plural of one ("pariahs")."""
        known = self._known
        return w in known or any(u in known for u in _unplural(w))

    def _diverges(self, w: str, f: _Form, j: int) -> int:
        """Rule a, word part: the shared prefix length c if ``w`` diverges inside word j
        of ``f`` at a place that is not a part boundary, else 0."""
        fw = f.words[j]
        c = _common_prefix_len(w, fw)
        if c == 0 or c >= len(fw) or c >= len(w) or c in f.bounds[j]:
            return 0
        if c >= MIN_PREFIX and w[:c] in self._known:
            return 0  # a known word with letters added: "wind|pipe", "window|less"
        return c

    def _edit_ok(self, w: str, fi: int, j: int) -> bool:
        """Rule b, word part: ``w`` is an unknown misspelling of word j of form fi."""
        key = (w, fi, j)
        hit = self._edit_cache.get(key)
        if hit is not None:
            return hit
        f = self._forms[fi]
        fw, allow = f.words[j], f.allow[j]
        cands = [w]
        if j == len(f.words) - 1:
            cands += _unplural(w)
        ok = False
        if allow and w != fw:
            for v in cands:
                if v == fw or v.startswith(fw) or v.endswith(fw) or v in self._known:
                    continue
                if any(v == fw[:b] or v == fw[b:] for b in f.bounds[j]):
                    continue  # a whole part of a joined form word: "sputnik" / "sputnik|1"
                if osa_distance(v, fw, allow) <= allow:
                    ok = True
                    break
        if self._is_known(w):
            ok = False
        if len(self._edit_cache) > _ANCHOR_CACHE_MAX:
            self._edit_cache.clear()
        self._edit_cache[key] = ok
        return ok

    def _anchors(self, w: str) -> tuple[tuple[int, int], ...]:
        """(form, word index) pairs that an uncommon text word ``w`` may stand for."""
        hit = self._anchor_cache.get(w)
        if hit is not None:
            return hit
        out: dict[tuple[int, int], None] = dict.fromkeys(self._exact.get(w, ()))
        if not self._is_known(w):  # a known word is never the misspelt part
            for n, index in self._prefix.items():
                if len(w) > n:
                    for fi, j in index.get(w[:n], ()):
                        if self._diverges(w, self._forms[fi], j):
                            out[(fi, j)] = None
            chars = frozenset(w)
            for fi, j, fchars, max_diff in self._by_len.get(len(w), ()):
                # each edit changes the character set by at most 2: a cheap lower bound
                if len(chars ^ fchars) <= max_diff and self._edit_ok(w, fi, j):
                    out[(fi, j)] = None
        res = tuple(out)
        if len(self._anchor_cache) > _ANCHOR_CACHE_MAX:
            self._anchor_cache.clear()
        self._anchor_cache[w] = res
        return res

    # -- run-level tests -------------------------------------------------------------
    def _match(self, fi: int, s: int, words: list[str], out: list) -> None:
        f = self._forms[fi]
        fwords, k, n = f.words, len(f.words), len(words)
        i = 0
        while i < k and s + i < n and words[s + i] == fwords[i]:
            i += 1
        if i == k:
            return  # the form itself: a mention
        if s + i < n:  # rule a / a': the text goes on with a different word
            w, fw = words[s + i], fwords[i]
            c = 0 if self._is_known(w) else self._diverges(w, f, i)
            if (
                c
                and f.cum[i] + c >= f.min_prefix
                and (c >= MIN_PREFIX or f.rare_before[i])
            ):
                out.append((s, s + i + 1, fi, "diverge"))
            elif (
                i >= 1
                and not w.startswith(fw)
                and f.cum[i] >= f.min_prefix
                and f.rare_before[i]
            ):
                out.append((s, s + i + 1, fi, "diverge"))
        if s + k <= n:  # rule b
            for j in range(i, k):
                w = words[s + j]
                if w != fwords[j] and not self._edit_ok(w, fi, j):
                    return
            out.append((s, s + k, fi, "edit"))

    def _glued(self, folded: str, starts: list[int], ws: int, we: int, entity: str) -> bool:
        """Whether a whole form of ``entity`` followed by more letters ("Rachmaninoffx",
        "Magna Cartax": another word) starts at a word start and reaches into words
        ``ws … we-1``."""
        n = len(folded)
        for q in range(max(0, ws - self._max_words + 1), we):
            node, i = self._trie, starts[q]
            while i < n:
                node = node.get(folded[i])
                if node is None:
                    break
                i += 1
                ents = node.get(_END)
                if ents and entity in ents and i < n and folded[i] != SEP:
                    if bisect.bisect_right(starts, i) - 1 >= ws:
                        return True
        return False

    # -- public ----------------------------------------------------------------------
    def find(self, text: str, mentions: Sequence[Span] | None = None) -> list[NearMiss]:
        """Near misses in ``text``. ``mentions``: the detector's spans for this very text,
        if the caller already has them (saves running the detector again)."""
        if not self._forms or not text:
            return []
        folded, offsets = fold_with_offsets(text)
        words = folded.split(SEP)
        if words and not words[-1]:
            words.pop()
        common = self._common
        cands: list[tuple[int, int, int, str]] = []
        seen: set[tuple[int, int]] = set()
        for t, w in enumerate(words):
            if w in common:
                continue
            for fi, j in self._anchors(w):
                s = t - j
                if s < 0 or (fi, s) in seen:
                    continue
                seen.add((fi, s))
                self._match(fi, s, words, cands)
        if not cands:
            return []
        starts = list(accumulate((len(w) + 1 for w in words), initial=0))
        if mentions is None:
            mentions = self.detector.find(text)
        taken = [(m.start, m.end) for m in mentions]
        cands.sort(key=lambda c: (c[0], -c[1], c[3], c[2]))
        result: list[NearMiss] = []
        last_end = -1
        for ws, we, fi, kind in cands:
            fs, fe = starts[ws], starts[we] - 1
            start = offsets[fs]
            if start < last_end:
                continue
            end = offsets[fe - 1] + 1
            while end < len(text) and fold_char(text[end]) == "":
                end += 1
            if any(ms < end and start < me for ms, me in taken):
                continue
            f = self._forms[fi]
            if self._glued(folded, starts, ws, we, f.entity):
                continue
            result.append(NearMiss(start, end, f.entity, text[start:end], f.pattern, kind))
            last_end = end
        return result


def near_miss_finder_for(entities: Iterable[tuple[str, Sequence[str]] | str]) -> NearMissFinder:
    """A finder from entity names or (name, aliases) pairs (surface forms expanded)."""
    items = []
    for e in entities:
        name, aliases = (e, ()) if isinstance(e, str) else (e[0], tuple(e[1]))
        items.append(EntityForms(name, tuple(expand_entity(name, aliases))))
    return NearMissFinder(items)


__all__ = [
    "COMMON_MIN_COUNT",
    "KNOWN_MIN_COUNT",
    "EDIT_ALLOWANCE",
    "MIN_PREFIX",
    "PREFIX_FRACTION",
    "RARE_WORD_MIN_LEN",
    "NearMiss",
    "NearMissFinder",
    "common_words",
    "edit_allowance",
    "is_common",
    "is_known",
    "known_words",
    "near_miss_finder_for",
    "osa_distance",
]
