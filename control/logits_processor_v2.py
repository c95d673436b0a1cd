"""The steering logits processor for vLLM's model runner V2 (vLLM 0.32's default on GPUs
for dense models), over the same :class:`.steering_batch.SteeringBatch` core as the V1
adapter (:mod:`.logits_processor`).

Runner V2's interface (``vllm/v1/worker/gpu/sample/logits_processor/``) differs from V1's:
requests live in persistent *slots* (``add_request(slot, params)``), the token history
stays on the device, and ``apply(logits, ctx)`` gets the step's layout (``ctx.
idx_mapping_np``: batch row → slot; ``ctx.input_ids``: the token fed at each row, i.e.
the newest output token of a decoding row; ``ctx.pos``: its position). So this adapter

* keeps, per steered slot, the output token list the core advances over, appending each
  step's fed token when the row's position moved past the prompt;
* learns those tokens *before the forward pass is queued* where it can (see
  :meth:`SteeringLogitsProcessorV2.apply_staged_writes`): the previous step's
  ``post_update`` has committed each slot's newest token to ``all_token_ids`` and its
  length to ``total_len`` on the device by then, so one gather and one asynchronous copy
  queued there bring them to the host, and ``apply`` waits for that copy only, not for
  the forward pass. The plan is then built and uploaded while the forward pass runs, as
  with runner V1 (``SteeringBatch.early_upload``). The host's positions
  (``ctx.seq_lens_upper_bound_np``, exact without speculative decoding) must agree with
  the device's committed lengths for every steered row; where they do not, or no read
  was staged (a dummy run), ``apply`` reads ``ctx.input_ids`` and ``ctx.pos`` back after
  a stream synchronisation instead (one small device-to-host copy), and plans after it;
* reads, in ``apply_staged_writes`` (after the runner flushed the slot's tokens), the
  prompt tail a rollback continuation resumes from and the output a preempted request
  already has;
* maps the step's batch rows to slots for the core, which applies masks and biases on the
  device as with V1.

Speculative decoding (several rows per request) is refused by vLLM for custom logits
processors and is not handled here.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor

from .engine_args import EngineSteering
from .fed_read import FedRead, StagedFedRead
from .logits_processor import EXTRA_ARGS_KEY, kernel_path, load_vocab_index, request_info
from .steering_batch import FedRows, SteeringBatch
from .step_stats import StepStats
from .vocab_index import VocabIndex

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = logging.getLogger("greyelephant.control")


def _steering_args(params: SamplingParams | None) -> Any:
    extra = getattr(params, "extra_args", None) if params is not None else None
    return extra.get(EXTRA_ARGS_KEY) if extra else None


class SteeringLogitsProcessorV2(LogitsProcessor):
    """Per-request string-level ban + preferred-entity bias, runner V2 (see module doc)."""

    def __init__(self, vllm_config: VllmConfig, req_states, *, index: VocabIndex | None = None):
        if index is None:
            index = load_vocab_index(vllm_config)
        device = req_states.device
        logger.info("steering (runner V2): logit controls on %s via %s", device,
                    kernel_path(device))
        self.req_states = req_states
        self.batch = SteeringBatch(index, device)
        # the plan goes before the check only on steps planned from a staged read (set
        # per step in apply); after a read-back's wait, one upload after the check
        self.batch.early_upload = False
        self._slots: dict[int, Any] = {}  # slot -> the core's row
        self._outs: dict[int, list[int]] = {}  # slot -> output token ids seen
        self._pending: dict[int, tuple[Any, SamplingParams]] = {}  # slots to set up
        # per slot, as arrays: it holds a steered row (``_slots[slot]`` is not None); that
        # row's lane (-1: none), its output's length and newest token (-1: none) — what
        # the core would otherwise read from every row object each step (FedRows)
        n = max(int(getattr(req_states, "max_num_reqs", 1)), 1)
        self._steered = np.zeros(n, dtype=bool)
        self._lane = np.full(n, -1, dtype=np.int32)
        self._length = np.zeros(n, dtype=np.int64)
        self._last = np.full(n, -1, dtype=np.int64)
        self._fed: torch.Tensor | None = None  # host buffer of apply's read-back
        self._fed_np: np.ndarray | None = None
        # the read started in apply_staged_writes (see _stage_fed), None when none is
        # pending; it serves the step after it only
        self._reader: StagedFedRead | None = StagedFedRead()  # (None: it failed once)
        self._staged: FedRead | None = None
        self.staged_steps = 0  # steps planned from a staged read (/metrics, tests, logs)
        self.read_back_steps = 0  # steps that read the fed tokens after the wait
        self.stats = StepStats.for_this_process()  # (the server's /metrics reads them)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        args = _steering_args(sampling_params)
        if args is not None:
            EngineSteering.parse(args)

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        self._slots.pop(req_idx, None)
        self._outs.pop(req_idx, None)
        self._set_steered(req_idx, False)
        args = _steering_args(sampling_params)
        if not args:
            self._pending.pop(req_idx, None)
            return False
        self._pending[req_idx] = (args, sampling_params)
        return True

    def apply_staged_writes(self) -> None:
        """Set up the slots added this step, from the tokens the runner just flushed; then
        start reading the steered slots' fed tokens back (:meth:`_stage_fed`). The runner
        calls this once a step, before it queues the forward pass."""
        self._staged = None
        if self._pending:
            self._set_up_pending()
        if self._slots:
            self._stage_fed()

    def _stage_fed(self) -> None:
        """Queue, before the forward pass, the read of every steered slot's committed
        length (``total_len``) and newest committed token (``all_token_ids`` at
        ``total_len - 1``), which the previous step's ``post_update`` wrote on the device
        (:class:`.fed_read.StagedFedRead`: a gather, an asynchronous copy, an event).
        ``apply`` waits for that read only, which comes before the forward pass on the
        stream."""
        rs = self.req_states
        total_len = getattr(getattr(rs, "total_len", None), "gpu", None)
        if total_len is None or self._reader is None:
            return  # (apply reads the fed tokens back after a wait)
        try:
            self._staged = self._reader.start(rs.all_token_ids.gpu, total_len,
                                              self._steered.nonzero()[0], self._steered.size)
        except Exception:  # noqa: BLE001 - the read after the wait still serves every step
            logger.warning("steering (runner V2): the fed tokens cannot be read before the "
                           "forward pass here; reading them after it from now on",
                           exc_info=True)
            self._reader = None

    def _set_up_pending(self) -> None:
        rs = self.req_states
        for slot, (args, params) in self._pending.items():
            prompt_len = int(rs.prompt_len.np[slot])
            filled = int(rs.prefill_len.np[slot])
            history = rs.all_token_ids.gpu[slot, :filled].tolist()
            prompt, out = history[:prompt_len], history[prompt_len:]
            self._outs[slot] = out  # the output a preempted request already has
            self.batch.add(slot, args, out, request_info(params, prompt))
            row = self._slots[slot] = self.batch.rows.pop(slot, None)
            self._set_steered(slot, row is not None)
            self._lane[slot] = -1 if row is None else row.lane
            self._length[slot] = len(out)
            self._last[slot] = out[-1] if out else -1
        self._pending.clear()

    def _read_back(self, ids: torch.Tensor, pos: torch.Tensor, count: int) -> np.ndarray:
        """The rows' fed tokens and positions on the host, as an int64 [2, count] view of
        a buffer kept between steps (page-locked on a GPU): two copies into it, then one
        wait for the stream (the step's one synchronisation here)."""
        if self._fed is None or self._fed.shape[1] < count:
            size = max(64, 1 << (count - 1).bit_length())
            self._fed = torch.empty((2, size), dtype=torch.int64, pin_memory=ids.is_cuda)
            self._fed_np = self._fed.numpy()
        self._fed[0, :count].copy_(ids, non_blocking=ids.is_cuda)
        self._fed[1, :count].copy_(pos, non_blocking=ids.is_cuda)
        if ids.is_cuda:
            torch.cuda.current_stream(ids.device).synchronize()
        return self._fed_np[:, :count]

    def _set_steered(self, slot: int, steered: bool) -> None:
        if slot >= self._steered.size:  # (a slot past max_num_reqs: grow)
            n = max(slot + 1, 2 * self._steered.size)
            for name, fill in (("_steered", False), ("_lane", -1), ("_length", 0),
                               ("_last", -1)):
                old = getattr(self, name)
                grown = np.full(n, fill, dtype=old.dtype)
                grown[:old.size] = old
                setattr(self, name, grown)
        self._steered[slot] = steered

    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        """Append each steered row's fed token to its slot's output (when the row's
        position is the output's next), then apply the core to the batch, its rows
        mapped to their slots' core rows. The bookkeeping runs with no Python frame per
        row: the steered rows are found with numpy, their tokens and positions come from
        the read staged before the forward pass (:meth:`_staged_fed`) or, failing that,
        to the host with one wait (sliced, not gathered, when every row is steered:
        :meth:`_read_back`), and the appends and the row map are ``map`` calls."""
        staged, self._staged = self._staged, None  # (a read serves the step after it only)
        if not self._slots:
            return logits
        slots = ctx.idx_mapping_np
        n = slots.size
        try:
            rows = self._steered[slots].nonzero()[0]
        except IndexError:  # (a slot past every steered one: grow the flags)
            self._set_steered(int(slots.max()), False)
            rows = self._steered[slots].nonzero()[0]
        if not rows.size:
            return logits
        count = rows.size
        row_slots = slots if count == n else slots[rows]
        lengths = self._length[row_slots]
        fed = None if staged is None else self._staged_fed(staged, ctx, rows, row_slots,
                                                           lengths)
        # the plan goes before the check's wait only when nothing waited for the stream
        self.batch.early_upload = fed is not None
        if fed is not None:
            self.staged_steps += 1
            newest, grow = fed
        else:
            self.read_back_steps += 1
            ids, pos = ctx.input_ids, ctx.pos
            if count == n:  # every row steered: the first n entries as they are
                ids, pos = ids[:n], pos[:n]
            else:
                index = torch.as_tensor(rows, dtype=torch.long, device=ids.device)
                ids, pos = ids.index_select(0, index), pos.index_select(0, index)
            back = self._read_back(ids, pos, count)
            newest = back[0]
            # the token fed at this step is output token k: appended when it is the next
            grow = back[1] - self.req_states.prompt_len.np[row_slots] == lengths
        slot_list = row_slots.tolist()
        outs = list(map(self._outs.__getitem__, slot_list))
        tokens = newest.tolist()
        if np.count_nonzero(grow) == grow.size:
            deque(map(list.append, outs, tokens), maxlen=0)
            last = newest.copy()
        else:
            for m in grow.nonzero()[0].tolist():
                outs[m].append(tokens[m])
            last = np.where(grow, newest, self._last[row_slots])
        lengths += grow
        self._length[row_slots] = lengths
        self._last[row_slots] = last
        self.batch.rows = dict(zip(rows.tolist(), map(self._slots.__getitem__, slot_list),
                                   strict=True))
        try:
            return self.batch.apply(logits, FedRows(self._lane[row_slots], lengths, last))
        finally:
            self.batch.rows = {}
            self.stats.publish((*self.batch.counters(), self.staged_steps,
                                self.read_back_steps))

    def _staged_fed(self, staged: FedRead, ctx, rows: np.ndarray, row_slots: np.ndarray,
                    lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(each row's newest committed token, whether its output grows by it) from the
        read :meth:`_stage_fed` queued before the forward pass, after waiting for that
        read only; None when it cannot serve: a row's slot was not read, the step gives
        no host positions, or the positions disagree with the committed lengths.

        Without speculative decoding a row's fed token sits at position
        ``seq_lens_upper_bound_np[row] - 1``: output token ``k`` = that less the prompt's
        length. The output grows by it when ``k`` is the output's length (as with the
        device positions); the device must then hold exactly one output token more than
        the adapter has seen, the fed one, at ``total_len - 1``, and elsewhere exactly as
        many. Any other count (a position the host got wrong, a step the read missed)
        falls back to the read after the stream's wait."""
        seq_lens = getattr(ctx, "seq_lens_upper_bound_np", None)
        if seq_lens is None:
            return None
        at = staged.place[row_slots] if int(row_slots.max()) < staged.place.size else None
        if at is None or int(at.min()) < 0:
            return None
        staged.wait()  # (queued before the forward pass: it does not wait for it)
        host = staged.host
        prompt = self.req_states.prompt_len.np[row_slots].astype(np.int64)
        grow = np.asarray(seq_lens, dtype=np.int64)[rows] - 1 - prompt == lengths
        if not np.array_equal(host[0, at] - prompt, lengths + grow):
            return None
        return host[1, at].astype(np.int64), grow


def steered_output(processor: SteeringLogitsProcessorV2, slot: int) -> list[int]:
    """The output tokens the processor has seen for a slot (tests and debugging)."""
    return list(processor._outs.get(slot, []))

