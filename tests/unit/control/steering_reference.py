"""Independent reference implementations used by the steering tests (regex-based, whole
text at once) — deliberately not sharing code paths with greyelephant.control's
incremental machinery."""

from __future__ import annotations

import re
import unicodedata


def _abbreviation_symbol(c: str) -> bool:
    return unicodedata.category(c) == "So" and sum(
        ch.isalnum() for ch in unicodedata.normalize("NFKD", c)) > 1


def ref_fold(text: str) -> str:
    text = "".join(" " if _abbreviation_symbol(c) else c for c in text)
    s = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    s = "".join(c for c in s if unicodedata.category(c)[0] != "M" and unicodedata.category(c) != "Cf")
    s = "".join(c if c.isalnum() else " " for c in s)
    return re.sub(" +", " ", s)


def ref_word_start_hit(text: str, patterns) -> bool:
    """True if some pattern occurs at a word start of the folded text (prefix semantics:
    what the ban forbids)."""
    f = " " + ref_fold(text)
    return any((" " + p) in f for p in patterns)


def ref_mentions(text: str, patterns) -> bool:
    """Detector semantics: word start and word end (allowing an s/es plural suffix)."""
    if not patterns:
        return False
    alt = "|".join(re.escape(p) for p in sorted(patterns, key=len, reverse=True))
    return re.search(rf"(?:^| )(?:{alt})(?:s|es)?(?= |$)", ref_fold(text).strip(" ")) is not None


def _closed_regex(patterns):
    alt = "|".join(re.escape(p) for p in sorted(patterns, key=len, reverse=True))
    return re.compile(rf" (?:{alt})(?:s|es)? ")


def ref_closed_hit(text: str, patterns, at_end: bool = False) -> bool:
    """A form at a word start, optionally plural, followed by a separator character (and,
    with ``at_end``, by the end of the text): what the word-end ban forbids."""
    if not patterns:
        return False
    f = re.sub(" +", " ", " " + ref_fold(text) + (" " if at_end else ""))
    return _closed_regex(tuple(patterns)).search(f) is not None


def ref_begins(before: str, after: str, bodies) -> bool:
    """``after`` = ``before`` + one token's text: the token ends inside a form of
    ``bodies`` (folded forms) that begins at a word start within the token."""
    f0 = re.sub(" +", " ", " " + ref_fold(before))
    f1 = re.sub(" +", " ", " " + ref_fold(after))
    for b in bodies:
        for body in (b + " ", b + "s ", b + "es "):
            for j in range(1, len(body)):
                x = body[:j]
                if f1.endswith(" " + x) and len(f1) - len(x) >= len(f0):
                    return True
    return False
