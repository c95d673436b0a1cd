"""Text normalisation shared by every piece of steering.

Two levels, one definition each:

* :func:`normalize_text` — the *display* normalisation applied to entity names and
  aliases before anything else: Unicode NFKC, curly quotes/apostrophes to straight ones,
  whitespace runs to one space, stripped.
* :func:`fold_char` / :func:`fold_text` — the *matching* normalisation. The detector and
  the ban automaton both see text only through it, which is what makes "the automaton
  banned it" and "the detector would have flagged it" the same statement.

The matching rule, exactly (per input character ``c``):

1. ``NFKD(c)``, then ``casefold()``, then ``NFKD`` again (casefold can produce
   decomposable characters, e.g. "İ");
2. drop every combining mark (Unicode category ``M*``) and every format character
   (``Cf``: zero-width space/joiners, soft hyphen, bidi marks) — so accents are ignored
   ("Zürich" = "Zurich" = "Zu\\u0308rich") and invisible characters cannot split a name;
3. each remaining character is kept if ``str.isalnum()``, otherwise it becomes the
   separator :data:`SEP` (a space);
4. over the whole stream, runs of separators collapse to one.

So "Coca-Cola", "coca  cola", "COCA\\ncola" and "Ｃｏｃａ－Ｃｏｌａ" all fold to "coca cola".
Folding is a per-character function (plus the collapse), so folding a text token by token
gives the same stream as folding it whole: this is what lets the ban automaton work on
decoded token pieces.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

SEP = " "

_QUOTES = str.maketrans(
    {
        "\u2018": "'",  # left single quotation mark
        "\u2019": "'",  # right single quotation mark / apostrophe
        "\u201a": "'",  # single low-9
        "\u201b": "'",  # single high-reversed-9
        "\u2032": "'",  # prime
        "\u02bc": "'",  # modifier letter apostrophe
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
    }
)


def normalize_text(text: str) -> str:
    """NFKC, straight quotes, whitespace runs collapsed to one space, stripped."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    return " ".join(text.split())


@lru_cache(maxsize=1 << 16)
def fold_char(c: str) -> str:
    """Matching fold of one character: '' (ignorable), SEP, or one or more alnum chars.

    Runs of SEP inside the result are possible (e.g. "⅓" → "1 3" keeps one SEP between);
    callers collapse over the stream. A symbol that stands for an abbreviation ("™" →
    "TM", "℠", "㎏": category So, decomposing into several letters) is a separator, not
    letters: "Coca-Cola™" ends the word "Cola".
    """
    if unicodedata.category(c) == "So":
        d = unicodedata.normalize("NFKD", c)
        if sum(ch.isalnum() for ch in d) > 1:
            return SEP
    s = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", c).casefold())
    out = []
    for ch in s:
        cat = unicodedata.category(ch)
        if cat[0] == "M" or cat == "Cf":
            continue
        out.append(ch if ch.isalnum() else SEP)
    return "".join(out)


def fold_text(text: str, *, prev_sep: bool = True) -> str:
    """Fold a whole string, collapsing separator runs.

    ``prev_sep`` says whether the stream before ``text`` ended with a separator (text start
    counts as one), in which case a leading separator is dropped.
    """
    out: list[str] = []
    last_sep = prev_sep
    for c in text:
        for ch in fold_char(c):
            if ch == SEP:
                if last_sep:
                    continue
                last_sep = True
            else:
                last_sep = False
            out.append(ch)
    return "".join(out)


def fold_with_offsets(text: str) -> tuple[str, list[int]]:
    """Fold ``text`` (text start counts as a separator) and map each folded char back.

    Returns ``(folded, offsets)`` with ``offsets[i]`` the index in ``text`` of the character
    that produced ``folded[i]``.
    """
    out: list[str] = []
    offsets: list[int] = []
    last_sep = True
    for i, c in enumerate(text):
        for ch in fold_char(c):
            if ch == SEP:
                if last_sep:
                    continue
                last_sep = True
            else:
                last_sep = False
            out.append(ch)
            offsets.append(i)
    return "".join(out), offsets


def fold_form(form: str) -> str:
    """Fold a surface form into a pattern: folded, without leading/trailing separators."""
    return fold_text(normalize_text(form)).strip(SEP)
