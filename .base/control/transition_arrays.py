"""A compiled spec's automata as arrays, so that a compiled loop can compute a row's
step-state transition instead of only looking up one already seen.

:class:`TokenTexts` holds a vocabulary's folded token texts as code points (what
:meth:`.ban_automaton.CompiledSteering.advance` feeds the automata when no bytes are
pending). :class:`SpecArrays` holds one compiled spec's avoid and prefer automata as
dense per-state transition tables over the spec's alphabet (the characters of its keys;
every other character leads to the root), their accept and separator flags, the prefer
states' depths and each prefer state's boosted token ids. The tables are filled lazily:
an entry is -1 (or -2 for accept) until :meth:`SpecArrays.teach` copies it from the
Python automaton, which stays the single source of truth. :func:`compute_steps` moves the
rows it is given over their new token with these tables, as the Python ``advance`` does,
and gives up on a row (leaving it to the Python path) wherever an entry is unknown, the
token leaves bytes pending or has no text, or an avoided form completes.

A step state's fields are packed into one int64 *state key* (:func:`pack_state`) so the
compiled loop can find the new state's id in a hash of the interned states.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .aho_corasick import ROOT, Automaton
from .ban_automaton import CompiledSteering
from .limits import MAX_PREFER_MISSES
from .normalize import SEP
from .vocab_index import VocabIndex

UNKNOWN = -1  # a transition table entry not copied from the automaton yet
UNKNOWN_ACCEPT = -2  # an accept entry not copied yet (-1: no pattern ends there)
SEP_CODE = ord(SEP)
# a packed state key's fields (low to high): done 1 bit, trying 1, misses 4, prefer
# state 20, avoid state 20, kind 16
_Q_BITS, _KIND_BITS, _MISS_BITS = 20, 16, 4
NOT_PACKABLE = -1  # the state key of a step state the compiled loop cannot compute
GAVE_UP = -3  # compute_steps' code for a row stopped by an entry not known yet


def pack_state(state: tuple, kind: int) -> int:
    """The int64 key of an interned step state ``(kind, avoid, pending, prefer, done,
    trying, misses)`` (see :func:`.step_states.step_state`) with its kind given as
    ``kind`` (a small number the caller maps the row kind to), or NOT_PACKABLE (bytes
    pending, or a field too wide)."""
    _, avoid, pending, prefer, done, trying, misses = state
    if (pending or not 0 <= kind < 1 << _KIND_BITS or not 0 <= avoid < 1 << _Q_BITS
            or not 0 <= prefer < 1 << _Q_BITS or not 0 <= misses < 1 << _MISS_BITS):
        return NOT_PACKABLE
    return ((((kind << _Q_BITS | avoid) << _Q_BITS | prefer) << _MISS_BITS | misses) << 2
            | int(trying) << 1 | int(done))


class TokenTexts:
    """A vocabulary's folded token texts as code points: token t's are
    ``chars[ptr[t]:ptr[t + 1]]``; ``plain[t]``: t has text and leaves no bytes pending."""

    def __init__(self, index: VocabIndex):
        self.index = index
        texts = [t or "" for t in index.texts]
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        self.ptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.ptr[1:])
        joined = "".join(texts)
        self.chars = (np.frombuffer(joined.encode("utf-32-le"), dtype=np.int32).copy()
                      if joined else np.zeros(0, dtype=np.int32))
        self.plain = np.fromiter(
            (b is not None and not tail for b, tail in zip(index.token_bytes, index.tails,
                                                           strict=True)),
            dtype=np.uint8, count=len(texts))


class _AutomatonArrays:
    """One automaton's lazily filled tables (see the module doc)."""

    def __init__(self, ac: Automaton, columns: dict[str, int]):
        n, width = len(ac), len(columns) + 1
        self.ac, self.columns = ac, columns
        self.delta = np.full((n, width), UNKNOWN, dtype=np.int32)
        self.delta[:, width - 1] = ROOT  # a character in no key: back to the root
        self.sep = np.fromiter((e == SEP for e in ac.edge), dtype=np.uint8, count=n)
        self.accept = np.full(n, UNKNOWN_ACCEPT, dtype=np.int32)
        self.depth = np.asarray(ac.depth, dtype=np.int32)

    def teach(self, q: int, text: str) -> None:
        """Copy the entries reading ``text`` from state ``q`` uses (as ``Automaton.feed``
        reads it)."""
        ac, delta, accept, columns = self.ac, self.delta, self.accept, self.columns
        other = delta.shape[1] - 1
        for ch in text:
            if not (ch == SEP and ac.edge[q] == SEP):
                r = ac.step(q, ch)
                delta[q, columns.get(ch, other)] = r
                q = r
            accept[q] = ac.accept(q)


class SpecArrays:
    """One compiled spec's automata as arrays (see the module doc)."""

    def __init__(self, spec: CompiledSteering):
        self.spec = spec
        chars = sorted({ch for ac in (spec.avoid, spec.prefer) for key in ac.keys
                        for ch in key})
        columns = {ch: a for a, ch in enumerate(chars)}
        self.alphabet = np.asarray([ord(ch) for ch in chars], dtype=np.int32)
        self.avoid = _AutomatonArrays(spec.avoid, columns)
        self.prefer = _AutomatonArrays(spec.prefer, columns)
        n = len(spec.prefer)
        # prefer state q's boosted ids: boost_ids[boost_at[q, 0]:boost_at[q, 1]] (sorted);
        # boost_at[q, 0] < 0: not copied yet
        self.boost_at = np.full((n, 2), -1, dtype=np.int64)
        self.boost_ids = np.zeros(64, dtype=np.int32)
        self._boost_used = 0

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.avoid.delta, self.prefer.delta, self.boost_ids))

    def teach(self, state: tuple, token: int) -> None:
        """Copy every entry :func:`compute_steps` needs to move a row in step state
        ``state`` over ``token`` (nothing when the token leaves bytes pending or has no
        text: the compiled loop leaves those to the Python path)."""
        _, avoid, pending, prefer, done, _, _ = state
        index = self.spec.index
        if pending or not 0 <= token < len(index.texts) or index.token_bytes[token] is None:
            return
        text = index.texts[token]
        self.avoid.teach(avoid, text)
        if not done:
            self.prefer.teach(prefer, text)
            if self.boost_at[prefer, 0] < 0:
                self._copy_boost(prefer)

    def _copy_boost(self, q: int) -> None:
        ids = self.spec.boosted_ids(q)
        at = self._boost_used
        if at + ids.size > self.boost_ids.size:
            grown = np.zeros(max(2 * self.boost_ids.size, at + ids.size), dtype=np.int32)
            grown[:at] = self.boost_ids[:at]
            self.boost_ids = grown
        self.boost_ids[at:at + ids.size] = ids
        self._boost_used = at + ids.size
        self.boost_at[q] = (at, at + ids.size)


@njit(cache=True)
def _lower_bound(a, lo, hi, x):
    """The first index in ``[lo, hi)`` of the sorted ``a`` whose value is not below ``x``
    (``hi`` when none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _column(alphabet, ch):
    """``ch``'s column in a table over ``alphabet`` (sorted; its size: a character in no
    key)."""
    n = alphabet.size
    at = _lower_bound(alphabet, 0, n, ch)
    return at if at < n and alphabet[at] == ch else n


@njit(cache=True)
def _feed(q, chars, start, stop, alphabet, delta, sep, accept):
    """(next state, a pattern completed) reading ``chars[start:stop]`` from ``q``, as
    ``Automaton.feed`` does; state -1 when an entry is not known yet."""
    hit = False
    for i in range(start, stop):
        ch = chars[i]
        if not (ch == SEP_CODE and sep[q]):  # separator runs collapse
            r = delta[q, _column(alphabet, ch)]
            if r < 0:
                return -1, hit
            q = r
        a = accept[q]
        if a == UNKNOWN_ACCEPT:
            return -1, hit
        if a >= 0:
            hit = True
    return q, hit


@njit(cache=True)
def _boosted(ids, lo, hi, t):
    """Whether the sorted ``ids[lo:hi]`` hold ``t``."""
    at = _lower_bound(ids, lo, hi, t)
    return at < hi and ids[at] == t


@njit(cache=True)
def next_state_key(key, t, ptr, chars, plain, alphabet, a_delta, a_sep, a_accept,
                   p_delta, p_sep, p_accept, p_depth, boost_at, boost_ids):
    """The state key after reading token ``t`` in the step state of ``key`` (see
    :meth:`.ban_automaton.CompiledSteering.advance`); NOT_PACKABLE where the Python path
    must take the step (bytes left pending, no text, an avoided form completed), GAVE_UP
    where an entry is not known yet."""
    if t < 0 or t >= plain.size or not plain[t]:
        return NOT_PACKABLE
    done = key & 1
    trying = (key >> 1) & 1
    misses = (key >> 2) & ((1 << _MISS_BITS) - 1)
    rest = key >> (2 + _MISS_BITS)
    qp0 = rest & ((1 << _Q_BITS) - 1)
    rest >>= _Q_BITS
    qa = rest & ((1 << _Q_BITS) - 1)
    kind = rest >> _Q_BITS
    start, stop = ptr[t], ptr[t + 1]
    qa, hit = _feed(qa, chars, start, stop, alphabet, a_delta, a_sep, a_accept)
    if qa < 0:
        return GAVE_UP
    if hit:
        return NOT_PACKABLE  # a violation: the Python path records it
    qp = qp0
    if not done:
        lo = boost_at[qp0, 0]
        if lo < 0:
            return GAVE_UP
        qp, hit = _feed(qp0, chars, start, stop, alphabet, p_delta, p_sep, p_accept)
        if qp < 0:
            return GAVE_UP
        if hit:
            done = 1
        if _boosted(boost_ids, lo, boost_at[qp0, 1], t):
            trying = 1
    if qa >= 1 << _Q_BITS or qp >= 1 << _Q_BITS:
        return NOT_PACKABLE
    if trying and not done and qp != qp0 and p_depth[qp] <= p_depth[qp0]:
        trying = 0  # an abandoned attempt (see CompiledSteering.advance)
        misses += 1
        if misses >= MAX_PREFER_MISSES:
            done = 1
    return ((((kind << _Q_BITS | qa) << _Q_BITS | qp) << _MISS_BITS | misses) << 2
            | trying << 1 | done)
