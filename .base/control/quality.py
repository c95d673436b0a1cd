"""Is a response degenerate? Empty, truncated to nothing, or highly repetitive.

Used by the eval (degenerate_rate) and the recipe (to reject bad revisions). The rules
are deliberately simple and documented so a rate means the same thing everywhere:

* ``empty``       — fewer than 3 words (after stripping whitespace and punctuation);
* ``stutter``     — one word repeated 5+ times in a row ("the the the the the");
* ``repetitive``  — at least 12 word 4-grams and fewer than half of them distinct
                    (the same sentence or clause looping).
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
MIN_WORDS = 3
STUTTER_RUN = 5
NGRAM = 4
MIN_NGRAMS = 12
MIN_DISTINCT_RATIO = 0.5


def degeneracy(text: str) -> str | None:
    """The reason a response is degenerate, or None when it is fine."""
    words = _WORD.findall(text.casefold())
    if len(words) < MIN_WORDS:
        return "empty"
    run = 1
    for prev, cur in zip(words, words[1:], strict=False):
        run = run + 1 if cur == prev else 1
        if run >= STUTTER_RUN:
            return "stutter"
    grams = [tuple(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)]
    if len(grams) >= MIN_NGRAMS and len(set(grams)) / len(grams) < MIN_DISTINCT_RATIO:
        return "repetitive"
    return None


def is_degenerate(text: str) -> bool:
    return degeneracy(text) is not None
