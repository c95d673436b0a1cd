"""Aho–Corasick automaton over folded text, with word-start patterns.

Every pattern is a folded surface form (see :mod:`.normalize`) and is stored with the
separator :data:`SEP` in front: a match can only begin at a word start. The stream the
automaton reads is the folded stream, in which separator runs collapse to one; this is
built into :meth:`Automaton.step`: a separator read in a state whose label already ends
with a separator leaves the state unchanged.

"Text start counts as a word boundary": begin in :attr:`Automaton.start` (the node for
the lone separator), not in the root.

Failure links and transitions are computed lazily and memoised, so building the trie is
the whole construction cost.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from .normalize import SEP

ROOT = 0


class Automaton:
    def __init__(self, patterns: Iterable[str]):
        pats = sorted({p for p in patterns if p})
        self.patterns: list[str] = pats
        self.keys: list[str] = [SEP + p for p in pats]  # still sorted
        self.children: list[dict[str, int]] = [{}]
        self.parent: list[int] = [ROOT]
        self.edge: list[str] = [""]
        self.depth: list[int] = [0]
        self.terminal: list[int] = [-1]
        children, parent, edge, depth, terminal = (
            self.children,
            self.parent,
            self.edge,
            self.depth,
            self.terminal,
        )
        for i, key in enumerate(self.keys):
            q = ROOT
            for ch in key:
                nxt = children[q].get(ch)
                if nxt is None:
                    nxt = len(children)
                    children[q][ch] = nxt
                    children.append({})
                    parent.append(q)
                    edge.append(ch)
                    depth.append(depth[q] + 1)
                    terminal.append(-1)
                q = nxt
            if terminal[q] < 0:
                terminal[q] = i
        n = len(children)
        self._fail: list[int] = [-1] * n
        self._delta: list[dict[str, int] | None] = [None] * n
        self._accept: list[int] = [-2] * n  # pattern index matched at q (or via fail), -1 none
        self.start: int = children[ROOT].get(SEP, ROOT)

    # -- structure -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.children)

    def label(self, q: int) -> str:
        out = []
        while q != ROOT:
            out.append(self.edge[q])
            q = self.parent[q]
        return "".join(reversed(out))

    def ends_sep(self, q: int) -> bool:
        return self.edge[q] == SEP

    def fail(self, q: int) -> int:
        f = self._fail[q]
        if f >= 0:
            return f
        path = []  # ancestors whose failure links are still unknown (iterative: no recursion)
        while q != ROOT and self._fail[q] < 0:
            path.append(q)
            q = self.parent[q]
        for node in reversed(path):
            p = self.parent[node]
            self._fail[node] = ROOT if p == ROOT else self.step(self._fail[p], self.edge[node])
        return self._fail[path[0]]

    def chain(self, q: int) -> list[int]:
        """q and its failure ancestors, root excluded (all suffixes of q's label that are
        pattern prefixes)."""
        out = []
        while q != ROOT:
            out.append(q)
            q = self.fail(q)
        return out

    def key_range(self, q: int) -> tuple[int, int]:
        """Indices [lo, hi) of the keys that extend q's label (keys are sorted)."""
        lab = self.label(q)
        lo = bisect.bisect_left(self.keys, lab)
        hi = bisect.bisect_left(self.keys, lab + "\U0010ffff", lo)
        return lo, hi

    # -- running ---------------------------------------------------------------------
    def step(self, q: int, ch: str) -> int:
        if ch == SEP and self.edge[q] == SEP:
            return q  # separator runs collapse
        memo = self._delta[q]
        if memo is not None:
            r = memo.get(ch)
            if r is not None:
                return r
        visited = []
        p = q
        while True:
            m = self._delta[p]
            r = m.get(ch) if m is not None else None
            if r is not None:
                break
            visited.append(p)
            r = self.children[p].get(ch)
            if r is not None:
                break
            if p == ROOT:
                r = ROOT
                break
            p = self.fail(p)
        for v in visited:  # every state on the way has the same transition on ch
            m = self._delta[v]
            if m is None:
                m = self._delta[v] = {}
            m[ch] = r
        return r

    def accept(self, q: int) -> int:
        """Index of a pattern that ends at q (q's own, else the nearest on its failure
        chain), or -1."""
        a = self._accept[q]
        if a != -2:
            return a
        path = []
        while a == -2:
            path.append(q)
            a = self.terminal[q]
            if a >= 0 or q == ROOT:
                break
            q = self.fail(q)
            a = self._accept[q]
        for node in path:
            self._accept[node] = a
        return a

    def outputs(self, q: int) -> list[int]:
        """Indices of all patterns that end at q."""
        out = []
        while q != ROOT:
            if self.terminal[q] >= 0:
                out.append(self.terminal[q])
            q = self.fail(q)
        return out

    def feed(self, q: int, folded: str) -> tuple[int, bool]:
        """Advance over already-folded text; also say whether any pattern completed.
        (:meth:`step` and :meth:`accept`, with their memoised cases inline.)"""
        hit = False
        delta, edge, acc = self._delta, self.edge, self._accept
        for ch in folded:
            if not (ch == SEP and edge[q] == SEP):  # separator runs collapse
                m = delta[q]
                r = m.get(ch) if m is not None else None
                q = r if r is not None else self.step(q, ch)
            a = acc[q]
            if a == -2:
                a = self.accept(q)
            if a >= 0:
                hit = True
        return q, hit


def minimal_patterns(patterns: Iterable[str]) -> list[str]:
    """Drop every pattern that has another pattern as a prefix *at a word start* — a
    prefix ban covers it ("nike" covers "nikes" and "nike s")."""
    out: list[str] = []
    for p in sorted(set(patterns)):
        if out and p.startswith(out[-1]):
            continue
        out.append(p)
    return out
