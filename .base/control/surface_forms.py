"""Surface forms of an entity: the strings that count as naming it.

``expand_entity("Coca-Cola", ["Coke"])`` returns display strings such as "Coca-Cola",
"Coca Cola", "CocaCola", "Coca-Colas", "Coca-Cola's", "Coke", "Cokes", "Coke's", …

Rules (applied to the entity name and to every alias, after :func:`normalize_text`):

* **case** — not expanded: matching case-folds (see :mod:`.normalize`);
* **separators** — a name made of several parts (split on spaces, hyphens, underscores,
  slashes and dots between letters, and on camelCase / letter-digit boundaries when
  every alphabetic piece has at least 2 letters: "PlayStation" → "Play Station",
  "PS5" → "PS 5") gets its spaced form, hyphenated form, fully joined form and, up to
  4 parts each of at least 2 characters, every partial join ("Duck DuckGo"; single
  letters are never partially joined, so "U.S.A." does not yield "US A"). Hyphen and space fold to the same
  separator, so matching treats "Coca-Cola" = "Coca Cola" = "coca\\ncola";
* **leading article** — "The Beatles" also yields "Beatles" (the, a, an);
* **plurals** of the last word (none when it already ends in a single "s", nor when it
  carries an apostrophe — "McDonald's", "Dunkin'"): +s; +es after s/x/z/ch/sh; consonant+y → -ies (and +s,
  as proper names do: "Sonys"); a short table of irregulars (man→men, knife→knives, …);
  in "X of Y" names the head is pluralised too ("Statues of Liberty");
* **possessives**: 's, ’s (same after folding), and s' on plurals;
* **aliases** expand by the same rules.

Because matching also allows a trailing "s"/"es" and stops at separators, many of these
forms are redundant for matching; they are listed anyway so that the list is a faithful
answer to "what counts as naming X" (for directives, reports and eval tooling).
"""

from __future__ import annotations

import itertools
import re
from functools import lru_cache
from collections.abc import Iterable, Sequence

from .normalize import fold_form, normalize_text

IRREGULAR_PLURALS = {
    "man": "men",
    "woman": "women",
    "child": "children",
    "person": "people",
    "mouse": "mice",
    "goose": "geese",
    "foot": "feet",
    "tooth": "teeth",
    "ox": "oxen",
    "louse": "lice",
    "knife": "knives",
    "wife": "wives",
    "life": "lives",
    "leaf": "leaves",
    "wolf": "wolves",
    "half": "halves",
    "calf": "calves",
    "shelf": "shelves",
    "thief": "thieves",
    "loaf": "loaves",
    "cactus": "cacti",
    "fungus": "fungi",
    "nucleus": "nuclei",
    "criterion": "criteria",
    "phenomenon": "phenomena",
}
ARTICLES = ("the", "a", "an")
MAX_JOIN_PARTS = 4  # partial joins are enumerated up to this many parts

_PART_SPLIT = re.compile(r"[\s_/]+|-+|(?<=[^\W\d_])\.(?=[^\W\d_])")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")


def _match_case(src: str, dst: str) -> str:
    if src.isupper() and len(src) > 1:
        return dst.upper()
    if src[:1].isupper():
        return dst[:1].upper() + dst[1:]
    return dst


def pluralize(word: str) -> list[str]:
    """Plural spellings of one word (regular rules + a small irregular table)."""
    if not word or not word[-1].isalpha():
        return []
    low = word.lower()
    if low in IRREGULAR_PLURALS:
        return [_match_case(word, IRREGULAR_PLURALS[low])]
    upper = word.isupper() and len(word) > 1
    s, es, ies = ("S", "ES", "IES") if upper else ("s", "es", "ies")
    if low.endswith("s") and not low.endswith("ss"):
        return []  # already reads as a plural: "Starbucks", "Windows", "Beatles"
    if low.endswith(("ss", "x", "z", "ch", "sh")):
        return [word + es]
    if low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        return [word[:-1] + ies, word + s]
    return [word + s]


def _split_parts(name: str) -> list[str]:
    parts = [p for p in _PART_SPLIT.split(name) if p]
    out: list[str] = []
    for part in parts:
        pieces = [p for p in _CAMEL.split(part) if p]
        if len(pieces) > 1 and all(p.isdigit() or len(p) >= 2 for p in pieces):
            out.extend(pieces)
        else:
            out.append(part)
    return out


def spacing_variants(name: str) -> list[str]:
    """Spaced / hyphenated / joined / partially joined spellings of a multi-part name."""
    name = normalize_text(name)
    parts = _split_parts(name)
    variants = {name}
    if len(parts) > 1:
        variants.update({" ".join(parts), "-".join(parts), "".join(parts)})
        if len(parts) <= MAX_JOIN_PARTS and all(len(p) >= 2 for p in parts):
            for joins in itertools.product((" ", ""), repeat=len(parts) - 1):
                s = parts[0]
                for sep, part in zip(joins, parts[1:], strict=True):
                    s += sep + part
                variants.add(s)
        if parts[0].lower() in ARTICLES and len(parts) > 1:
            variants.update(spacing_variants(" ".join(parts[1:])))
    return sorted(variants)


def _plural_forms(name: str) -> list[str]:
    words = name.split(" ")
    out = []
    for p in pluralize(words[-1]):
        out.append(" ".join(words[:-1] + [p]))
    low = [w.lower() for w in words]
    if "of" in low[1:-1]:
        i = low.index("of")
        for p in pluralize(words[i - 1]):
            out.append(" ".join(words[: i - 1] + [p] + words[i - 1 :][1:]))
    return out


def name_forms(name: str) -> list[str]:
    """All surface forms of one name (no aliases)."""
    forms: set[str] = set()
    for v in spacing_variants(name):
        forms.add(v)
        last = v.split(" ")[-1]
        if "'" in last or not last[-1:].isalnum():
            continue  # "McDonald's", "Dunkin'": already possessive / elided
        plurals = _plural_forms(v)
        forms.update(plurals)
        forms.update({v + "'s", v + "\u2019s"})
        if last.endswith(("s", "S")):
            forms.add(v + "'")
        for p in plurals:
            if p.endswith(("s", "S")):
                forms.add(p + "'")
    return sorted(forms)


def expand_entity(name: str, aliases: Iterable[str] = ()) -> list[str]:
    """Surface forms (display strings) of an entity and its aliases, sorted, unique."""
    forms: set[str] = set()
    for n in (name, *aliases):
        if normalize_text(n):
            forms.update(name_forms(n))
    return sorted(forms)


def fold_patterns(forms: Sequence[str]) -> list[str]:
    """Distinct folded patterns of display forms (empty folds dropped), sorted."""
    return sorted({p for p in map(fold_form, forms) if p})


@lru_cache(maxsize=8192)
def entity_patterns(name: str, aliases: tuple[str, ...] = ()) -> tuple[str, ...]:
    """:func:`fold_patterns` of :func:`expand_entity`, memoised: a server sees the same
    entities request after request, and every request checks and compiles its list."""
    return tuple(fold_patterns(expand_entity(name, aliases)))


__all__ = [
    "ARTICLES",
    "IRREGULAR_PLURALS",
    "entity_patterns",
    "expand_entity",
    "fold_patterns",
    "name_forms",
    "normalize_text",
    "pluralize",
    "spacing_variants",
]
