"""Where a partly written avoided form began: the bookkeeping of rollback decoding.

:class:`RollbackTracker` follows one choice's output tokens through the same ban
automaton the logits processor runs (:class:`.ban_automaton.CompiledSteering`), and keeps
enough per token to answer two questions:

* :meth:`~RollbackTracker.live_start` — the index of the token where the avoided form
  the text is currently inside began (the token holding its first letter or digit), or
  the number of tokens when the text is inside no form. Tokens before it can no longer be
  rolled back: a stream may send them. Tokens from it on are the "partly matched tail".
* :meth:`~RollbackTracker.live_groups` — the avoided entities (indices of the engine
  form's ``avoid`` groups) whose forms extend that partial match: the starts a rollback
  bans at the position it returns to.
* :meth:`~RollbackTracker.take_judgeable` — forms the text began and then *left* (it went
  on with other characters: "Schwarzenegg|ar", "Disney |park"), once the word that left
  each is complete (a separator came after it): their start tokens, for the near-miss
  judge. Each form is judged on its own, so a rollback returns to the near miss's own
  start, not to an earlier form the text left cleanly.

:meth:`~RollbackTracker.truncate` rewinds to any earlier token count. Pure logic: the
server (``server/rollback.py``) drives it with the tokens the engine returns.

Positions are counted in the folded stream the automaton reads (separator runs collapsed,
a virtual separator at position 0 for "text start is a word start"): the automaton
state's depth is the length of the partial match, which therefore starts at
``stream length - depth``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from .ban_automaton import CompiledSteering, RowState
from .normalize import SEP


@dataclass(frozen=True)
class _Snapshot:
    avoid: int  # automaton state before the token
    pending: bytes  # incomplete UTF-8 bytes before the token
    stream: int  # folded stream length before the token
    last_sep: bool  # the stream ended with a separator before the token
    seps: int  # separators fed before the token


class RollbackTracker:
    def __init__(self, compiled: CompiledSteering):
        self.compiled = compiled
        self._row = RowState(avoid=compiled.avoid.start, prefer=0, prefer_done=True)
        self._stream = 1  # the virtual separator at text start
        self._last_sep = True
        self._starts: list[int] = []  # stream length before each token
        self._snaps: list[_Snapshot] = []
        self._seps = 0  # separators fed (a run collapsed across tokens counts once)
        # forms the text left, not judged yet: (start token, token that left it, separators
        # fed up to and including that token)
        self._left: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self._snaps)

    def push(self, token_ids: Iterable[int]) -> None:
        cs, row = self.compiled, self._row
        for t in token_ids:
            k = len(self._snaps)
            start = self.live_start() if self.inside_form() else None
            self._snaps.append(_Snapshot(row.avoid, row.pending, self._stream, self._last_sep,
                                         self._seps))
            self._starts.append(self._stream)
            folded = cs.feed_text(row, t)
            if folded:
                row.avoid, _ = cs.avoid.feed(row.avoid, folded)
                n = len(folded)
                seps = folded.count(SEP)
                if self._last_sep and folded[0] == SEP:
                    n -= 1  # separator runs collapse across tokens
                    seps -= 1
                self._stream += n
                self._seps += seps
                self._last_sep = folded[-1] == SEP
            if start is not None and (not self.inside_form() or self.live_start() > start):
                self._left.append((start, k, self._seps))

    def truncate(self, k: int) -> None:
        """Forget every token from index ``k`` on."""
        if k >= len(self._snaps):
            return
        snap = self._snaps[k]
        self._row.avoid, self._row.pending = snap.avoid, snap.pending
        self._stream, self._last_sep, self._seps = snap.stream, snap.last_sep, snap.seps
        del self._snaps[k:]
        del self._starts[k:]
        self._left = [c for c in self._left if c[1] < k]

    @property
    def state(self) -> int:
        return self._row.avoid

    def inside_form(self) -> bool:
        return self.compiled.inside_form(self._row)

    def at_word_boundary(self) -> bool:
        """The text so far ends with a separator (its last word is complete)."""
        return self._last_sep and not self._row.pending

    def live_start(self) -> int:
        """Index of the token where the current partial form began (see module doc)."""
        n = len(self._snaps)
        if not self.inside_form():
            return n
        first_letter = self._stream - self.compiled.avoid.depth[self._row.avoid] + 1
        k = bisect.bisect_right(self._starts, first_letter) - 1
        if k < 0:
            return 0
        # tokens that added nothing right before it (pending bytes of the same character,
        # special tokens) go with it
        return bisect.bisect_left(self._starts, self._starts[k])

    def unjudged_start(self) -> int:
        """The first token of the earliest left form not judged yet (else the token count):
        text from there on may still be rolled back by the near-miss judge."""
        return min((c[0] for c in self._left), default=len(self._snaps))

    def form_starts(self) -> list[int]:
        """Start tokens of the left forms not judged yet and of the live form (ascending):
        where text that is not ready for judging begins."""
        out = [c[0] for c in self._left]
        if self.inside_form():
            out.append(self.live_start())
        return sorted(set(out))

    def take_judgeable(self, final: bool = False) -> list[int]:
        """Start tokens (ascending) of the left forms whose word is complete — a separator
        came after the token that left the form, or the text ends with one — and, when
        ``final`` (the text is complete), of every left form and the live one. They are
        handed over once: the caller judges them."""
        ready = final or self.at_word_boundary()
        out = [c[0] for c in self._left if ready or self._seps > c[2]]
        if out:
            self._left = [c for c in self._left if not (ready or self._seps > c[2])]
        if final and self.inside_form():
            out.append(self.live_start())
        return sorted(set(out))

    def live_chars(self) -> int:
        """Characters of the current partial form (0 when the text is inside none)."""
        return self.compiled.avoid.depth[self._row.avoid] - 1 if self.inside_form() else 0

    def live_groups(self) -> frozenset[int]:
        return self.compiled.groups_at(self._row.avoid) if self.inside_form() else frozenset()


def signal_token_for(tokenizer, vocab_size: int) -> int:
    """The token the logits processor forces to ask for a rollback: a special token the
    chat template and generation never use (the highest-numbered added special token that
    is not EOS/BOS/PAD/UNK or one of the tokenizer's named special tokens), else the last
    id of the vocabulary. Steered rows never sample it on their own: the processor bans
    it at every step it does not force it."""
    named = {t for t in (getattr(tokenizer, "all_special_ids", None) or []) if t is not None}
    for attr in ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id"):
        t = getattr(tokenizer, attr, None)
        if t is not None:
            named.add(int(t))
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    spare = [int(t) for t, tok in added.items()
             if getattr(tok, "special", False) and int(t) not in named and int(t) < vocab_size]
    return max(spare) if spare else vocab_size - 1
