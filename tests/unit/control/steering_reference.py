"""Independent reference implementations used by the steering tests (regex-based, whole
text at once) — deliberately not sharing code paths with greyelephant.control's
incremental machinery."""

from __future__ import annotations

import re
import unicodedata


def ref_fold(text: str) -> str:
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
