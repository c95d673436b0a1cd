"""Stand-ins for the few vLLM names the steering adapters import, for benchmarks run on a
machine without vLLM.

The lent GPU machine has torch, Triton and numpy but no vLLM, and vLLM cannot be carried
there. The adapters (``control/logits_processor.py``, ``control/logits_processor_v2.py``)
use vLLM only for their base classes, ``SamplingParams``' attributes and V1's batch-update
types; their work is the steering core's and torch's. :func:`install_if_missing` puts
minimal stand-ins for those names into ``sys.modules`` when ``vllm`` cannot be imported,
so that a benchmark can drive an adapter on that machine's GPU; with vLLM installed it
does nothing. Only benchmarks call it (never the server or the tests, which run the real
vLLM), and a benchmark that did says so in its output.
"""

from __future__ import annotations

import enum
import importlib.util
import sys
import types
from dataclasses import dataclass, field
from typing import Any


def install_if_missing() -> bool:
    """Install the stand-ins unless vLLM can be imported; returns whether it did."""
    if "vllm" in sys.modules or importlib.util.find_spec("vllm") is not None:
        return False
    modules = {name: types.ModuleType(name) for name in (
        "vllm", "vllm.v1", "vllm.v1.sample", "vllm.v1.sample.logits_processor",
        "vllm.v1.worker", "vllm.v1.worker.gpu", "vllm.v1.worker.gpu.sample",
        "vllm.v1.worker.gpu.sample.logits_processor")}
    modules["vllm"].SamplingParams = SamplingParams
    modules["vllm"].GREYELEPHANT_STANDIN = True
    v1 = modules["vllm.v1.sample.logits_processor"]
    v1.BatchUpdate, v1.LogitsProcessor, v1.MoveDirectionality = (
        BatchUpdate, V1LogitsProcessor, MoveDirectionality)
    modules["vllm.v1.worker.gpu.sample.logits_processor"].LogitsProcessor = V2LogitsProcessor
    for name, module in modules.items():
        module.__greyelephant_standin__ = True
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    return True


def standing_in() -> bool:
    """Whether the imported ``vllm`` is this module's stand-in."""
    return bool(getattr(sys.modules.get("vllm"), "GREYELEPHANT_STANDIN", False))


class SamplingParams:
    """The attributes of ``vllm.SamplingParams`` the adapters read."""

    def __init__(self, *, temperature: float = 1.0, max_tokens: int | None = 16,
                 stop_token_ids: list[int] | None = None,
                 extra_args: dict[str, Any] | None = None,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0):
        self.temperature, self.max_tokens = temperature, max_tokens
        self.stop_token_ids = list(stop_token_ids or ())
        self.extra_args = extra_args
        self.presence_penalty, self.frequency_penalty = presence_penalty, frequency_penalty
        self._all_stop_token_ids = set(self.stop_token_ids)

    @property
    def all_stop_token_ids(self) -> set[int]:
        return self._all_stop_token_ids


class MoveDirectionality(enum.Enum):
    UNIDIRECTIONAL = enum.auto()
    SWAP = enum.auto()


@dataclass
class BatchUpdate:
    batch_size: int
    removed: list = field(default_factory=list)
    moved: list = field(default_factory=list)
    added: list = field(default_factory=list)


class V1LogitsProcessor:
    """Base of runner V1's logits processors (the stand-in: no behaviour)."""


class V2LogitsProcessor:
    """Base of runner V2's logits processors (the stand-in: no behaviour)."""
