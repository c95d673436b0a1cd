"""Per-batch steering state and the per-step logits update — engine-independent.

:class:`SteeringBatch` is what the vLLM adapter (:mod:`.logits_processor`) drives; it
knows nothing about vLLM, so it can be tested (and run on any device) on its own.

* ``add(i, steering_args, out, stop_ids)`` — row ``i`` now holds a request;
  ``steering_args`` is the request's ``extra_args["steering"]`` (or None: the row is
  unsteered and costs nothing), ``out`` the request's *live* output-token list (the engine
  appends to it), ``stop_ids`` its EOS / stop token ids (never banned by the loop guard);
* ``remove(i)`` / ``move(a, b, swap)`` — batch reshuffles;
* ``apply(logits)`` — advance each steered row's state over its new output tokens (up to
  the first ``-1`` placeholder; a list that shrank is replayed from the start), then add
  the prefer biases and apply the ban masks of the steered rows — the string-level ban
  OR-ed with the loop guard's bans (:mod:`.loop_guard`) where the row has one — through
  ``greyelephant.kernels.apply_logit_controls`` (or the torch reference), on those rows
  only (a gather/scatter when not every row is steered).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from .ban_automaton import CompiledSteering, RowState, SteeringCache
from .limits import (
    ENGINE_ARGS_VERSION,
    MAX_ENGINE_FORM_CHARS,
    MAX_PREFER_BIAS,
    MAX_SURFACE_FORMS,
)
from .logit_ops import apply_logit_controls
from .loop_guard import NgramGuard, check_ngram_size
from .vocab_index import VocabIndex, pack_bool

logger = logging.getLogger("greyelephant.control")


class EngineArgs(NamedTuple):
    avoid: list[str]
    prefer: list[str]
    prefer_bias: float
    no_repeat_ngram: int = 0  # absent from the args: loop guard off


def parse_engine_args(obj: Any) -> EngineArgs:
    """Validate ``extra_args["steering"]``; return (avoid, prefer, prefer_bias,
    no_repeat_ngram). Raises ValueError (vLLM turns it into a 400 at the API boundary)."""
    if not isinstance(obj, dict):
        raise ValueError("extra_args.steering must be an object")
    unknown = set(obj) - {"v", "avoid", "prefer", "prefer_bias", "no_repeat_ngram"}
    if unknown:
        raise ValueError(f"extra_args.steering: unknown keys {sorted(unknown)}")
    if obj.get("v", ENGINE_ARGS_VERSION) != ENGINE_ARGS_VERSION:
        raise ValueError(f"extra_args.steering: unsupported version {obj.get('v')!r}")
    lists = []
    for key in ("avoid", "prefer"):
        items = obj.get(key) or []
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise ValueError(f"extra_args.steering.{key} must be a list of strings")
        if any(len(s) > MAX_ENGINE_FORM_CHARS for s in items):
            raise ValueError(f"extra_args.steering.{key}: a form is too long")
        lists.append(items)
    if len(lists[0]) + len(lists[1]) > MAX_SURFACE_FORMS:
        raise ValueError(f"extra_args.steering: more than {MAX_SURFACE_FORMS} forms")
    bias = obj.get("prefer_bias", 0.0)
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
        raise ValueError("extra_args.steering.prefer_bias must be a number")
    if not 0.0 <= bias <= MAX_PREFER_BIAS:
        raise ValueError(f"extra_args.steering.prefer_bias must be in [0, {MAX_PREFER_BIAS}]")
    n = check_ngram_size(obj.get("no_repeat_ngram", 0), "extra_args.steering.no_repeat_ngram")
    return EngineArgs(lists[0], lists[1], float(bias), n)


@dataclass
class _Row:
    compiled: CompiledSteering
    state: RowState
    out: list[int]  # the engine's live output token list for the request
    consumed: int = 0
    guard: NgramGuard | None = None  # the loop guard (no_repeat_ngram > 0)
    stop_ids: frozenset[int] = field(default_factory=frozenset)  # never banned by the guard


class SteeringBatch:
    def __init__(self, index: VocabIndex | Callable[[], VocabIndex],
                 device: torch.device | str = "cpu", cache: SteeringCache | None = None):
        self._index = index
        self.device = torch.device(device)
        self.rows: dict[int, _Row] = {}
        self.cache = cache or SteeringCache()
        self._warned = False
        self._special: np.ndarray | None = None  # bool [vocab]: tokens without text
        self._text_words: np.ndarray | None = None  # packed uint32: tokens with text
        self._n_text = 0
        # id(state mask) -> (mask, text tokens it leaves allowed); masks are cached arrays
        self._allowed: dict[int, tuple[np.ndarray, int]] = {}

    @property
    def index(self) -> VocabIndex:
        if not isinstance(self._index, VocabIndex):
            self._index = self._index()
        return self._index

    # -- batch bookkeeping ---------------------------------------------------------------
    @property
    def special(self) -> np.ndarray:
        """Tokens that contribute no text (special tokens, EOS among them): never banned
        by the loop guard."""
        if self._special is None:
            tb = self.index.token_bytes
            special = np.fromiter((b is None for b in tb), dtype=bool, count=len(tb))
            self._text_words = pack_bool(~special, self.index.n_words).view(np.uint32)
            self._n_text = int((~special).sum())
            self._special = special
        return self._special

    def add(self, i: int, steering_args: Any, out: list[int],
            stop_ids: Iterable[int] = ()) -> None:
        row = self._new_row(steering_args, out, stop_ids) if steering_args else None
        if row is None:
            self.rows.pop(i, None)
        else:
            self.rows[i] = row

    def remove(self, i: int) -> None:
        self.rows.pop(i, None)

    def move(self, a: int, b: int, swap: bool) -> None:
        ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
        if ra is not None:
            self.rows[b] = ra
        if swap and rb is not None:
            self.rows[a] = rb

    def _new_row(self, args: Any, out: list[int], stop_ids: Iterable[int] = ()) -> _Row | None:
        try:
            ea = parse_engine_args(args)
            compiled = self.cache.get(self.index, ea.avoid, ea.prefer, ea.prefer_bias)
        except Exception:
            logger.exception("steering: request steering args rejected; row left unsteered")
            return None
        guard = NgramGuard(ea.no_repeat_ngram) if ea.no_repeat_ngram else None
        if not compiled.has_avoid and not compiled.has_prefer and guard is None:
            return None
        return _Row(compiled, compiled.new_row(), out, guard=guard,
                    stop_ids=frozenset(int(t) for t in stop_ids or ()))

    # -- per step ------------------------------------------------------------------------
    def _catch_up(self, r: _Row) -> None:
        out = r.out
        n = len(out)
        if n < r.consumed:  # tokens were discarded: replay from scratch
            r.state = r.compiled.new_row()
            r.consumed = 0
            if r.guard is not None:
                r.guard.reset()
        cs, st, guard = r.compiled, r.state, r.guard
        while r.consumed < n:
            tid = out[r.consumed]
            if tid < 0:  # async-scheduling placeholder, filled in before sampling
                break
            cs.advance(st, tid)
            if guard is not None:
                guard.push(tid)
            r.consumed += 1
        if st.violated and not self._warned:
            self._warned = True
            logger.warning("steering: a banned form was emitted (a token was forced past the mask)")

    def controls(self, idx: list[int], vocab: int) -> dict[str, torch.Tensor]:
        """Keyword arguments of ``apply_logit_controls`` for the rows ``idx`` (in order)."""
        k = len(idx)
        n_words = (vocab + 31) // 32
        masks = np.zeros((k, n_words), dtype=np.int32)
        indptr = np.zeros(k + 1, dtype=np.int32)
        bias_ids: list[np.ndarray] = []
        bias_vals: list[np.ndarray] = []
        any_ban = False
        for j, i in enumerate(idx):
            r = self.rows[i]
            self._catch_up(r)
            cs, st = r.compiled, r.state
            words = None
            if cs.has_avoid:
                words = cs.banned_words(st)
                w = min(n_words, words.size)
                masks[j, :w] = words[:w]
                any_ban = True
            if r.guard is not None:
                loop = r.guard.banned()
                if loop and self._ban_loop(masks[j], words, loop, r.stop_ids, vocab):
                    any_ban = True
            ids, vals = cs.bias(st)
            indptr[j + 1] = indptr[j] + ids.size
            if ids.size:
                bias_ids.append(ids)
                bias_vals.append(vals)
        kw: dict[str, torch.Tensor] = {}
        if any_ban:
            kw["banned_bitmask"] = self._to_device(masks)
        if bias_ids:
            kw["bias_indptr"] = self._to_device(indptr)
            kw["bias_token_ids"] = self._to_device(np.concatenate(bias_ids))
            kw["bias_values"] = self._to_device(np.concatenate(bias_vals))
        return kw

    def _ban_loop(self, row_words: np.ndarray, state_words: np.ndarray | None,
                  tokens: set[int] | frozenset[int], stop_ids: frozenset[int],
                  vocab: int) -> bool:
        """OR the loop guard's tokens into one row's packed mask ``row_words`` (in place;
        ``state_words`` is the string-level ban's cached mask it was copied from, or None).
        Special and stop tokens are never banned; if no token with text would be left
        (only EOS / special tokens, i.e. a forced stop), the guard is dropped for this
        step. Returns whether a bit was added. A handful of tokens: plain Python."""
        special = self.special
        size = min(vocab, special.size)
        u = row_words.view(np.uint32)
        new: list[tuple[int, int]] = []
        for t in tokens:
            if t < size and not special[t] and t not in stop_ids:
                w, bit = t >> 5, 1 << (t & 31)
                if not int(u[w]) & bit:
                    new.append((w, bit))
        if not new:
            return False
        if self._allowed_text(state_words) <= len(new):
            return False  # no token with text would be left: no guard this step
        for w, bit in new:
            u[w] = int(u[w]) | bit
        return True

    def _allowed_text(self, state_words: np.ndarray | None) -> int:
        """Text tokens a cached state mask leaves allowed (memoised per mask array)."""
        if state_words is None:
            return self._n_text
        hit = self._allowed.get(id(state_words))
        if hit is not None and hit[0] is state_words:
            return hit[1]
        text = self._text_words
        m = state_words.view(np.uint32)[: text.size]
        n = self._n_text - int(np.bitwise_count(m & text[: m.size]).sum())
        if len(self._allowed) >= 1024:  # bounded: it holds references to the masks
            self._allowed.clear()
        self._allowed[id(state_words)] = (state_words, n)
        return n

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        b, v = logits.shape
        idx = sorted(i for i in self.rows if i < b)
        if not idx:
            return logits
        kw = self.controls(idx, v)
        if not kw:
            return logits
        if len(idx) == b:
            return apply_logit_controls(logits, **kw)
        rows_t = torch.as_tensor(idx, dtype=torch.long).to(logits.device)
        sub = logits.index_select(0, rows_t)
        apply_logit_controls(sub, **kw)
        logits.index_copy_(0, rows_t, sub)
        return logits

    def _to_device(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(arr)
        return t if self.device.type == "cpu" else t.to(self.device)
