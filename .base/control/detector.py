"""The mention detector: one implementation for the server, the eval and the recipe.

A mention of an entity is an occurrence, in the folded text (:mod:`.normalize`), of one
of its folded surface forms (:mod:`.surface_forms`) that

* **starts at a word start** — text start, or right after a separator (any character
  that is not a letter or digit after folding); and
* **ends at a word end** — text end or a separator follows, possibly after one allowed
  suffix from :data:`END_SUFFIXES` ("s", "es": plurals such as "Nikes", "Teslas").
  Possessives need no suffix rule: the apostrophe is a separator ("Nike's" = "nike s").

Consequences, deliberately chosen:

* matching is case-, accent- and width-insensitive and ignores invisible characters;
  "Coca-Cola" = "coca cola" = "COCA\\ncola";
* a form glued inside a longer word is **not** a mention: "Nikelodeon" does not mention
  "Nike", "Pythonic" does not mention "Python", "theNike" does not either. (The ban
  automaton is stricter on the left-anchored side: it forbids *emitting* any word that
  *starts* with a form — "Nikelodeon" included — because it cannot see the future; so
  generated text never contains a detector mention, and may lack a few innocent words.)
* "_" is a separator (unlike regex ``\\b``): "nike_shoes" mentions Nike.

Spans are reported on the ORIGINAL text: ``text[span.start:span.end] == span.text``;
they are leftmost-longest and do not overlap. A span covers the form and its plural
suffix, plus any trailing ignorable characters (combining marks, zero-width chars).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from .aho_corasick import Automaton
from .normalize import SEP, fold_char, fold_with_offsets
from .surface_forms import expand_entity, fold_patterns

if TYPE_CHECKING:
    from .near_miss import NearMiss

END_SUFFIXES: tuple[str, ...] = ("s", "es")


@dataclass(frozen=True)
class Span:
    start: int  # index into the original text
    end: int  # exclusive
    entity: str  # canonical entity name
    text: str  # text[start:end]


@dataclass(frozen=True)
class EntityForms:
    entity: str
    forms: tuple[str, ...]


class Detector:
    """Finds mentions of a fixed set of entities. Build once, call :meth:`find` often."""

    def __init__(self, entities: Iterable[EntityForms], end_suffixes=END_SUFFIXES):
        self.entities = tuple(entities)
        owner: dict[str, str] = {}
        for ent in self.entities:
            for pat in fold_patterns(ent.forms):
                owner.setdefault(pat, ent.entity)
        self.automaton = Automaton(owner)
        self._owner = [owner[p] for p in self.automaton.patterns]
        self.end_suffixes = tuple(end_suffixes)

    @classmethod
    def for_entities(cls, entities: Iterable[tuple[str, Sequence[str]] | str]) -> Detector:
        """From entity names, or (name, aliases) pairs; surface forms are expanded."""
        items = []
        for e in entities:
            name, aliases = (e, ()) if isinstance(e, str) else (e[0], tuple(e[1]))
            items.append(EntityForms(name, tuple(expand_entity(name, aliases))))
        return cls(items)

    def _end_ok(self, folded: str, j: int) -> int:
        """If a word ends at folded[j] (exclusive) or after an allowed suffix, return the
        folded index where the mention ends; else -1."""
        n = len(folded)
        if j == n or folded[j] == SEP:
            return j
        for suf in self.end_suffixes:
            k = j + len(suf)
            if folded.startswith(suf, j) and (k == n or folded[k] == SEP):
                return k
        return -1

    def find(self, text: str) -> list[Span]:
        if not self.automaton.patterns or not text:
            return []
        folded, offsets = fold_with_offsets(text)
        ac = self.automaton
        cands: list[tuple[int, int, int]] = []  # (folded start, folded end, pattern)
        q = ac.start
        for i, ch in enumerate(folded):
            q = ac.step(q, ch)
            if ac.accept(q) < 0:
                continue
            for pi in ac.outputs(q):
                end = self._end_ok(folded, i + 1)
                if end >= 0:
                    cands.append((i + 1 - len(ac.patterns[pi]), end, pi))
        if not cands:
            return []
        cands.sort(key=lambda c: (c[0], -c[1]))
        spans: list[Span] = []
        last_end = -1
        for fs, fe, pi in cands:
            if fs < last_end:
                continue
            last_end = fe
            start = offsets[fs]
            end = offsets[fe - 1] + 1
            while end < len(text) and fold_char(text[end]) == "":
                end += 1
            spans.append(Span(start, end, self._owner[pi], text[start:end]))
        return spans

    def count(self, text: str) -> int:
        return len(self.find(text))

    def mentions(self, text: str) -> bool:
        return bool(self.find(text))

    def near_misses(self, text: str, mentions: Sequence[Span] | None = None) -> list[NearMiss]:
        """Near misses (misspelt/truncated names, :mod:`.near_miss`) of the same entities;
        never overlapping a mention found by :meth:`find` (pass ``mentions=self.find(text)``
        if already computed)."""
        finder = self.__dict__.get("_near_miss_finder")
        if finder is None:
            from .near_miss import NearMissFinder  # lazy: near_miss imports this module

            finder = self._near_miss_finder = NearMissFinder(self.entities, detector=self)
        return finder.find(text, mentions)


@lru_cache(maxsize=512)
def _cached(key: tuple[tuple[str, tuple[str, ...]], ...]) -> Detector:
    return Detector.for_entities(key)


def detector_for(entities: Iterable[tuple[str, Sequence[str]] | str]) -> Detector:
    """Cached :class:`Detector` for (name, aliases) pairs or plain names."""
    key = tuple(
        (e, ()) if isinstance(e, str) else (e[0], tuple(e[1])) for e in entities
    )
    return _cached(key)


def find_mentions(text: str, entity: str, aliases: Sequence[str] = ()) -> list[Span]:
    """Convenience: mentions of one entity (as in an eval case's avoid/avoid_aliases)."""
    return detector_for([(entity, tuple(aliases))]).find(text)


def find_near_misses(text: str, entity: str, aliases: Sequence[str] = ()) -> list[NearMiss]:
    """Convenience: near misses of one entity (mirrors :func:`find_mentions`)."""
    return detector_for([(entity, tuple(aliases))]).near_misses(text)
