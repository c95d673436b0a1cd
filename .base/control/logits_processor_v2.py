"""The steering logits processor for vLLM's model runner V2 (vLLM 0.32's default on GPUs
for dense models), over the same :class:`.steering_batch.SteeringBatch` core as the V1
adapter (:mod:`.logits_processor`).

Runner V2's interface (``vllm/v1/worker/gpu/sample/logits_processor/``) differs from V1's:
requests live in persistent *slots* (``add_request(slot, params)``), the token history
stays on the device, and ``apply(logits, ctx)`` gets the step's layout (``ctx.
idx_mapping_np``: batch row → slot; ``ctx.input_ids``: the token fed at each row, i.e.
the newest output token of a decoding row; ``ctx.pos``: its position). So this adapter

* keeps, per steered slot, the output token list the core advances over, appending each
  step's ``input_ids[row]`` when the row's position moved past the prompt (one small
  device-to-host copy of the steered rows' tokens and positions per step);
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
from .logits_processor import EXTRA_ARGS_KEY, kernel_path, load_vocab_index, request_info
from .steering_batch import SteeringBatch
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
        self._slots: dict[int, Any] = {}  # slot -> the core's row
        self._outs: dict[int, list[int]] = {}  # slot -> output token ids seen
        self._pending: dict[int, tuple[Any, SamplingParams]] = {}  # slots to set up
        # per slot: it holds a steered row (``_slots[slot]`` is not None), as an array
        self._steered = np.zeros(max(int(getattr(req_states, "max_num_reqs", 1)), 1),
                                 dtype=bool)
        self._fed: torch.Tensor | None = None  # host buffer of apply's read-back
        self._fed_np: np.ndarray | None = None

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
        """Set up the slots added this step, from the tokens the runner just flushed."""
        if not self._pending:
            return
        rs = self.req_states
        for slot, (args, params) in self._pending.items():
            prompt_len = int(rs.prompt_len.np[slot])
            filled = int(rs.prefill_len.np[slot])
            history = rs.all_token_ids.gpu[slot, :filled].tolist()
            prompt, out = history[:prompt_len], history[prompt_len:]
            self._outs[slot] = out  # the output a preempted request already has
            self.batch.add(slot, args, out, request_info(params, prompt))
            self._slots[slot] = self.batch.rows.pop(slot, None)
            self._set_steered(slot, self._slots[slot] is not None)
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
            grown = np.zeros(max(slot + 1, 2 * self._steered.size), dtype=bool)
            grown[:self._steered.size] = self._steered
            self._steered = grown
        self._steered[slot] = steered

    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        """Append each steered row's fed token to its slot's output (when the row's
        position is the output's next), then apply the core to the batch, its rows
        mapped to their slots' core rows. The bookkeeping runs with no Python frame per
        row: the steered rows are found with numpy, their tokens and positions come to
        the host with one wait (sliced, not gathered, when every row is steered:
        :meth:`_read_back`), and the appends and the row map are ``map`` calls."""
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
        ids, pos = ctx.input_ids, ctx.pos
        count = rows.size
        if count == n:  # every row steered: the first n entries as they are
            ids, pos = ids[:n], pos[:n]
            row_slots = slots
        else:
            index = torch.as_tensor(rows, dtype=torch.long, device=ids.device)
            ids, pos = ids.index_select(0, index), pos.index_select(0, index)
            row_slots = slots[rows]
        fed = self._read_back(ids, pos, count)
        slot_list = row_slots.tolist()
        outs = list(map(self._outs.__getitem__, slot_list))
        # the token fed at this step is output token k: appended when it is the next one
        k = fed[1] - self.req_states.prompt_len.np[row_slots]
        lengths = np.fromiter(map(len, outs), dtype=np.int64, count=len(outs))
        grow = k == lengths
        tokens = fed[0].tolist()
        if np.count_nonzero(grow) == grow.size:
            deque(map(list.append, outs, tokens), maxlen=0)
        else:
            for m in grow.nonzero()[0].tolist():
                outs[m].append(tokens[m])
        self.batch.rows = dict(zip(rows.tolist(), map(self._slots.__getitem__, slot_list),
                                   strict=True))
        try:
            return self.batch.apply(logits)
        finally:
            self.batch.rows = {}


def steered_output(processor: SteeringLogitsProcessorV2, slot: int) -> list[int]:
    """The output tokens the processor has seen for a slot (tests and debugging)."""
    return list(processor._outs.get(slot, []))

