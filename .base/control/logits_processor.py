"""vLLM V1 batch-level logits processor that enforces steering per request.

Register it with the engine (``logits_processors=[...]`` or the FQCN
``"greyelephant.control.logits_processor:SteeringLogitsProcessor"``) and give a request
``SamplingParams(extra_args={"steering": spec.engine_steering(...).to_extra_args()})``
(the typed engine form of :mod:`.engine_args`). Requests without
``extra_args["steering"]`` cost nothing: when no row of the batch is steered, :meth:`apply`
returns at once.

This is a thin adapter over :class:`.steering_batch.SteeringBatch`. Per request the spec
is compiled once in the engine-core process (LRU keyed by the spec inputs) against a
vocabulary index built from ``model_config.tokenizer`` when the engine starts. Each row's
automaton state is advanced in :meth:`apply` — not in ``update_state``: with async
scheduling the last output token is still a ``-1`` placeholder there — from the live
``output_tok_ids`` list that vLLM hands over when the request joins the batch.

This is the V1 model runner's interface; vLLM 0.32's "model runner V2" (its default on
GPUs for dense models) has its own, served by :mod:`.logits_processor_v2` over the same
core (the server registers the one matching the runner, ``--model-runner``). vLLM refuses
custom logits processors with speculative decoding.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    LogitsProcessor,
    MoveDirectionality,
)

from .engine_args import EngineSteering
from .steering_batch import RequestInfo, SteeringBatch
from .vocab_index import VocabIndex

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = logging.getLogger("greyelephant.control")

EXTRA_ARGS_KEY = "steering"

__all__ = ["EXTRA_ARGS_KEY", "SteeringLogitsProcessor", "load_vocab_index", "request_info"]


def _steering_args(params: SamplingParams | None) -> Any:
    extra = getattr(params, "extra_args", None) if params is not None else None
    return extra.get(EXTRA_ARGS_KEY) if extra else None


def request_info(params: SamplingParams, prompt: list[int] | None) -> RequestInfo:
    """What a steered row needs of its request's sampling parameters."""
    return RequestInfo(
        stop_ids=frozenset(int(t) for t in (getattr(params, "all_stop_token_ids", None) or ())),
        max_tokens=params.max_tokens,
        temperature=float(params.temperature),
        presence_penalty=float(params.presence_penalty or 0.0),
        frequency_penalty=float(params.frequency_penalty or 0.0),
        prompt=prompt or (),
    )


def kernel_path(device: torch.device | str) -> str:
    """Load the logit-controls path for ``device`` now (raises if it cannot load) and name
    it: Triton kernels on CUDA, the vectorised torch path elsewhere."""
    if torch.device(device).type == "cuda":
        from greyelephant.kernels import logit_controls_triton  # noqa: F401

        return "triton"
    return "torch"


def load_vocab_index(vllm_config: VllmConfig) -> VocabIndex:
    from transformers import AutoTokenizer

    mc = vllm_config.model_config
    tok = AutoTokenizer.from_pretrained(
        mc.tokenizer, revision=getattr(mc, "tokenizer_revision", None),
        trust_remote_code=bool(getattr(mc, "trust_remote_code", False)),
    )
    return VocabIndex.from_tokenizer(tok, vocab_size=max(len(tok), mc.get_vocab_size()))


class SteeringLogitsProcessor(LogitsProcessor):
    """Per-request string-level ban + preferred-entity bias (see module docstring)."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool,
                 *, index: VocabIndex | None = None):
        """Built once per engine, in the engine's process. Everything steering needs is
        checked here, so that a problem stops the engine at start-up instead of leaving a
        request unsteered later: the vocabulary index is built, and the kernel path for
        ``device`` is loaded (Triton on CUDA, the torch path otherwise) and logged once."""
        if index is None:
            index = load_vocab_index(vllm_config)
            logger.info("steering: vocabulary index built in %.2f s", index.build_seconds)
        logger.info("steering: logit controls on %s via %s", device, kernel_path(device))
        self.batch = SteeringBatch(index, device)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams):
        args = _steering_args(sampling_params)
        if args is not None:
            EngineSteering.parse(args)

    def is_argmax_invariant(self) -> bool:
        return False

    @property
    def rows(self):
        return self.batch.rows

    @property
    def index(self) -> VocabIndex:
        return self.batch.index

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update:
            return
        batch = self.batch
        for i in batch_update.removed:
            batch.remove(i)
        for i, params, prompt, out in batch_update.added:
            args = _steering_args(params)
            batch.add(i, args, out, request_info(params, prompt) if args else None)
        for a, b, direction in batch_update.moved:
            batch.move(a, b, direction == MoveDirectionality.SWAP)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.batch.apply(logits)
