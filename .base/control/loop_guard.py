"""The loop guard: no repeated token n-gram in a row's generated output.

Semantics are those of Hugging Face's ``no_repeat_ngram_size``, restricted to the
*generated* tokens (the prompt is not looked at): at each step, with ``g`` the row's
generated tokens so far, every token ``t`` such that ``g[-(n-1):] + [t]`` already occurs
as a contiguous n-gram of ``g`` is banned. So no token n-gram can appear twice.

Greedy decoding of a small model falls into loops ("It's a classic recipe that's been
passed down ... It's a classic recipe that's been passed down ..."), and the ban makes it
worse when the model has to route around a name; the guard cuts such a loop at its n-th
token, forcing the model off the loop. With n = 4 a single-token word can occur at most
4 times in a row, so the "stutter" of :mod:`.quality` (5 in a row) cannot happen.

State is incremental — a dict from each (n-1)-gram seen (packed into one int) to the
token or tokens that followed it — so a step costs a shift and two dict lookups,
whatever the length. The
caller decides what may never be banned (special tokens, EOS / stop tokens) and what to
do when everything would be banned (drop the guard for that step); see
:meth:`.steering_batch.SteeringBatch.controls`.
"""

from __future__ import annotations

from collections.abc import Iterable

from .limits import MAX_NO_REPEAT_NGRAM

_NOTHING: frozenset[int] = frozenset()
TOKEN_BITS = 32  # bits per token id in a packed context
TOKEN_LIMIT = 1 << TOKEN_BITS


def check_ngram_size(n: object, what: str = "no_repeat_ngram") -> int:
    """Validate an n-gram size: 0 (off) or 2..MAX_NO_REPEAT_NGRAM. Raises ValueError."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"{what} must be an integer")
    if n != 0 and not 2 <= n <= MAX_NO_REPEAT_NGRAM:
        raise ValueError(
            f"{what} must be 0 (off) or between 2 and {MAX_NO_REPEAT_NGRAM}"
            " (1 would forbid any token twice)"
        )
    return n


class NgramGuard:
    """Per-row state of the loop guard for n-grams of size ``n`` (>= 2), over token ids in
    ``[0, 2**TOKEN_BITS)``.

    The context (the last n-1 tokens) is one int, :data:`TOKEN_BITS` bits per token, the
    oldest highest; a context's followers are one int while there is one (nearly always),
    a set from the second. A step then reads and compares ints, not tuples of them: fewer
    objects, so fewer cache misses when the step runs with caches cold."""

    __slots__ = ("n", "context", "length", "followers", "_mask")

    def __init__(self, n: int):
        if n < 2:
            raise ValueError("NgramGuard needs n >= 2")
        self.n = n
        # the last n-1 generated tokens (``length`` of them: fewer at the start), packed
        self.context = 0
        self.length = 0
        # packed (n-1)-gram -> the token (or the set of tokens) that followed it
        self.followers: dict[int, int | set[int]] = {}
        self._mask = (1 << (TOKEN_BITS * (n - 1))) - 1

    def push(self, token: int) -> None:
        """Append one generated token: it follows the current context, which then moves
        on by one token."""
        self.push_banned(token)

    def push_banned(self, token: int) -> set[int] | frozenset[int]:
        """:meth:`push` the token, then return :meth:`banned` (one call for a decode
        step's one new token)."""
        if not 0 <= token < TOKEN_LIMIT:
            raise ValueError(f"token id {token} outside [0, 2**{TOKEN_BITS})")
        ctx = self.context
        followers = self.followers
        if self.length == self.n - 1:
            seen = followers.get(ctx)
            if seen is None:
                followers[ctx] = token
            elif seen.__class__ is int:
                if seen != token:
                    followers[ctx] = {seen, token}
            else:
                seen.add(token)
            self.context = ctx = ((ctx << TOKEN_BITS) | token) & self._mask
        else:
            self.context = ctx = (ctx << TOKEN_BITS) | token
            self.length += 1
            if self.length < self.n - 1:
                return _NOTHING
        return _as_set(followers.get(ctx))

    def extend(self, tokens: Iterable[int]) -> None:
        for t in tokens:
            self.push(t)

    def banned(self) -> set[int] | frozenset[int]:
        """Tokens that would complete an n-gram already present (do not mutate). A
        context shorter than n-1 tokens is never a key: nothing is banned then."""
        if self.length < self.n - 1:
            return _NOTHING
        return _as_set(self.followers.get(self.context))

    def reset(self) -> None:
        self.context = 0
        self.length = 0
        self.followers.clear()


def _as_set(seen: int | set[int] | None) -> set[int] | frozenset[int]:
    if seen is None:
        return _NOTHING
    return frozenset((seen,)) if seen.__class__ is int else seen


def banned_ngram_tokens(tokens: list[int], n: int) -> set[int]:
    """Reference (non-incremental) answer, for tests: what HF's
    ``_get_ngrams``/``_calc_banned_ngram_tokens`` would ban after ``tokens``."""
    if n < 1 or len(tokens) + 1 < n:
        return set()
    ctx = tuple(tokens[len(tokens) - n + 1:]) if n > 1 else ()
    out = set()
    for i in range(len(tokens) - n + 1):
        if tuple(tokens[i:i + n - 1]) == ctx:
            out.add(tokens[i + n - 1])
    return out
