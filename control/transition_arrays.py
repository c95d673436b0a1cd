"""A compiled spec's automata as arrays, so that a compiled loop can compute a row's
step-state transition instead of only looking up one already seen.

:class:`TokenTexts` holds a vocabulary's folded token texts as code points (what
:meth:`.ban_automaton.CompiledSteering.advance` feeds the automata when no bytes are
pending). :class:`SpecArrays` holds one compiled spec's avoid and prefer automata as
dense per-state transition tables over the spec's alphabet (the characters of its keys;
every other character leads to the root), their accept and separator flags, the prefer
states' depths and each prefer state's boosted token ids. The tables are filled whole
when a spec's arrays are made, by one compiled pass (:func:`_fill_tables`) over the
Python automaton's trie that follows :class:`.aho_corasick.Automaton`'s own definitions
of a step and an accept (the Python automaton stays the reference: a test checks every
entry against it); a prefer state's boosted ids are copied when a row first needs them
(:meth:`SpecArrays.teach`). :func:`next_state_key` moves a row over its new token with
these tables, as the Python ``advance`` does; it gives up (GAVE_UP) where the boosted ids
are not copied yet, and leaves the row to the Python path where the token leaves bytes
pending or has no text, or an avoided form completes.

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

UNKNOWN = -1  # a table entry not known (the compiled loop gives up; tables are whole)
UNKNOWN_ACCEPT = -2  # an accept entry not known (-1: no pattern ends there)
SEP_CODE = ord(SEP)
# a packed state key's fields (low to high): done 1 bit, trying 1, misses 4, prefer
# state 20, avoid state 20, kind 16
_Q_BITS, _KIND_BITS, _MISS_BITS = 20, 16, 4
NOT_PACKABLE = -1  # the state key of a step state the compiled loop cannot compute
GAVE_UP = -3  # next_state_key's code for a row stopped by what is not copied yet (boosts)


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
    """One automaton's tables (see the module doc), filled whole when made."""

    def __init__(self, ac: Automaton, columns: dict[str, int], alphabet: np.ndarray):
        """``columns``: each character of the spec's keys by its column; ``alphabet``:
        their code points, in column order (sorted)."""
        n, width = len(ac), len(columns) + 1
        self.ac, self.columns = ac, columns
        # each state's edge character (the root's: none, code 0, never read) and column
        codes = np.zeros(n, dtype=np.int32)
        codes[1:] = np.fromiter(map(ord, ac.edge[1:]), dtype=np.int32, count=n - 1)
        self.sep = (codes == SEP_CODE).astype(np.uint8)
        edge = np.searchsorted(alphabet, codes).astype(np.int32)  # (every edge's is there)
        self.depth = np.asarray(ac.depth, dtype=np.int32)
        self.delta, self.accept = _fill_tables(
            np.asarray(ac.parent, dtype=np.int32), edge, self.sep,
            np.asarray(ac.terminal, dtype=np.int32), self.depth, width,
            columns.get(SEP, -1))


@njit(cache=True)
def _fill_tables(parent, edge, sep, terminal, depth, width, sep_column):
    """(delta [n, width], accept [n]) of the trie given by each state's ``parent``, the
    ``edge`` column reaching it, its pattern (``terminal``, -1: none) and ``depth``:
    ``delta[q, c]`` is :meth:`.aho_corasick.Automaton.step`'s state after character
    column c from q (the last column: a character in no key, back to the root), and
    ``accept[q]`` its :meth:`~.aho_corasick.Automaton.accept`. As the automaton defines
    them: a child where there is one, else the failure state's entry (the root: itself);
    a state's failure state is its parent's failure state stepped over its edge, where a
    separator after a separator stays put (the only place :meth:`step` collapses a run;
    the walk to a failure state does not). Entries of a separator state's separator
    column are never read (the run collapses before)."""
    n = parent.size
    other = width - 1
    child = np.full((n, other), -1, dtype=np.int32)
    for v in range(1, n):
        child[parent[v], edge[v]] = v
    delta = np.full((n, width), ROOT, dtype=np.int32)
    accept = np.full(n, -1, dtype=np.int32)
    fail = np.zeros(n, dtype=np.int32)
    for v in np.argsort(depth, kind="mergesort"):  # a failure state is shallower
        if v == ROOT:
            for c in range(other):
                if child[v, c] >= 0:
                    delta[v, c] = child[v, c]
            accept[v] = terminal[v]
            continue
        p = parent[v]
        f = ROOT
        if p != ROOT:
            fp = fail[p]
            f = fp if edge[v] == sep_column and sep[fp] else delta[fp, edge[v]]
        fail[v] = f
        for c in range(other):
            delta[v, c] = child[v, c] if child[v, c] >= 0 else delta[f, c]
        accept[v] = terminal[v] if terminal[v] >= 0 else accept[f]
    return delta, accept


class SpecArrays:
    """One compiled spec's automata as arrays (see the module doc)."""

    def __init__(self, spec: CompiledSteering):
        self.spec = spec
        chars = sorted(set("".join(spec.avoid.keys)) | set("".join(spec.prefer.keys)))
        columns = {ch: a for a, ch in enumerate(chars)}
        self.alphabet = np.asarray([ord(ch) for ch in chars], dtype=np.int32)
        self.avoid = _AutomatonArrays(spec.avoid, columns, self.alphabet)
        self.prefer = _AutomatonArrays(spec.prefer, columns, self.alphabet)
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
        """Copy what :func:`next_state_key` needs to move a row in step state ``state``
        over ``token`` and does not hold yet: its prefer state's boosted ids (the tables
        are whole; nothing when the token leaves bytes pending or has no text: the
        compiled loop leaves those to the Python path)."""
        _, _, pending, prefer, done, _, _ = state
        index = self.spec.index
        if pending or not 0 <= token < len(index.texts) or index.token_bytes[token] is None:
            return
        if not done and self.boost_at[prefer, 0] < 0:
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
