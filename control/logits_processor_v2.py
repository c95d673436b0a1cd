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
from typing import TYPE_CHECKING, Any

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

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        args = _steering_args(sampling_params)
        if args is not None:
            EngineSteering.parse(args)

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        self._slots.pop(req_idx, None)
        self._outs.pop(req_idx, None)
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
        self._pending.clear()

    def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        if not self._slots:
            return logits
        slots = ctx.idx_mapping_np
        rows = [r for r, s in enumerate(slots.tolist()) if self._slots.get(s) is not None]
        if not rows:
            return logits
        index = torch.as_tensor(rows, dtype=torch.long, device=ctx.input_ids.device)
        tokens = ctx.input_ids.index_select(0, index).tolist()
        positions = ctx.pos.index_select(0, index).tolist()
        prompt_len = self.req_states.prompt_len.np
        step_rows = {}
        for r, t, p in zip(rows, tokens, positions, strict=True):
            slot = int(slots[r])
            out = self._outs[slot]
            k = p - int(prompt_len[slot])  # the token fed at this step is output token k
            if k == len(out):
                out.append(int(t))
            step_rows[r] = self._slots[slot]
        self.batch.rows = step_rows
        try:
            return self.batch.apply(logits)
        finally:
            self.batch.rows = {}


def steered_output(processor: SteeringLogitsProcessorV2, slot: int) -> list[int]:
    """The output tokens the processor has seen for a slot (tests and debugging)."""
    return list(processor._outs.get(slot, []))

