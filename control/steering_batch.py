"""Per-batch steering state and the per-step logits update — engine-independent.

:class:`SteeringBatch` is what the vLLM adapter (:mod:`.logits_processor`) drives; it
knows nothing about vLLM, so it can be tested (and run on any device) on its own.

* ``add(i, steering_args, out, request)`` — row ``i`` now holds a request;
  ``steering_args`` is the request's ``extra_args["steering"]`` (:mod:`.engine_args`; None:
  the row is unsteered and costs nothing), ``out`` the request's *live* output-token list
  (the engine appends to it), ``request`` what the row needs of the request's sampling
  parameters (:class:`RequestInfo`: stop tokens, ``max_tokens``, temperature, penalties,
  the prompt tail a continuation resumes from);
* ``remove(i)`` / ``move(a, b, swap)`` — batch reshuffles;
* ``apply(logits)`` — per steered row: advance the state over the new output tokens (up
  to the first ``-1`` placeholder; a list that shrank is replayed from the start), pick
  the row's ban mask (the start ban at the first step of a rollback continuation, the
  last-step mask at the last step, else the completion mask), OR in the row's extra bans
  (stop tokens while the text ends with a whole form or before ``min_tokens``, the
  rollback signal token, the loop guard), add the prefer biases and the resumed tokens'
  penalties, and apply them all through ``greyelephant.kernels.apply_logit_controls`` on
  the steered rows only (a gather/scatter when not every row is steered).

Rollback rows also watch for *heading into* an avoided form: inside a form, when the
model's own choice (greedy: the argmax; sampling: more than the signal's probability mass)
is banned by the string-level mask, the row is not masked but forced to emit its rollback
signal token — a stop token of the request — and the server rolls the choice back to
where the form began (``server/rollback.py``). A greedy row whose own choice would write a
whole form in one token gets that position's start ban at once (:meth:`SteeringBatch.
_check`): the outcome of a rollback without the round trip.
"""

from __future__ import annotations

import bisect
import itertools
import math
import logging
import marshal
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from greyelephant.kernels import (
    apply_flat_controls_numpy,
    apply_logit_controls,
    apply_row_controls_numpy,
)

from .ban_automaton import CompiledSteering, RowState, SteeringCache
from .engine_args import EngineSteering
from .flat_index import FlatIndex, padded_ids
from .limits import MAX_PREFER_BIAS, ROLLBACK_PREFER_FACTOR
from .loop_guard import NgramGuard
from .mask_table import DEFAULT_BUDGET_BYTES, MaskTable
from .step_upload import StepUpload
from .vocab_index import VocabIndex, pack_bool, unpack_words

try:  # numba (a dependency of vLLM) compiles the host's per-step loops over the rows
    from . import choice_probe
    from .ngram_table import NgramTable
    from .plan_pool import bias_lists
    from .step_states import FLAG_BITS, GREEDY, NEVER, WATCH, Lanes, row_state, step_state
except ImportError:  # pragma: no cover - every install has numba; a bare GPU box may not
    choice_probe = None  # type: ignore[assignment]
    NgramTable = Lanes = bias_lists = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from .plan_pool import PooledStep

logger = logging.getLogger("greyelephant.control")

GREEDY_EPS = 1e-5  # vLLM's: a temperature below it samples greedily
# On the CPU, a mask banning at most vocab // SPARSE_IDS_SHARE tokens is sent as its list
# of token ids (see SteeringBatch.__init__)
SPARSE_IDS_SHARE = 32
# Plain-step masks memoised per batch (SteeringBatch.controls); each entry holds a mask.
# Also the bound on the row kinds remembered
MAX_STEP_MEMO = 4096
# Admissions memoised per batch (SteeringBatch._admit): at most this many specs, each
# keyed by its arguments' serialisation of at most MAX_ADMIT_KEY_BYTES
MAX_ADMIT_MEMO = 256
MAX_ADMIT_KEY_BYTES = 1 << 16
# The fewest rows a step has for the lanes (SteeringBatch(lanes=True)) to run; below it,
# their fixed cost outweighs what they save (docs/steering.md, "Lanes")
LANE_MIN_ROWS = 64
TRACKED_ROWS = 256  # batch rows the per-batch-row arrays hold at first (they grow)
# The rollback check looks among a row's first tokens for one that proves the row's argmax
# lies outside a token set, first among the first 256, then the first 2048 (see
# argmax_if_in)
CHOICE_PROBES = (256, 2048)
# The wider probes read this many undecided rows one view at a time (more: one copy)
FEW_UNDECIDED = 8
# The loop guards' table packs token ids in 21 bits; it serves vocabularies up to half of
# that range (a padded logits width stays below it), others keep per-row guards
NGRAM_TABLE_VOCAB = 1 << 20
# Token sets up to this size are gathered for all rows in one take, each padded to this
# width with repeats of its first id (see argmax_if_in)
CHOICE_PAD = 64


@dataclass(frozen=True)
class RequestInfo:
    """What a steered row needs of its request's sampling parameters."""

    stop_ids: frozenset[int] = frozenset()  # EOS + stop token ids: end the text
    max_tokens: int | None = None
    temperature: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    prompt: Sequence[int] = ()


@dataclass(slots=True, eq=False)
class _Row:
    compiled: CompiledSteering
    args: EngineSteering
    info: RequestInfo
    out: list[int]  # the engine's live output token list for the request
    resumed: tuple[int, ...] = ()  # accepted output from before a rollback (prompt tail)
    state: RowState | None = None
    consumed: int = 0
    guard: NgramGuard | _TableGuard | None = None
    # presence/frequency penalties of the resumed tokens (vLLM applies its own only to
    # the tokens generated by this engine request)
    penalty: tuple[np.ndarray, np.ndarray] | None = None
    signalled: bool = False
    stop_ids: frozenset[int] = field(default_factory=frozenset)
    stop_tuple: tuple[int, ...] = ()  # stop_ids, sorted (a mask key part)
    signal_ban: tuple[int, ...] = ()  # (signal,) when the row has one
    kind: int = 0  # names (spec, rollback, signal, stop tokens): the step memo's key part
    # derived once from args and info, for the per-step loop (see SteeringBatch.controls):
    # a step is plain while plain_from <= consumed < plain_below; below min_stop output
    # tokens the stop tokens are banned
    plain_from: int = field(init=False)
    plain_below: float = field(init=False)
    min_stop: int = field(init=False)
    greedy: bool = field(init=False)
    rollback: bool = field(init=False)  # args.rollback
    lane: int = -1  # its lane (see _LaneRow); -1: none
    on_lane: bool = False

    def __post_init__(self) -> None:
        self.plain_from = 1 if self.args.start_ban else 0
        self.plain_below = (math.inf if self.info.max_tokens is None
                            else self.info.max_tokens - 1)
        self.min_stop = self.args.min_tokens if self.stop_ids else 0
        self.greedy = self.info.temperature < GREEDY_EPS
        self.rollback = self.args.rollback

    def reset(self) -> None:
        cs = self.compiled
        self.state = cs.new_row()
        self.consumed = 0
        for t in self.resumed:
            cs.advance(self.state, t)
        if self.guard is not None:
            self.guard.reset()
            self.guard.extend(self.resumed)


class _OffLane:
    """An attribute of :class:`_OnLaneRow` that the lane makes stale while the row is on
    it: reading or setting it takes the row off its lane first, then reads or sets the
    row's own slot (``member``, :class:`_Row`'s slot descriptor)."""

    __slots__ = ("member",)

    def __init__(self, member: Any):
        self.member = member

    def __get__(self, row: _LaneRow | None, owner: type | None = None) -> Any:
        if row is None:
            return self
        row.leave_lane()
        return self.member.__get__(row, owner)

    def __set__(self, row: _LaneRow, value: Any) -> None:
        row.leave_lane()
        self.member.__set__(row, value)


class _LaneRow(_Row):
    """A row with a lane in the batch's :class:`.step_states.Lanes` (see
    :meth:`SteeringBatch.controls`). Off its lane it is a plain row. On it
    (:meth:`enter_lane`), its class is :class:`_OnLaneRow`: the lane's arrays hold the
    row's state and consumed count, and reading or setting ``.state`` or ``.consumed``
    takes the row off its lane first (the lane's state comes back as a fresh
    :class:`RowState`). The lane is freed with the row."""

    __slots__ = ("lanes",)

    def __init__(self, *args: Any, lanes: Lanes, lane_args: dict[str, Any], **kwargs: Any):
        self.on_lane = False
        super().__init__(*args, **kwargs)
        self.lanes = lanes
        self.lane = lanes.open(
            plain_from=self.plain_from,
            plain_below=NEVER if self.plain_below == math.inf else int(self.plain_below),
            min_stop=self.min_stop, watch=self.rollback, greedy=self.greedy, **lane_args)

    def enter_lane(self) -> None:
        """The row is on its lane now (the caller put its state there)."""
        self.on_lane = True
        self.__class__ = _OnLaneRow

    def leave_lane(self) -> None:
        """Take the row off the fast path: its state and count come back from the lane."""
        self.on_lane = False
        self.__class__ = _LaneRow
        got = self.lanes.take(self.lane)
        if got is not None:
            state, self.consumed = got
            self.state = row_state(state, len(self.resumed) + self.consumed)

    def __del__(self) -> None:
        if self.lane >= 0:
            try:
                self.lanes.close(self.lane)
            except Exception:  # noqa: BLE001 - (interpreter shutdown: nothing to free)
                pass


class _OnLaneRow(_LaneRow):
    """A :class:`_LaneRow` on its lane (the same slots: the row switches class)."""

    __slots__ = ()

    state = _OffLane(_Row.state)
    consumed = _OffLane(_Row.consumed)


class FedRows(NamedTuple):
    """What an adapter already knows of a step's rows, per row of ``sorted(batch.rows)``
    (runner V2's adapter: from the step's fed tokens): each row's lane (its core row's
    ``lane``; -1: none), its output's length and newest token (-1: none), all after the
    step's token was appended. :meth:`SteeringBatch.apply` then reads no row object to
    advance the lanes."""

    lanes: np.ndarray  # int32
    lengths: np.ndarray  # int64
    last: np.ndarray  # int64


def _fed_rows(lanes: np.ndarray, outs: list[list[int]]) -> FedRows:
    """:class:`FedRows` of rows with these lanes and output lists (C-level loops: no
    Python frame per row)."""
    k = len(outs)
    lengths = np.fromiter(map(len, outs), dtype=np.int64, count=k)
    try:
        last = np.fromiter(map(_LAST, outs), dtype=np.int64, count=k)
    except IndexError:  # an empty output (a row's first step)
        last = np.fromiter([o[-1] if o else -1 for o in outs], dtype=np.int64, count=k)
    return FedRows(lanes, lengths, last)


class _RowsAt:
    """``rows[idx[j]]`` at ``[j]``: a step's row objects, each looked up when used."""

    __slots__ = ("_rows", "_idx")

    def __init__(self, rows: dict[int, _Row], idx: list[int]):
        self._rows, self._idx = rows, idx

    def __getitem__(self, j: int) -> _Row:
        return self._rows[self._idx[j]]


class SteeringBatch:
    def __init__(self, index: VocabIndex | Callable[[], VocabIndex],
                 device: torch.device | str = "cpu", cache: SteeringCache | None = None,
                 *, table: bool = True, table_budget_bytes: int = DEFAULT_BUDGET_BYTES,
                 compiled: bool | None = None, lanes: bool | None = None,
                 lane_min_rows: int = LANE_MIN_ROWS):
        """``table``: keep the ban masks in a device-resident :class:`.mask_table.MaskTable`
        (a step sends one slot index per row); False copies each steered row's whole mask
        every step (the older path, kept for comparison and as a check). With the table on
        the CPU, a mask that bans few tokens is sent as the list of its token ids instead
        (computed once per mask), and only masks that ban many go through the table: the
        CPU path then touches the banned logits alone, never a row's whole mask.

        ``compiled``: run two per-step loops over the rows as numba-compiled code, one call
        each for the whole batch: the loop guards (n-grams up to 4 tokens) live in one
        :class:`.ngram_table.NgramTable`, and the rollback check reads the model's choice
        on CPU logits with :func:`.choice_probe.argmax_if_in_compiled`. False keeps one
        :class:`.loop_guard.NgramGuard` per row (as do n-grams of more than 4 tokens) and
        the numpy :func:`argmax_if_in`. Either way the logits are the same, bit for bit.
        Default: compiled, when numba is importable.

        ``lanes`` (needs ``compiled``; default: on with the compiled loops, see
        docs/steering.md, "Lanes"): rows with an avoid spec whose
        loop guard (if any) lives in the n-gram table and that have no resumed-token
        penalties keep their state in :class:`.step_states.Lanes`, and their plain steps
        (see :meth:`controls`) are advanced for the whole batch in one compiled call, with
        no Python touching the row object; False runs every row through the per-row path
        (the reference: the logits are the same, bit for bit). ``lane_min_rows``: a step
        of fewer rows runs the per-row path (the lanes' fixed cost outweighs what they
        save there; a row on its lane leaves it when the per-row path reads it)."""
        self._index = index
        self.device = torch.device(device)
        if compiled and NgramTable is None:
            raise RuntimeError("compiled steering loops need numba")
        self.compiled = NgramTable is not None if compiled is None else compiled
        self._guards = NgramTable() if self.compiled else None
        if self.compiled:
            NgramTable.warm_up()
            choice_probe.warm_up()
        if lanes and not self.compiled:
            raise RuntimeError("steering lanes need the compiled loops (numba)")
        if lanes is None:
            lanes = self.compiled
        self._lanes = Lanes() if lanes else None
        self.lane_min_rows = lane_min_rows
        self._lane_vocab = -1  # the vocabulary the lanes' plans were made for
        if self._lanes is not None:
            Lanes.warm_up()
        self.use_table = table
        self.table_budget_bytes = table_budget_bytes
        self._table: MaskTable | None = None
        self.rows: dict[int, _Row] = {}
        # per batch row, kept by add/remove/move while ``rows`` is this dict: its row's
        # lane (-1: none) and output list, so that a step gathers the lanes' inputs
        # without reading a row object (see _tracked_fed)
        self._tracked = self.rows
        self._row_lanes = np.full(TRACKED_ROWS, -1, dtype=np.int32)
        self._row_outs: list[list[int] | None] = [None] * TRACKED_ROWS
        self.cache = cache or SteeringCache()
        self._warned = False
        self._any_failed = False  # a _FailedRow was ever added: rows may hold one (apply)
        self._n_text = 0
        self._text_words: np.ndarray | None = None  # packed uint32: tokens with text
        # id(state mask) -> (mask, text tokens it leaves allowed); masks are cached arrays
        self._allowed: dict[int, tuple[np.ndarray, int]] = {}
        # (mask key, state bans) -> (cached mask, the mask with those bans OR-ed in)
        self._with_state_bans: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        # CPU with the table: masks banning at most vocab // SPARSE_IDS_SHARE tokens are
        # sent as token id lists; id(mask) -> (mask, its banned ids or None when dense)
        self.sparse_ids = table and self.device.type == "cpu"
        self._upload = StepUpload(self.device)  # the plan's arrays: one copy a step
        self._ids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = {}
        # a plain step's mask per (row kind, avoid state, pending bytes): (key, mask, its
        # banned ids or None, inside a form); rows of one kind share it (see controls)
        self._steps: dict[tuple, tuple] = {}
        # (compiled spec's uid, prefer state) -> its bias lists (CompiledSteering.bias)
        self._biases: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._kinds: dict[tuple, int] = {}  # row kind -> its id (ids never reused)
        # exact serialisation of a row's raw arguments -> (validated, compiled or None)
        self._admitted: dict[bytes, tuple[EngineSteering, CompiledSteering | None]] = {}
        self._kind_ids = itertools.count(1)
        self._flat_index = FlatIndex()  # the rollback check's padded sets per row (CPU)
        # id(whole-form token ids) -> (the array, its ids as a set): the check's first test
        self._ahead_sets: dict[int, tuple[np.ndarray, frozenset[int]]] = {}
        # CPU float32: the rows without penalties or a table mask take the flat path
        # (_StepPlan.apply_rows); False sends every row through apply_row_controls_numpy
        self.flat_controls = True
        # a GPU's path (no id lists): the plan's arrays are packed and sent before the
        # rollback check, which is the step's first wait for the device, so that under
        # runner V1 that work overlaps the forward pass (see apply); False: after it
        self.early_upload = True
        self.steps = 0  # steps that steered at least one row (for /metrics, tests, logs)
        self.row_steps = 0  # steered rows summed over those steps
        self.signals = 0  # rollback signals sent (for tests and logs)
        self.anticipated = 0  # start bans applied without a rollback
        self.fast_rows = 0  # row steps taken on the lanes' fast path (for tests and logs)
        self.pooled_rows = 0  # of those, planned from the plan pool (no Python per row)

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
        if self._text_words is None:
            textless = self.index.textless
            self._text_words = pack_bool(~textless, self.index.n_words).view(np.uint32)
            self._n_text = int((~textless).sum())
        return self.index.textless

    def compile(self, args: EngineSteering) -> CompiledSteering:
        return self.cache.get(self.index, args.avoid, args.prefer, args.prefer_bias)

    def add(self, i: int, steering_args: Any, out: list[int],
            request: RequestInfo | None = None) -> None:
        """Row ``i`` holds a request now. Arguments are validated at admission
        (:meth:`.logits_processor.SteeringLogitsProcessor.validate_params`). If the row
        still cannot be set up here (its spec does not compile), it is never left
        unsteered: it fails closed (:meth:`apply` ends it at once with its signal token, or
        with a stop token when it has none, and the server fails the request)."""
        if not steering_args:
            self.rows.pop(i, None)
            return
        try:
            row = self._new_row(steering_args, out, request or RequestInfo())
        except Exception:
            logger.exception("steering: a row's spec could not be set up; the request fails")
            row = _FailedRow(_signal_of(steering_args), request or RequestInfo())
            self._any_failed = True
        if row is None:
            self.rows.pop(i, None)
        else:
            self.rows[i] = row
        self._track(i, row)

    def remove(self, i: int) -> None:
        self.rows.pop(i, None)
        self._track(i, None)

    def move(self, a: int, b: int, swap: bool) -> None:
        ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
        if ra is not None:
            self.rows[b] = ra
        if swap and rb is not None:
            self.rows[a] = rb
        self._track(b, ra)
        self._track(a, rb if swap else None)

    def _track(self, i: int, row: Any) -> None:
        """Batch row ``i`` holds ``row`` now (None: no row): its lane and output list in
        the per-batch-row arrays (see :meth:`_tracked_fed`)."""
        if i >= len(self._row_outs):
            n = max(i + 1, 2 * len(self._row_outs))
            lanes = np.full(n, -1, dtype=np.int32)
            lanes[:self._row_lanes.size] = self._row_lanes
            self._row_lanes = lanes
            self._row_outs += [None] * (n - len(self._row_outs))
        self._row_lanes[i] = getattr(row, "lane", -1)
        self._row_outs[i] = getattr(row, "out", None)

    def _tracked_fed(self, idx: list[int]) -> FedRows | None:
        """:class:`FedRows` of the rows ``idx`` (ascending) from the per-batch-row arrays
        that add/remove/move keep, reading no row object (the V1 adapter feeds none);
        None once ``rows`` is not the dict they track (runner V2's adapter sets its own
        every step, and feeds its rows itself)."""
        if self.rows is not self._tracked:
            return None
        k = len(idx)
        if idx[-1] == k - 1:  # (ascending and distinct: the rows 0..k-1, as slices)
            at, outs = self._row_lanes[:k], self._row_outs[:k]
        else:
            at = self._row_lanes[np.asarray(idx, dtype=np.int64)]
            outs = list(map(self._row_outs.__getitem__, idx))
        return _fed_rows(at, outs)

    def _admit(self, raw: Any) -> tuple[EngineSteering, CompiledSteering | None]:
        """A row's raw ``extra_args["steering"]`` validated, and compiled when active
        (None: inactive). Memoised per batch by the arguments' exact serialisation
        (:func:`_exact_key`), so that the requests of one spec, admitted inside engine
        steps, skip the validation and the compile cache's key after the first; arguments
        that differ in any way, a value's type included, are validated on their own.
        Raises ValueError on invalid arguments (never memoised)."""
        key = _exact_key(raw)
        hit = self._admitted.get(key) if key is not None else None
        if hit is not None:
            return hit
        args = EngineSteering.parse(raw)
        admitted = (args, self.compile(args) if args.active else None)
        if key is not None:
            if len(self._admitted) >= MAX_ADMIT_MEMO:  # bounded: it holds compiled specs
                self._admitted.clear()
            self._admitted[key] = admitted
        return admitted

    def _new_row(self, raw: Any, out: list[int], info: RequestInfo) -> _Row | None:
        args, compiled = self._admit(raw)
        if compiled is None:
            return None
        resumed = tuple(int(t) for t in info.prompt[len(info.prompt) - args.resume:]) \
            if args.resume else ()
        stop_ids = set(info.stop_ids)
        if args.signal is not None:
            stop_ids.discard(args.signal)
        guard = self._new_guard(args.no_repeat_ngram)
        penalty = None
        if resumed and (info.presence_penalty or info.frequency_penalty):
            ids, counts = np.unique(np.asarray(resumed, dtype=np.int64), return_counts=True)
            keep = ids < self.index.vocab_size
            penalty = (ids[keep].astype(np.int32), counts[keep].astype(np.int32))
        fields = dict(resumed=resumed, guard=guard, penalty=penalty,
                      stop_ids=frozenset(stop_ids), stop_tuple=tuple(sorted(stop_ids)),
                      signal_ban=(args.signal,) if args.signal is not None else ())
        if (self._lanes is not None and compiled.has_avoid and penalty is None
                and (guard is None or guard.__class__ is _TableGuard)):
            row = _LaneRow(compiled, args, info, out, lanes=self._lanes,
                           lane_args={"guard": -1 if guard is None else guard.handle},
                           **fields)
        else:
            row = _Row(compiled, args, info, out, **fields)
        kind = (compiled.uid, args.rollback, row.signal_ban, row.stop_tuple)
        row.kind = self._kinds.get(kind, 0)
        if not row.kind:
            if len(self._kinds) >= MAX_STEP_MEMO:  # bounded: a new spec is a new kind
                self._kinds.clear()
            row.kind = self._kinds[kind] = next(self._kind_ids)
        row.reset()
        return row

    def _new_guard(self, n: int) -> NgramGuard | _TableGuard | None:
        """A row's loop guard for n-grams of ``n`` tokens (0: none)."""
        if not n:
            return None
        if (self._guards is not None and self._guards.fits(n)
                and self.index.vocab_size <= NGRAM_TABLE_VOCAB):
            return _TableGuard(self._guards, n)
        return NgramGuard(n)

    # -- per step ------------------------------------------------------------------------
    def _mask_table(self, vocab: int) -> MaskTable | None:
        if not self.use_table:
            return None
        n_words = (vocab + 31) // 32
        if self._table is None or self._table.n_words != n_words:
            self._table = MaskTable(n_words, self.device, self.table_budget_bytes)
        return self._table

    def _catch_up(self, r: _Row) -> None:
        out = r.out
        n = len(out)
        if n < r.consumed:  # tokens were discarded: replay from scratch
            r.reset()
        k, st = r.consumed, r.state
        advance = r.compiled.advance
        start = k
        while k < n:
            tid = out[k]
            if tid < 0:  # async-scheduling placeholder, filled in before sampling
                break
            advance(st, tid)
            k += 1
        if r.guard is not None and k > start:
            r.guard.extend(out[start:k])
        r.consumed = k
        if st.violated:
            self._warn_violation()

    def _warn_violation(self) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("steering: a banned form was emitted (a token was forced past the mask)")

    def _string_mask(self, r: _Row) -> tuple[tuple, np.ndarray]:
        """(key, mask): the row's string-level mask for this step (a cached array: do not
        modify) and a key naming it (for the device mask table). Rows without rollback
        (off, or spent) get the stricter prefix ban on top."""
        cs, st, args = r.compiled, r.state, r.args
        if args.start_ban and r.consumed == 0:
            words, kind = cs.start_words(st, args.start_ban), ("start", args.start_ban)
        elif r.info.max_tokens is not None and r.consumed + 1 >= r.info.max_tokens:
            words, kind = cs.final_words(st), ("final",)
        elif not args.rollback:
            return (cs.uid, "prefix", st.avoid, st.pending), cs.prefix_words(st)
        else:
            return (cs.uid, "step", st.avoid, st.pending), cs.banned_words(st)
        if not args.rollback:
            words, kind = cs.with_prefix(st, words, kind[0]), (*kind, "prefix")
        return (cs.uid, *kind, st.avoid, st.pending), words

    def _state_bans(self, r: _Row) -> tuple[int, ...]:
        """Tokens the row must not take in its automaton state, whatever else happens: its
        stop tokens while the text ends with a whole form, and its signal (sent only by
        :meth:`apply`). They depend on the state and the request only, so they ride in
        the row's mask (see :meth:`_row_mask`)."""
        bans = r.signal_ban
        if r.stop_ids and r.compiled.ends_form(r.state.avoid):
            bans = bans + r.stop_tuple
        return bans

    def _row_mask(self, r: _Row) -> tuple[tuple, np.ndarray]:
        """(key, mask) of the row's string-level mask with its state bans OR-ed in."""
        key, words = self._string_mask(r)
        bans = self._state_bans(r)
        if not bans:
            return key, words
        key = (*key, bans)
        hit = self._with_state_bans.get(key)
        if hit is None or hit[0] is not words:
            out = words.copy()
            _or_tokens(out, bans, out.size * 32)
            if len(self._with_state_bans) >= 4096:
                self._with_state_bans.clear()
            hit = self._with_state_bans[key] = (words, out)
        return key, hit[1]

    def controls(self, idx: list[int], vocab: int, fed: FedRows | None = None
                 ) -> _StepPlan:
        """This step's controls of the rows ``idx`` (in order): masks, biases, penalties,
        and the rollback rows to check against the logits (see :meth:`apply`).

        Per row, the common step is kept short: a plain step's mask (not a continuation's
        first step, not the last one) depends only on the row's kind — spec, rollback,
        signal, stop tokens — and its automaton states, so rows share one memo of it, with
        its banned-id list, whether the state is inside a form, the tokens to anticipate
        and the prefer bias; a mask sent as its id list goes straight into the plan.

        With lanes (see ``__init__``), rows on a plain step whose (step state, token)
        transition and plan are known are advanced for the whole batch by one compiled
        call first (:meth:`.step_states.Lanes.advance`), and their plan entries come from
        their new step state's plan, with no Python touching the row; the rest take the
        per-row path, which then puts them (back) on their lane, teaching the lanes the
        transition and the plan it computed."""
        table = self._mask_table(vocab)
        k = len(idx)
        plan = _StepPlan(k, vocab, table, ban_lists=self.sparse_ids)
        special = self.special
        rows, steps, biases = self.rows, self._steps, self._biases
        watch, anticipate, bias = plan.watch, plan.anticipate, plan.bias
        # masks sent as id lists are set here directly (see _StepPlan.set_mask)
        row_words, row_ids = (plan.row_words, plan.ids) if table is not None else (None, None)
        # a mask through the table, set here directly (set_mask's common case, inlined)
        slot, mask_rows = (table.slot, plan.mask_rows) if table is not None else (None, None)
        tabled = False
        restamp = None  # a GPU's fast rows off the pool: PlanPool.restamp
        # rows off the fast path whose guard lives in the table: their step's token goes in
        # one call for all, after the loop — (plan position, handle, token, string mask)
        pushed: list[tuple[int, int, int, np.ndarray | None]] = []
        lanes = self._lanes if k >= self.lane_min_rows else None
        if fed is None and lanes is not None:
            fed = self._tracked_fed(idx)
        # the rows' objects: all of them (map: no Python frame per row), or, when the
        # lanes' inputs are known without them, each only where a row is visited
        rs = (list(map(rows.__getitem__, idx)) if fed is None or lanes is None
              else _RowsAt(rows, idx))
        codes = None  # per row on the fast path: new sid << FLAG_BITS | flags; else -1
        visit: Iterable[int] = range(k)  # plan positions the per-row loop visits
        if lanes is not None:
            if vocab != self._lane_vocab:
                lanes.forget_plans()
                self._lane_vocab = vocab
            if fed is None:
                fed = _fed_rows(np.fromiter(map(_LANE_OF, rs), dtype=np.int32, count=k),
                                list(map(_OUT_OF, rs)))
            at, lengths, last = fed.lanes, fed.lengths, fed.last
            fast, n_fast, pushes = lanes.advance(at, lengths, last)
            if n_fast:
                self.fast_rows += n_fast
                codes = fast.tolist()
                plans = lanes.plans
                if table is not None:
                    # pooled plans: these rows' entries are gathered when applied (a
                    # GPU's: their mask slots set now)
                    pooled = lanes.pool.split(
                        fast, np.asarray(idx, dtype=np.int64), vocab, FLAG_BITS, WATCH,
                        GREEDY, *((None, None) if self.sparse_ids else (table, mask_rows)))
                    if pooled is not None:  # (its entries gathered now)
                        visit = pooled.rest.tolist()
                        plan.pool(pooled, plans, visit)
                        self.pooled_rows += pooled.pos.size
                        tabled = not self.sparse_ids
                    if not self.sparse_ids:  # the fast rows left: their sid's new slot
                        restamp = lanes.pool.restamp
        for j in visit:
            i = idx[j]
            r = rs[j]
            code = -1 if codes is None else codes[j]
            if code >= 0:  # a plain step on the fast path: its sid's plan
                mask_key, words, ids, inside, ahead, b = plans[code >> FLAG_BITS]
                avoid, watching, greedy = True, code & WATCH, code & GREEDY
            else:
                # its step state on its lane before this step (-1: none)
                was = lanes.on(r.lane) if lanes is not None and r.on_lane else -1
                cs, st, guard = r.compiled, r.state, r.guard
                consumed = r.consumed
                out = r.out
                loop = None  # the loop guard's bans, once known
                t = -1  # the one new token, when the row took exactly one
                if len(out) != consumed:
                    t = out[consumed] if len(out) == consumed + 1 else -1
                    if t >= 0:  # the common step: one new token
                        cs.advance(st, t)
                        if guard is not None:
                            if guard.__class__ is _TableGuard:
                                loop = _PUSHED
                            else:
                                loop = guard.push_banned(t)
                        r.consumed = consumed = consumed + 1
                        if st.violated:
                            self._warn_violation()
                    else:
                        self._catch_up(r)
                        st, consumed = r.state, r.consumed
                at_start = consumed < r.plain_from  # a continuation's first step
                words = b = step = None
                avoid = cs.has_avoid
                if avoid:
                    if r.plain_from <= consumed < r.plain_below:
                        # a plain step: its controls depend on the row's kind and states
                        key = (r.kind, st.avoid, st.pending,
                               -1 if st.prefer_done else st.prefer, vocab)
                        step = steps.get(key)
                        if step is None:
                            step = self._plain_step(r, vocab)
                            if len(steps) >= MAX_STEP_MEMO:  # bounded: it holds the masks
                                steps.clear()
                            steps[key] = step
                        mask_key, words, ids, inside, ahead, b = step
                    else:
                        mask_key, words = self._row_mask(r)
                        ids = self._mask_ids(words, vocab)
                        inside = cs.avoid.depth[st.avoid] >= 2
                        ahead = self._ahead_ids(r, inside, vocab)
                    watching = r.rollback and not r.signalled and not at_start
                    greedy = r.greedy
            if avoid:
                if row_ids is None:
                    plan.set_mask(j, mask_key, words, ids)
                elif ids is not None:
                    row_words[j] = words
                    row_ids[j] = ids
                else:
                    row_words[j] = words
                    mask_rows[j] = s = slot(mask_key, words)
                    tabled = True
                    if code >= 0 and restamp is not None:
                        restamp(code >> FLAG_BITS, s, table.stamps[s])
                if watching:  # (a lane row: a rollback row, never signalled on a lane)
                    if inside:
                        watch.append((j, i, words, ids))
                    elif ahead is not None and greedy:
                        anticipate.append((j, i, ahead))
            if code >= 0:
                if b is not None:
                    bias[j] = b
                continue
            if not avoid and r.signal_ban:
                plan.ban(j, r.signal_ban)
            if consumed < r.min_stop:
                plan.ban(j, r.stop_tuple)
            if guard is not None:
                if loop is None:
                    loop = guard.banned()
                if loop is _PUSHED:
                    pushed.append((j, guard.handle, t, words))
                elif loop:
                    plan.ban(j, self._loop_bans(words, loop, r.stop_ids, special, vocab))
            if b is not None:  # the plain step's, from the memo
                bias[j] = b
            elif not st.prefer_done and not st.pending:  # (pending bytes: no bias)
                key = (cs.prefer_side.uid, st.prefer)  # (shared by specs that prefer alike)
                b = biases.get(key)
                if b is None:
                    b = cs.bias(st)
                    if len(biases) >= MAX_STEP_MEMO:  # bounded: it holds the arrays
                        biases.clear()
                    biases[key] = b
                if at_start and b[0].size:
                    # where the avoided name would have begun, the preferred one is the
                    # natural substitute: a stronger (still bounded) nudge there
                    b = (b[0], _boosted(b[1]))
                bias[j] = b
            if r.penalty is not None:
                plan.penalty[j] = (r.penalty[0], r.penalty[1], r.info.presence_penalty,
                                   r.info.frequency_penalty)
            if lanes is not None and r.lane >= 0 and not r.signalled and not st.violated:
                # (back) on the lane: teach it this step's transition and plan
                generation = lanes.generation  # (a compaction renumbers the states)
                sid = lanes.put(r.lane, step_state(r.kind, st), consumed, cs)
                r.enter_lane()
                if was >= 0 and t >= 0 and lanes.generation == generation:
                    lanes.learn(was, t, sid)
                if step is not None and lanes.plans[sid] is not step:
                    lanes.set_plan(sid, step, self._pooled(step, table, mask_rows, j,
                                                           vocab))
        if tabled:
            plan.any_table = plan.any_ban = True
        # the loop guards' tokens, in one call: (plan position, handle, token) of the fast
        # rows (written by the lanes' advance) and of the others
        parts = [pushes] if codes is not None and pushes.size else []
        if pushed:
            parts.append(np.array([p[:3] for p in pushed], dtype=np.int64))
        if parts:
            push = parts[0] if len(parts) == 1 else np.concatenate(parts)
            hits = self._guards.push_hits(np.ascontiguousarray(push[:, 1]),
                                          np.ascontiguousarray(push[:, 2]))
            if hits:
                self._ban_loops(plan, push, hits, pushed, rs,
                                plans if codes is not None else None, codes, vocab)
        return plan

    def _ban_loops(self, plan: _StepPlan, push: np.ndarray, hits: list[list[int]],
                   pushed: list[tuple], rs: list[_Row] | _RowsAt, plans: list | None,
                   codes: list[int] | None, vocab: int) -> None:
        """The loop guards' bans of this step's pushed rows (``push``: their (plan
        position, handle, token); ``hits``: :meth:`.ngram_table.NgramTable.push_hits`' of
        them), as :meth:`_loop_bans` gives them. A hit of one token, the common case, is
        checked inline (it needs no set, no list)."""
        special = self.special
        size = min(vocab, special.size)
        masks = {p[0]: p[3] for p in pushed}  # (the fast rows': their plan's)
        positions = push[:, 0].tolist()
        for n, v in hits:
            j = positions[n]
            words = masks[j] if j in masks else plans[codes[j] >> FLAG_BITS][1]
            if v < 0:  # SEVERAL tokens followed the context
                loop = self._guards.followers(int(push[n, 1]))
                plan.ban(j, self._loop_bans(words, loop, rs[j].stop_ids, special, vocab))
            elif (v < size and not special[v] and v not in rs[j].stop_ids
                  and (words is None or not _bit(words, v))
                  and self._allowed_text(words) > 1):
                plan.ban_one(j, v)

    def _pooled(self, step: tuple, table: MaskTable | None, mask_rows: np.ndarray | None,
                j: int, vocab: int) -> tuple | None:
        """A plain step's plan, just set at plan position ``j``, as
        :meth:`.plan_pool.PlanPool.put`'s arguments (banned ids, bias ids and values,
        inside a form, the rollback check's set — inside a form, the ids the mask bans
        when few; else the tokens to anticipate —; a GPU's: the mask's table slot and its
        owner stamp), when its mask goes as an id list (the CPU's path) or by table slot
        (a GPU's); else None."""
        _, words, ids, inside, ahead, b = step
        if table is None or (self.sparse_ids and ids is None):
            return None
        bias_ids, bias_vals = b if b is not None else (_EMPTY_IDS, _EMPTY_VALS)
        if self.sparse_ids:
            return ids, bias_ids, bias_vals, bool(inside), ids if inside else ahead
        s = int(mask_rows[j])
        check = self._mask_ids(words, vocab, always=True) if inside else ahead
        return (_EMPTY_IDS, bias_ids, bias_vals, bool(inside), check, s,
                int(table.stamps[s]))

    def _plain_step(self, r: _Row, vocab: int) -> tuple:
        """(table key, mask, its banned ids or None, inside a form, the ids to anticipate,
        the prefer bias lists) of a plain step in the row's states (see
        :meth:`controls`)."""
        key, words = self._row_mask(r)
        inside = r.compiled.avoid.depth[r.state.avoid] >= 2
        return (key, words, self._mask_ids(words, vocab), inside,
                self._ahead_ids(r, inside, vocab), r.compiled.bias(r.state))

    @staticmethod
    def _ahead_ids(r: _Row, inside: bool, vocab: int) -> np.ndarray | None:
        """The tokens that may write a whole form at once from the row's state, whose
        argmax :meth:`_check` looks for to anticipate a rollback (see
        ``CompiledSteering.whole_form_ids``); None when no token can: inside a form, with
        bytes pending, or a spec with no such token."""
        cs = r.compiled
        if inside or r.state.pending or not cs.any_whole_form_token():
            return None
        return cs.whole_form_ids(r.state, vocab)

    def _loop_bans(self, state_words: np.ndarray | None, tokens: set[int] | frozenset[int],
                   stop_ids: frozenset[int], special: np.ndarray, vocab: int) -> list[int]:
        """The loop guard's tokens to ban for one row (``state_words``: the string-level
        ban's cached mask, or None). Special and stop tokens are never banned, nor tokens
        the mask bans already; if no token with text would be left (only EOS / special
        tokens, i.e. a forced stop), the guard is dropped for this step. A handful of
        tokens: plain Python."""
        size = min(vocab, special.size)
        new = [t for t in tokens if t < size and not special[t] and t not in stop_ids
               and (state_words is None or not _bit(state_words, t))]
        if not new or self._allowed_text(state_words) <= len(new):
            return []  # no token with text would be left: no guard this step
        return new

    def _mask_ids(self, words: np.ndarray, vocab: int, *, always: bool = False
                  ) -> np.ndarray | None:
        """int32 ids of the tokens a cached mask bans, when it is sent as a list (the CPU
        with the table, and the mask bans few tokens; ``always``: on any path, when it
        bans few); else None (memoised per mask array)."""
        if not self.sparse_ids and not always:
            return None
        key = (id(words), vocab)
        hit = self._ids.get(key)
        if hit is not None and hit[0] is words:
            return hit[1]
        ids = np.flatnonzero(unpack_words(words, vocab)).astype(np.int32)
        out = ids if ids.size <= vocab // SPARSE_IDS_SHARE else None
        if len(self._ids) >= 4096:  # bounded: it holds references to the masks
            self._ids.clear()
        self._ids[key] = (words, out)
        return out

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

    def apply(self, logits: torch.Tensor, fed: FedRows | None = None) -> torch.Tensor:
        """Steer ``logits`` [B, V] in place for :attr:`rows` (keyed by batch row) and
        return them. ``fed``: what the caller already knows of those rows, per row of
        ``sorted(rows)``, so that the step need not read it from every row object (see
        :class:`FedRows`); ignored when some row is left out (past B, or failed)."""
        if not self.rows:
            return logits
        # (each torch call costs microseconds here, with caches cold after the forward
        # pass: the numpy view, when there is one, gives the shape too)
        x = _numpy_view(logits)
        b, v = logits.shape if x is None else x.shape
        if self._any_failed:  # (set for good once a row failed: rare, and safe)
            for i in [i for i, r in self.rows.items() if i < b and isinstance(r, _FailedRow)]:
                self._end_failed(logits, i, v)
            idx = sorted(i for i, r in self.rows.items()
                         if i < b and not isinstance(r, _FailedRow))
        else:
            idx = sorted(self.rows)
            if idx[-1] >= b:
                idx = [i for i in idx if i < b]
        if not idx:
            return logits
        self.steps += 1
        self.row_steps += len(idx)
        plan = self.controls(idx, v, fed if fed is not None and fed.lanes.size == len(idx)
                             and len(idx) == len(self.rows) else None)
        cpu_lists = self.sparse_ids and x is not None  # (the CPU's path: per-row lists)
        # the rows the plan controls, when not the whole batch (the kernels' argument)
        extra = ({} if cpu_lists or len(idx) == b
                 else {"logit_rows": np.asarray(idx, dtype=np.int32)})
        early = self.early_upload and not self.sparse_ids  # (a CPU has nothing to overlap)
        kw = plan.kwargs(self._send, extra) if early else None
        anticipated = self.anticipated
        # the rollback check reads the rows' choices: on a GPU, the step's wait for it
        checked = bool(plan.watch or plan.anticipate or plan.pooled_checks is not None)
        signal = self._check(logits, x, plan, v) if checked else []
        # the plan goes (again) after the check: not sent before it, or the check changed it
        resend = kw is None or self.anticipated != anticipated
        if signal and resend:  # their rows are overwritten below: nothing else to apply
            for i in signal:   # there (a plan already sent leaves them to the overwrite)
                plan.drop(bisect.bisect_left(idx, i))  # (idx ascends)
        try:
            if cpu_lists:
                # ids come below the index's vocabulary size (masks', bans': below v)
                plan.apply_rows(logits, idx, in_range=self.index.vocab_size <= v,
                                flat=self.flat_controls, x=x)
                for i in signal:
                    _force_token(logits, i, self.rows[i].args.signal)
                return logits
            # the tokens to force (int64: the index ops' own type, no conversion on the
            # device)
            forced = [self.rows[i].args.signal for i in signal]
            forced = [-1 if t is None or not 0 <= t < v else t for t in forced]
            force = {}
            flat = False  # (contiguous logits: forced tokens by flat offset)
            if signal:
                flat = logits.is_contiguous()
                rows = np.array(signal, dtype=np.int64)
                force = {"force_rows": rows, "force_at": np.array(forced, dtype=np.int64)
                         + (rows * v if flat else 0)}
            if resend:
                # one upload for the plan's arrays, the rows they control and the tokens
                # to force (early: the check changed the plan, so it goes again; rare)
                kw = plan.kwargs(self._send, {**extra, **force})
            elif force:  # (the plan went before the check: the tokens to force on their own)
                kw = {**kw, **self._send(force)}
            force_rows, force_at = kw.pop("force_rows", None), kw.pop("force_at", None)
            if len(kw) > ("logit_rows" in kw):
                # after the check's wait the GPU idles until this launch: one launch
                apply_logit_controls(logits, **kw, host_bound=checked)
            if force_rows is not None:
                _force_tokens(logits, force_rows, force_at, forced, flat=flat)
            return logits
        finally:
            # after the launches (on a GPU the kernels run meanwhile), come what may: the
            # signalled rows leave their lanes for good
            for i in signal:
                r = self.rows[i]
                if r.on_lane:
                    r.leave_lane()
                r.signalled = True  # (it never takes a lane again)
                self.signals += 1

    def counters(self) -> tuple[int, int, int, int, int, int]:
        """(steps, row steps, fast-path row steps, pooled row steps, rollback signals,
        anticipated starts) so far: the first six of :data:`.step_stats.FIELDS`."""
        return (self.steps, self.row_steps, self.fast_rows, self.pooled_rows,
                self.signals, self.anticipated)

    def _end_failed(self, logits: torch.Tensor, i: int, vocab: int) -> None:
        """A row that could not be steered takes its signal token (or a stop token)."""
        r = self.rows[i]
        end = r.signal if r.signal is not None else min(r.info.stop_ids, default=None)
        _force_token(logits, i, end if end is not None and 0 <= end < vocab else None)

    def _check(self, logits: torch.Tensor, x: np.ndarray | None, plan: _StepPlan,
               vocab: int) -> list[int]:
        """Compare the rollback rows' own choices with their masks, before masking
        (``x``: the logits' numpy view, None when numpy cannot read them).

        * Rows inside a form (``plan.watch``) *heading into* it: greedy rows whose argmax
          is banned, sampling rows whose banned tokens carry more than the signal's
          probability mass (softmax at the row's temperature, before top-k/top-p/min-p).
          Returned: they get the rollback signal.
        * Greedy rows at no form (``plan.anticipate``) whose argmax would write a whole
          form at once (" Nike": only a word end missing): the name begins right here, so
          the start ban a rollback would bring is applied at this step instead, with the
          stronger prefer nudge — the same outcome without a round trip. Their plan is
          updated in place.
        """
        out: list[int] = []
        rows = self.rows
        # pooled rows of both greedy kinds, their sets (banned ids; tokens to anticipate)
        # as arrays
        pooled = plan.pooled_checks
        if pooled is not None and x is not None and not self.compiled:
            plan._unpool()  # (as list entries: the path below takes those)
            pooled = None
        greedy: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        sampling: list[tuple[int, np.ndarray]] = []
        for _, i, words, ids in plan.watch:
            if rows[i].greedy:
                greedy.append((i, words, ids))
            else:
                sampling.append((i, words))
        ahead = plan.anticipate  # greedy rows with tokens that may write a whole form
        n_need = len(greedy) + len(ahead) + (0 if pooled is None else pooled.check_rows.size)
        if n_need and (x is not None or 4 * n_need < logits.shape[0]):
            need = [i for i, _, _ in greedy] + [i for _, i, _ in ahead]
            if pooled is not None:
                need += pooled.check_rows.tolist()
        else:
            need = None  # (none, or every row's argmax: the whole batch's)
        if not n_need:
            choices = {}
        elif x is not None:
            # CPU logits: the argmax only where it may lie in the row's set (a watched
            # row's mask when sent as ids, else any token; a row's whole-form tokens)
            sets = [ids for _, _, ids in greedy] + [ids for _, _, ids in ahead]
            if self.compiled:
                choices = choice_probe.argmax_if_in_compiled(
                    x, need, sets, CHOICE_PROBES,
                    more=None if pooled is None else (pooled.check_sizes, pooled.check_sets))
            else:
                choices = argmax_if_in(x, need, sets, self._flat_index)
        else:  # one argmax call serves both kinds of rows
            choices = _argmax_rows(logits, need)
        # a row's choice (None: its argmax lies outside its set); every row's, by row, as
        # an array, when the whole batch's argmax was read
        whole = choices.__class__ is not dict
        get = choices.__getitem__ if whole else choices.get
        if len(choices):
            out += [i for i, words, _ in greedy if (t := get(i)) is not None
                    and _bit(words, int(t))]
        for i, words in sampling:
            r = rows[i]
            row = logits[i].float()
            banned = torch.from_numpy(unpack_words(words, vocab)).to(row.device)
            probs = torch.softmax(row / r.info.temperature, dim=-1)
            if float(probs[banned].sum()) > r.args.rollback_mass:
                out.append(i)
        if not len(choices):
            return out
        for j, i, ids in ahead:
            t = get(i)
            if t is not None:
                self._anticipate(plan, j, i, ids, int(t), vocab)
        if pooled is not None:
            c_pos, c_rows, c_sids = pooled.check_pos, pooled.check_rows, pooled.check_sids
            if x is None:  # every row's choice is known: those in their row's set
                ts = (choices[c_rows] if whole else np.fromiter(
                    map(get, c_rows.tolist()), dtype=np.int64, count=c_rows.size))
                hits = [(q, int(c_rows[q]), int(ts[q])) for q in choice_probe.in_sets(
                    ts, pooled.check_sizes, pooled.check_sets).tolist()]
            else:  # a row with a choice has it in its set (the rows no probe decided: few)
                qs = np.searchsorted(c_rows, list(choices)).tolist()  # (c_rows ascend)
                hits = [(q, i, t) for q, (i, t) in zip(qs, choices.items(), strict=True)
                        if q < c_rows.size and c_rows[q] == i]
            inside, plans = pooled.check_inside, plan.plans
            for q, i, t in hits:
                if inside[q]:  # heading into the form: the rollback signal
                    out.append(i)
                else:
                    self._anticipate(plan, int(c_pos[q]), i, plans[int(c_sids[q])][4], t,
                                     vocab)
        return out

    def _anticipate(self, plan: _StepPlan, j: int, i: int, ids: np.ndarray, t: int,
                    vocab: int) -> None:
        """Row i (plan position j), whose tokens that may write a whole form are ``ids``,
        has argmax ``t``: where t would write a whole form, the start ban a rollback
        would bring is applied at this step instead (see :meth:`_check`)."""
        # the row's tokens that may write a whole form (a superset of those that do): the
        # cheap first test, without touching the row
        sets = self._ahead_sets
        hit = sets.get(id(ids))
        if hit is None or hit[0] is not ids:
            if len(sets) >= 1024:  # bounded: it holds references to the arrays
                sets.clear()
            hit = sets[id(ids)] = (ids, frozenset(ids.tolist()))
        if t in hit[1] and not plan.banned(j, t):
            r = self.rows[i]
            cs = r.compiled
            st = r.state  # (takes a lane row off its lane)
            groups = cs.whole_form_groups(st, t)
            if groups:
                words = cs.start_words(st, groups)
                plan.set_mask(j, (cs.uid, "start", groups, st.avoid, st.pending), words,
                              self._mask_ids(words, vocab))
                ids, vals = plan.bias[j]
                if ids.size:
                    plan.bias[j] = (ids, _boosted(vals))
                self.anticipated += 1

    def _send(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The step's host arrays as tensors on the batch's device, in one copy."""
        return self._upload.send(arrays)


_PUSHED: Any = object()  # (controls: the row's guard is pushed after the loop)
_LANE_OF = operator.attrgetter("lane")
_FIRST = operator.itemgetter(0)
_LAST = operator.itemgetter(-1)
_OUT_OF = operator.attrgetter("out")


class _TableGuard:
    """A row's loop guard kept in the batch's :class:`.ngram_table.NgramTable`: what the
    batch asks of :class:`.loop_guard.NgramGuard` outside the common step (replays,
    resets, the bans of a row that took no new token); :meth:`SteeringBatch.controls`
    pushes the common step's tokens of all such rows in one call. The row's entries are
    released with the object."""

    __slots__ = ("table", "handle")

    def __init__(self, table: NgramTable, n: int):
        self.table = table
        self.handle = table.open(n)

    def banned(self) -> set[int] | frozenset[int]:
        return self.table.banned(self.handle)

    def extend(self, tokens: Iterable[int]) -> None:
        self.table.extend(self.handle, tokens)

    def reset(self) -> None:
        self.table.reset(self.handle)

    def __del__(self) -> None:
        # rows leave the batch in many ways (removed, replaced, moved over, dropped by
        # the V2 adapter): the handle goes back when the row object does
        try:
            self.table.close(self.handle)
        except Exception:  # pragma: no cover - interpreter shutdown, modules torn down
            pass


@dataclass
class _FailedRow:
    """A steered row whose spec could not be set up in the engine: it is ended at once."""

    signal: int | None
    info: RequestInfo


def _exact_key(raw: Any) -> bytes | None:
    """The admission memo's key of a row's raw arguments: their ``marshal`` serialisation,
    which keeps every value's type (``True``, ``1`` and ``1.0`` differ, as they may in
    validation) and from which the arguments could be rebuilt, so equal keys mean equal
    arguments. None (not memoised) when ``raw`` is not a dict of plain JSON-like values
    (marshal refuses other types and calls no code of theirs) or serialises to more
    than MAX_ADMIT_KEY_BYTES."""
    if raw.__class__ is not dict:
        return None
    try:
        key = marshal.dumps(raw, 4)
    except ValueError:
        return None
    return key if len(key) <= MAX_ADMIT_KEY_BYTES else None


def _signal_of(raw: Any) -> int | None:
    try:
        value = raw.get("signal") if isinstance(raw, dict) else getattr(raw, "signal", None)
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class _StepPlan:
    """One step's controls for the steered rows, as host arrays until :meth:`kwargs`.

    Masks take one of two forms: with a device :class:`.mask_table.MaskTable` (the default)
    a row holds a slot index, or on the CPU (``ban_lists``) the list of its mask's banned
    token ids (see :class:`SteeringBatch`); its extra bans (stop tokens, the signal, the loop
    guard) travel in the lists of banned token ids on the CPU, and as ``-inf`` bias entries
    on a GPU (inside the one kernel launch; a NaN logit stays NaN there); without a table
    (``table=False``) each row's whole mask is copied into a host batch, the extra bans
    OR-ed in."""

    def __init__(self, k: int, vocab: int, table: MaskTable | None = None, *,
                 ban_lists: bool = False):
        self.k, self.vocab, self.table = k, vocab, table
        self.ban_lists = ban_lists
        if table is None:
            self.masks = np.zeros((k, (vocab + 31) // 32), dtype=np.int32)
        else:
            table.begin_step()
            self.mask_rows = np.zeros(k, dtype=np.int32)  # slot 0: no mask
            self.row_words: list[np.ndarray | None] = [None] * k
            self.ids: list[np.ndarray | None] = [None] * k  # masks sent as id lists
            self.any_table = False
        self.extra: dict[int, list[int]] = {}
        self.any_ban = False  # (read by the host-mask path only, table None)
        self.bias: list[tuple[np.ndarray, np.ndarray]] = [(_EMPTY_IDS, _EMPTY_VALS)] * k
        self.penalty: dict[int, tuple[np.ndarray, np.ndarray, float, float]] = {}
        self.watch: list[tuple[int, int, np.ndarray, np.ndarray | None]] = []
        self.anticipate: list[tuple[int, int, np.ndarray]] = []
        # pooled rows (see pool), the lanes' plans, the other positions
        self.pooled: PooledStep | None = None
        self.plans: list | None = None
        self.visited: list[int] | None = None

    def pool(self, pooled: PooledStep, plans: list, visited: list[int]) -> None:
        """The rows ``pooled.pos`` have their plan's entries in ``pooled``'s arrays (the
        CPU's: flat indices into the logits, which :meth:`apply_rows` applies; a GPU's:
        mask slots already set, bias lists that :meth:`kwargs` merges), with no Python
        per row, and those of them the rollback check reads come as arrays too (instead
        of entries in :attr:`watch` or :attr:`anticipate`); ``plans`` (the lanes' plans)
        sets them row by row wherever a path needs that (:meth:`_unpool`); ``visited``:
        the other positions."""
        self.pooled, self.plans, self.visited = pooled, plans, visited

    @property
    def pooled_checks(self) -> PooledStep | None:
        """The pooled step, when the rollback check reads some of its rows."""
        p = self.pooled
        return p if p is not None and p.check_pos.size else None

    def _unpool(self) -> None:
        """The pooled rows' entries set row by row, as the per-row fast path sets them."""
        p, plans = self.pooled, self.plans
        if p is None:
            return
        for j, s in zip(p.pos.tolist(), p.sids.tolist(), strict=True):
            _, words, ids, _, _, b = plans[s]
            self.row_words[j] = words
            self.ids[j] = ids
            if b is not None:
                self.bias[j] = b
        # (new lists: a caller may be iterating over the old ones)
        checked = list(zip(p.check_pos.tolist(), p.check_rows.tolist(),
                           p.check_sids.tolist(), p.check_inside.tolist(), strict=True))
        self.watch = self.watch + [(j, i, plans[s][1], plans[s][2])
                                   for j, i, s, inside in checked if inside]
        self.anticipate = self.anticipate + [(j, i, plans[s][4])
                                             for j, i, s, inside in checked if not inside]
        self.pooled = self.plans = self.visited = None

    def _pooled_sid(self, j: int) -> int:
        """Row j's sid when it is pooled, else -1."""
        p = self.pooled
        if p is None:
            return -1
        q = int(np.searchsorted(p.pos, j))  # (positions ascend)
        return int(p.sids[q]) if q < p.pos.size and p.pos[q] == j else -1

    def _settle(self, j: int) -> None:
        """Before row j's entries are replaced one by one: set them if pooled."""
        if self._pooled_sid(j) >= 0:
            self._unpool()

    def set_mask(self, j: int, key: tuple, words: np.ndarray,
                 ids: np.ndarray | None = None) -> None:
        """Row j's string-level mask, sent as ``ids`` when given (a replacement keeps the
        extra bans)."""
        self._settle(j)
        self.any_ban = True
        if self.table is not None:
            self.row_words[j] = words
            if ids is not None:
                self.ids[j] = ids
                if self.any_table and self.mask_rows[j]:  # it replaces a table mask
                    self.mask_rows[j] = 0
            else:
                self.ids[j] = None
                self.any_table = True
                self.mask_rows[j] = self.table.slot(key, words)
            return
        w = min(self.masks.shape[1], words.size)
        self.masks[j, :w] = words[:w]
        for t in self.extra.get(j, ()):
            _or_tokens(self.masks[j], (t,), self.vocab)

    def drop(self, j: int) -> None:
        """Row j gets no controls this step (its row is overwritten afterwards: a pooled
        row keeps its pooled entries, applied and then overwritten)."""
        if self._pooled_sid(j) >= 0:
            self.extra.pop(j, None)
            return
        if self.table is None:
            self.masks[j] = 0
        else:
            self.mask_rows[j] = 0
            self.ids[j] = None
        self.extra.pop(j, None)
        self.bias[j] = (_EMPTY_IDS, _EMPTY_VALS)
        self.penalty.pop(j, None)

    def ban(self, j: int, tokens: Iterable[int]) -> None:
        tokens = [t for t in tokens if 0 <= t < self.vocab]
        if not tokens:
            return
        self.any_ban = True
        self.extra.setdefault(j, []).extend(tokens)
        if self.table is None:
            _or_tokens(self.masks[j], tokens, self.vocab)

    def ban_one(self, j: int, t: int) -> None:
        """:meth:`ban` of one token, known to lie in the vocabulary."""
        self.any_ban = True
        self.extra.setdefault(j, []).append(t)
        if self.table is None:
            _or_tokens(self.masks[j], (t,), self.vocab)

    def banned(self, j: int, t: int) -> bool:
        if self.table is None:
            return _bit(self.masks[j], t)
        s = self._pooled_sid(j)
        words = self.row_words[j] if s < 0 else self.plans[s][1]
        return (words is not None and _bit(words, t)) or t in self.extra.get(j, ())

    def apply_rows(self, logits: torch.Tensor, rows: list[int], *, in_range: bool = False,
                   flat: bool = True, x: np.ndarray | None = None) -> None:
        """Apply the planned controls to CPU float32 ``logits``, the j-th planned row
        being logits row ``rows[j]``. Only with the ban lists (:attr:`ban_lists`), where
        masks that ban many tokens sit in the table and the rest are id lists.
        ``in_range``: every id is known to lie in the logits' vocabulary (none is
        checked).

        With ``flat``, ids in range and C-contiguous logits, the rows with neither a table
        mask nor penalties — nearly all — take the flat path
        (``apply_flat_controls_numpy``): their bias and banned-id lists become flat
        indices into the logits' storage (concatenated, plus each row's offset), one add
        and one fill for the step; the others (and every row otherwise) go through
        ``apply_row_controls_numpy``, each stage applied to all of them at once. Each
        row's stages keep the fused op's order either way. ``x``: the logits' numpy view,
        when the caller has it."""
        k = self.k
        if x is None:
            x = logits.detach().numpy()
        if not flat or not in_range or not x.flags.c_contiguous:
            self._unpool()
            self._apply_row_lists(logits, rows, range(k), in_range)
            return
        slow = (set(np.flatnonzero(self.mask_rows).tolist()) if self.any_table else set())
        slow.update(self.penalty)
        v = self.vocab
        # per stage: the rows' id arrays, their values, each row's offset and id count
        b_ids, b_vals, b_at, b_n = [], [], [], []
        x_ids, x_at, x_n = [], [], []
        ids_of, bias = self.ids, self.bias
        pooled = self.pooled
        for j in range(k) if pooled is None else self.visited:
            i = rows[j]
            if slow and j in slow:
                continue
            ids, vals = bias[j]
            n = ids.size
            if n:
                b_ids.append(ids)
                b_vals.append(vals)
                b_at.append(i * v)
                b_n.append(n)
            ids = ids_of[j]
            if ids is not None and ids.size:
                x_ids.append(ids)
                x_at.append(i * v)
                x_n.append(ids.size)
        if self.extra:
            extra = [rows[j] * v + t for j, bans in self.extra.items() if j not in slow
                     for t in bans]
            if extra:
                x_ids.append(np.array(extra, dtype=np.int64))
                x_at.append(0)
                x_n.append(len(extra))
        bias_index, bias_values = _flat(b_ids, b_at, b_n), _joined(b_vals)
        banned_index = _flat(x_ids, x_at, x_n)
        if pooled is not None:  # (the order of unique flat indices does not matter)
            banned_index = _joined([banned_index, pooled.bans])
            bias_index = _joined([bias_index, pooled.bias_index])
            bias_values = _joined([bias_values, pooled.bias_values])
        apply_flat_controls_numpy(
            x.reshape(-1), bias_index=bias_index, bias_values=bias_values,
            banned_index=banned_index)
        if slow:
            self._apply_row_lists(logits, rows, sorted(slow), in_range)

    def _apply_row_lists(self, logits: torch.Tensor, rows: list[int], js: Iterable[int],
                         in_range: bool) -> None:
        """The planned controls of the planned rows ``js`` through
        ``apply_row_controls_numpy`` (per-row lists, each stage applied to every row at
        once through flat indices)."""
        js = list(js)
        if not js:
            return
        masks = None
        if self.any_table:
            masks = [self.row_words[j] if self.mask_rows[j] else None for j in js]
        banned = [self.ids[j] for j in js]
        for n, j in enumerate(js):
            bans = self.extra.get(j)
            if bans:
                e = np.asarray(bans, dtype=np.int32)
                banned[n] = e if banned[n] is None else np.concatenate([banned[n], e])
        penalty = [self.penalty.get(j) for j in js] if self.penalty else None
        apply_row_controls_numpy(logits, [rows[j] for j in js],
                                 bias=[self.bias[j] for j in js], penalty=penalty,
                                 masks=masks, banned=banned, in_range=in_range)

    def kwargs(self, send, extra: dict[str, np.ndarray] | None = None
               ) -> dict[str, torch.Tensor]:
        """Keyword arguments of ``apply_logit_controls`` for the planned rows, the host
        arrays among them (and ``extra``'s) turned into tensors by one ``send`` call.
        A GPU's pooled rows (their mask slots already set) keep their bias in the pooled
        step's arrays, which one compiled call merges with the other rows' lists."""
        pooled = self.pooled
        if pooled is not None and self.ban_lists:
            self._unpool()  # (the CPU's flat form: set row by row)
            pooled = None
        kw: dict[str, torch.Tensor] = {}
        host: dict[str, np.ndarray] = dict(extra or {})
        bias = self.bias
        if self.table is not None:
            if self.any_table:
                kw["mask_table"] = self.table.table
                host["mask_rows"] = self.mask_rows
            if self.ban_lists:
                if self.extra or any(a is not None for a in self.ids):
                    host["banned_indptr"], host["banned_token_ids"] = self._ban_lists()
            elif self.extra and pooled is None:  # extra bans ride in the bias lists as
                bias = list(bias)  # -inf (one launch; with pooled rows: see _pooled_bias)
                for j, bans in self.extra.items():
                    bias[j] = _with_bans(*bias[j], bans)
        elif self.any_ban:
            host["banned_bitmask"] = self.masks.reshape(-1)
        if pooled is not None:
            host.update(self._pooled_bias(bias, pooled))
        else:
            sizes = [ids.size for ids, _ in bias]
            if any(sizes):
                indptr = np.zeros(self.k + 1, dtype=np.int32)
                np.cumsum(sizes, out=indptr[1:])
                host["bias_indptr"] = indptr
                host["bias_token_ids"] = np.concatenate([ids for ids, _ in bias])
                host["bias_values"] = np.concatenate([v for _, v in bias])
        if self.penalty:
            indptr = np.zeros(self.k + 1, dtype=np.int32)
            presence = np.zeros(self.k, dtype=np.float32)
            frequency = np.zeros(self.k, dtype=np.float32)
            ids, counts = [], []
            for j in range(self.k):
                p = self.penalty.get(j)
                indptr[j + 1] = indptr[j] + (p[0].size if p else 0)
                if p:
                    ids.append(p[0])
                    counts.append(p[1])
                    presence[j], frequency[j] = p[2], p[3]
            host["penalty_indptr"] = indptr
            host["penalty_token_ids"] = np.concatenate(ids)
            host["penalty_output_counts"] = np.concatenate(counts)
            host["presence_penalty"] = presence
            host["frequency_penalty"] = frequency
        if host:
            kw.update(send(host))
        if "banned_bitmask" in kw:
            kw["banned_bitmask"] = kw["banned_bitmask"].view(self.k, -1)
        return kw

    def _pooled_bias(self, bias: list[tuple[np.ndarray, np.ndarray]], pooled: PooledStep
                     ) -> dict[str, np.ndarray]:
        """The bias lists' kernel arrays with a GPU's pooled rows: theirs from the pooled
        step, the visited rows' from ``bias``, the extra bans as ``-inf`` entries, merged
        in one compiled call (none when no row has any)."""
        other = self.visited
        parts = [bias[j] for j in other]
        sizes = np.fromiter(map(len, map(_FIRST, parts)), dtype=np.int64, count=len(parts))
        extra = self.extra
        if not pooled.bias_index.size and not sizes.any() and not extra:
            return {}
        ids = np.concatenate([a for a, _ in parts]) if parts else _EMPTY_IDS
        vals = np.concatenate([v for _, v in parts]) if parts else _EMPTY_VALS
        n = len(extra)
        indptr, ids, vals = bias_lists(
            self.k, pooled, np.asarray(other, dtype=np.int64), sizes, ids, vals,
            np.fromiter(extra, dtype=np.int64, count=n),
            np.fromiter(map(len, extra.values()), dtype=np.int64, count=n),
            np.fromiter(itertools.chain.from_iterable(extra.values()), dtype=np.int64))
        return {"bias_indptr": indptr, "bias_token_ids": ids, "bias_values": vals}

    def _ban_lists(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, ids): per row, its mask's ids (when sent as a list) and extra bans."""
        parts = list(self.ids)
        for j, bans in self.extra.items():
            e = np.asarray(bans, dtype=np.int32)
            parts[j] = e if parts[j] is None else np.concatenate([parts[j], e])
        indptr = np.zeros(self.k + 1, dtype=np.int32)
        np.cumsum([0 if a is None else a.size for a in parts], out=indptr[1:])
        present = [a for a in parts if a is not None]
        return indptr, np.concatenate(present) if present else _EMPTY_IDS


_EMPTY_IDS = np.zeros(0, dtype=np.int32)
_EMPTY_VALS = np.zeros(0, dtype=np.float32)


def _flat(ids: list[np.ndarray], at: list[int], n: list[int]) -> np.ndarray | None:
    """Flat indices into a [B, V] row-major storage: each id array plus its row's offset
    ``at`` (``row * V``; ``n``: the arrays' sizes), concatenated (None when none)."""
    if not ids:
        return None
    if len(ids) == 1:
        return ids[0].astype(np.int64) + at[0]
    return (np.concatenate(ids).astype(np.int64, copy=False)
            + np.array(at, dtype=np.int64).repeat(n))


def _joined(parts: list[np.ndarray | None]) -> np.ndarray | None:
    """The arrays concatenated, Nones left out (one is returned as is; None when there
    are none)."""
    parts = [a for a in parts if a is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _with_bans(ids: np.ndarray, vals: np.ndarray, bans: list[int] | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """A row's bias list with ``bans`` as ``-inf`` entries (token ids stay unique)."""
    if not bans:
        return ids, vals
    unique = set(bans)
    b = np.asarray(sorted(unique), dtype=np.int32)
    if ids.size and not unique.isdisjoint(ids.tolist()):  # (rare: a biased token banned)
        keep = ~np.isin(ids, b)
        ids, vals = ids[keep], vals[keep]
    return (np.concatenate([ids, b]),
            np.concatenate([vals, np.full(b.size, -np.inf, dtype=np.float32)]))


def _boosted(vals: np.ndarray) -> np.ndarray:
    return np.minimum(vals * ROLLBACK_PREFER_FACTOR, MAX_PREFER_BIAS).astype(np.float32)


def _argmax_rows(logits: torch.Tensor, rows: list[int] | None
                 ) -> np.ndarray | dict[int, int]:
    """The argmax (first maximum, NaN counting as the maximum) of each of ``rows``, in
    torch, indexed by row: the rollback check's path for logits numpy cannot read (half
    precision, a GPU; CPU float32 goes through :func:`argmax_if_in`). When the rows are a
    large share of the batch (or None: every row), one argmax of every row (an int64
    array over the whole batch, no row upload); else a dict of the rows'."""
    if rows is None or 4 * len(rows) >= logits.shape[0]:
        return logits.argmax(dim=-1).cpu().numpy()
    sub = logits.index_select(0, torch.as_tensor(rows, dtype=torch.long).to(logits.device))
    return dict(zip(rows, sub.argmax(dim=-1).tolist(), strict=True))


def argmax_if_in(x: np.ndarray, rows: list[int], sets: list[np.ndarray | None],
                 flat: FlatIndex | None = None) -> dict[int, int]:
    """{row: its argmax} for the ``rows`` of ``x`` [B, V] whose argmax (the first
    maximum, NaN counting as the maximum) may lie in the row's token set (int ids in
    [0, V); None: any token); a row left out has its argmax outside its set.

    Exact without a pass over the whole row in the common case: with m the maximum over
    a row's set, a token among the row's first few (where a BPE vocabulary keeps its most
    frequent tokens) above m proves the argmax lies outside the set. The probe widens in
    stages (:data:`CHOICE_PROBES`) over the rows still undecided; only the rows that no
    stage decides get their full argmax, and so do the rows whose set is larger than the
    first probe: for them, the gather and the probes would cost more than the one pass.

    A step's cost here is the number of numpy calls more than the data (a few dozen
    logits a row), and each call runs with cold caches after the model's forward pass:
    the sets of up to :data:`CHOICE_PAD` ids (a spec's whole-form lists, a watched row's
    few banned ids), padded to that width with repeats of their first id (which leave
    their maximum unchanged), are gathered for every row in one take; larger sets, rare,
    in one take per set array; the first probe covers every row in one reduction; the
    comparisons are plain Python over the rows. ``flat`` memoises the one take's flat
    indices per row and padded set (C-contiguous ``x``)."""
    v = x.shape[1]
    data = x.reshape(-1) if x.flags.c_contiguous else None
    if data is None:
        flat = None
    # per row of the one take: its set, padded (with ``flat``: as flat indices)
    padded: list[np.ndarray] = []
    padded_rows: list[int] = []
    groups: dict[int, tuple[np.ndarray, list[int]]] = {}  # larger sets, by array
    full: list[int] = []  # rows to give their full argmax
    for k, ids in enumerate(sets):
        n = -1 if ids is None else ids.size
        if n < 0 or n > CHOICE_PROBES[0]:
            # any token (no probe can decide), or a set whose gather and probes would
            # cost more than the one pass of a full argmax
            full.append(rows[k])
        elif n > CHOICE_PAD:
            groups.setdefault(id(ids), (ids, []))[1].append(rows[k])
        elif n:  # an empty set holds no argmax: the row is left out
            i = rows[k]
            padded.append(padded_ids(ids, CHOICE_PAD) if flat is None
                          else flat.padded(i, ids, v, CHOICE_PAD))
            padded_rows.append(i)
    best: dict[int, float] = {}  # row -> the maximum over its set
    if padded:
        idx = np.concatenate(padded)
        if flat is not None:  # memoised flat indices: one take
            m = data.take(idx).reshape(len(padded), CHOICE_PAD).max(axis=1)
        else:
            at = np.array(padded_rows, dtype=np.intp)
            idx = idx.reshape(len(padded), CHOICE_PAD)
            if data is not None:  # a 1-D take: several times faster than a 2-D gather
                m = data.take(idx + (at * v)[:, None]).max(axis=1)
            else:
                m = x[at[:, None], idx].max(axis=1)
        best.update(zip(padded_rows, m.tolist(), strict=True))
    for ids, members in groups.values():
        at = np.asarray(members, dtype=np.intp)
        best.update(zip(members, x[at[:, None], ids].max(axis=1).tolist(), strict=True))
    if best:
        width = min(CHOICE_PROBES[0], v)
        top = x[:, :width].max(axis=1).tolist()  # every row at once: one reduction
        undecided = [i for i, m in best.items() if not top[i] > m]  # NaN: undecided
        for wider in CHOICE_PROBES[1:]:
            if not undecided or width >= v:
                break
            width = min(wider, v)
            if len(undecided) <= FEW_UNDECIDED:  # row views: a fancy index copies first
                undecided = [i for i in undecided if not x[i, :width].max() > best[i]]
                continue
            top = x[undecided, :width].max(axis=1).tolist()  # the undecided rows at once
            undecided = [i for i, t in zip(undecided, top, strict=True) if not t > best[i]]
        full += undecided
    return {i: int(x[i].argmax()) for i in full}


def _force_tokens(logits: torch.Tensor, rows: torch.Tensor, at: torch.Tensor,
                  host_tokens: list[int], *, flat: bool) -> None:
    """Rows ``rows`` take ``host_tokens`` (-1: every logit -inf): every other logit -inf,
    in two launches for all of them (``rows``, ``at``: int64 on the logits' device; ``at``:
    the tokens' offsets in the flattened logits when ``flat`` — contiguous logits —, else
    the tokens)."""
    logits.index_fill_(0, rows, float("-inf"))
    if not all(t >= 0 for t in host_tokens):  # rare: a row with no token to take
        for n, t in enumerate(host_tokens):   # keeps every logit -inf
            if t >= 0:
                logits[rows[n], t] = 0.0
    elif flat:
        logits.view(-1).index_fill_(0, at, 0.0)
    else:
        logits.index_put_((rows, at), torch.zeros((), dtype=logits.dtype,
                                                  device=logits.device))


def _force_token(logits: torch.Tensor, i: int, token: int | None) -> None:
    """Row i takes ``token`` (None: every logit -inf): every other logit -inf."""
    view = _numpy_view(logits)
    x = view[i] if view is not None else logits[i]
    x[:] = float("-inf")
    if token is not None:
        x[token] = 0.0


def _numpy_view(logits: torch.Tensor) -> np.ndarray | None:
    """The logits' numpy view when numpy can read them as they are (CPU float32 or
    float64), else None: one torch call in the common case."""
    if logits.is_cuda:  # (no exception raised and caught each step on a GPU)
        return None
    try:
        x = logits.numpy()
    except RuntimeError:  # a tensor that requires grad
        return _numpy_view(logits.detach())
    except TypeError:  # not on the CPU, or a dtype numpy lacks (bfloat16)
        return None
    return x if x.dtype in (np.float32, np.float64) else None


def _bit(words: np.ndarray, t: int) -> bool:
    return bool((int(words[t >> 5]) >> (t & 31)) & 1)


def _or_tokens(row_words: np.ndarray, tokens: Iterable[int], vocab: int) -> bool:
    """OR token ids into a packed row (in place). Returns whether any bit was set."""
    u = row_words.view(np.uint32)
    done = False
    for t in tokens:
        if 0 <= t < vocab:
            u[t >> 5] = int(u[t >> 5]) | (1 << (t & 31))
            done = True
    return done
