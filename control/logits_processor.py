"""vLLM V1 batch-level logits processor that enforces steering per request.

Register it with the engine (``logits_processors=[...]`` or the FQCN
``"greyelephant.control.logits_processor:SteeringLogitsProcessor"``) and give a request
``SamplingParams(extra_args={"steering": spec.engine_args()})``, i.e.::

    {"v": 1, "avoid": ["eiffel tower", ...], "prefer": ["louvre", ...], "prefer_bias": 4.0}

(folded surface forms, see :meth:`.spec.SteeringSpec.engine_args`; display forms are
accepted too and folded here). Requests without ``extra_args["steering"]`` cost nothing:
when no row of the batch is steered, :meth:`apply` returns at once.

Per request the spec is compiled once in the engine-core process (LRU keyed by the spec
inputs) against a vocabulary index built from ``model_config.tokenizer`` at start. Each
row's automaton state is advanced in :meth:`apply` (not in ``update_state``: with async
scheduling the last output token is still a ``-1`` placeholder there) from the live
``output_tok_ids`` list that vLLM hands over when the request joins the batch; tokens are
consumed up to the first placeholder, and a list that shrank (tokens discarded) is
replayed from the start. Mask and biases of the steered rows go through
``greyelephant.kernels.apply_logit_controls`` (or the torch reference in
:mod:`.logit_ops`), on the steered rows only.

vLLM 0.32 on GPUs defaults dense models to "model runner V2", whose logits-processor
interface differs; set ``VLLM_USE_V2_MODEL_RUNNER=0`` there. vLLM refuses custom logits
processors with speculative decoding.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    LogitsProcessor,
    MoveDirectionality,
)

from .ban_automaton import MAX_PREFER_BIAS, CompiledSteering, RowState, SteeringCache
from .logit_ops import apply_logit_controls
from .spec import ENGINE_ARGS_VERSION, MAX_SURFACE_FORMS
from .vocab_index import VocabIndex

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = logging.getLogger("greyelephant.control")

EXTRA_ARGS_KEY = "steering"
MAX_ENGINE_FORMS = MAX_SURFACE_FORMS
MAX_ENGINE_FORM_CHARS = 512


def parse_engine_args(obj: Any) -> tuple[list[str], list[str], float]:
    """Validate ``extra_args["steering"]``; return (avoid, prefer, prefer_bias).
    Raises ValueError (vLLM turns it into a 400 at the API boundary)."""
    if not isinstance(obj, dict):
        raise ValueError("extra_args.steering must be an object")
    unknown = set(obj) - {"v", "avoid", "prefer", "prefer_bias"}
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
    if len(lists[0]) + len(lists[1]) > MAX_ENGINE_FORMS:
        raise ValueError(f"extra_args.steering: more than {MAX_ENGINE_FORMS} forms")
    bias = obj.get("prefer_bias", 0.0)
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
        raise ValueError("extra_args.steering.prefer_bias must be a number")
    if not 0.0 <= bias <= MAX_PREFER_BIAS:
        raise ValueError(f"extra_args.steering.prefer_bias must be in [0, {MAX_PREFER_BIAS}]")
    return lists[0], lists[1], float(bias)


def _steering_args(params: SamplingParams | None) -> Any:
    extra = getattr(params, "extra_args", None) if params is not None else None
    return extra.get(EXTRA_ARGS_KEY) if extra else None


@dataclass
class _Row:
    compiled: CompiledSteering
    state: RowState
    out: list[int]  # vLLM's live output token list for the request
    consumed: int = 0


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
        self.device = torch.device(device)
        self.rows: dict[int, _Row] = {}
        self.cache = SteeringCache()
        self._index = index
        self._vllm_config = vllm_config
        self._warned = False
        if self._index is None:
            try:
                self._index = load_vocab_index(vllm_config)
                logger.info("steering: vocabulary index built in %.2f s",
                            self._index.build_seconds)
            except Exception:  # retried on the first steered request
                logger.exception("steering: could not build the vocabulary index yet")

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams):
        args = _steering_args(sampling_params)
        if args is not None:
            parse_engine_args(args)

    def is_argmax_invariant(self) -> bool:
        return False

    @property
    def index(self) -> VocabIndex:
        if self._index is None:
            self._index = load_vocab_index(self._vllm_config)
        return self._index

    # -- batch bookkeeping ---------------------------------------------------------------
    def _new_row(self, params: SamplingParams, out: list[int]) -> _Row | None:
        args = _steering_args(params)
        if not args:
            return None
        try:
            avoid, prefer, bias = parse_engine_args(args)
            compiled = self.cache.get(self.index, avoid, prefer, bias)
        except Exception:
            logger.exception("steering: request steering args rejected; row left unsteered")
            return None
        if not compiled.has_avoid and not compiled.has_prefer:
            return None
        return _Row(compiled, compiled.new_row(), out)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update:
            return
        rows = self.rows
        for index in batch_update.removed:
            rows.pop(index, None)
        for index, params, _prompt, out in batch_update.added:
            row = self._new_row(params, out)
            if row is None:
                rows.pop(index, None)
            else:
                rows[index] = row
        for a, b, direction in batch_update.moved:
            ra, rb = rows.pop(a, None), rows.pop(b, None)
            if ra is not None:
                rows[b] = ra
            if direction == MoveDirectionality.SWAP and rb is not None:
                rows[a] = rb

    # -- per step ------------------------------------------------------------------------
    def _catch_up(self, r: _Row) -> None:
        out = r.out
        n = len(out)
        if n < r.consumed:  # tokens were discarded: replay from scratch
            r.state = r.compiled.new_row()
            r.consumed = 0
        cs, st = r.compiled, r.state
        while r.consumed < n:
            tid = out[r.consumed]
            if tid < 0:  # async-scheduling placeholder, filled in before sampling
                break
            cs.advance(st, tid)
            r.consumed += 1
        if st.violated and not self._warned:
            self._warned = True
            logger.warning("steering: a banned form was emitted (a token was forced past the mask)")

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        b, v = logits.shape
        idx = sorted(i for i in self.rows if i < b)
        if not idx:
            return logits
        k = len(idx)
        n_words = (v + 31) // 32
        masks = np.zeros((k, n_words), dtype=np.int32)
        indptr = np.zeros(k + 1, dtype=np.int32)
        bias_ids: list[np.ndarray] = []
        bias_vals: list[np.ndarray] = []
        any_ban = False
        for j, i in enumerate(idx):
            r = self.rows[i]
            self._catch_up(r)
            cs, st = r.compiled, r.state
            if cs.has_avoid:
                words = cs.banned_words(st)
                w = min(n_words, words.size)
                masks[j, :w] = words[:w]
                any_ban = True
            ids, vals = cs.bias(st)
            indptr[j + 1] = indptr[j] + ids.size
            if ids.size:
                bias_ids.append(ids)
                bias_vals.append(vals)
        kw: dict[str, Any] = {}
        if any_ban:
            kw["banned_bitmask"] = self._to_device(masks)
        if bias_ids:
            kw["bias_indptr"] = self._to_device(indptr)
            kw["bias_token_ids"] = self._to_device(np.concatenate(bias_ids))
            kw["bias_values"] = self._to_device(np.concatenate(bias_vals))
        if not kw:
            return logits
        if k == b:
            return apply_logit_controls(logits, **kw)
        rows_t = torch.as_tensor(idx, dtype=torch.long).to(logits.device)
        sub = logits.index_select(0, rows_t)
        apply_logit_controls(sub, **kw)
        logits.index_copy_(0, rows_t, sub)
        return logits

    def _to_device(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(arr)
        return t if self.device.type == "cpu" else t.to(self.device)
