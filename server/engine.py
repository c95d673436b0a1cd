"""The in-process vLLM engine (AsyncLLM) and its lifecycle.

The HTTP server starts listening at once and answers 503 on model routes until the engine
is ready; the engine is built in a worker thread so liveness stays responsive during the
~25 s start. Engine arguments are vLLM's own (`AsyncEngineArgs`), passed through unchanged,
so tensor / pipeline / data parallelism, memory fractions and LoRA settings are vLLM's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from greyelephant.control.step_stats import STATS_DIR_ENV

logger = logging.getLogger("greyelephant.engine")

STEERING_PROCESSOR = "greyelephant.control.logits_processor:SteeringLogitsProcessor"
STEERING_PROCESSOR_V2 = "greyelephant.control.logits_processor_v2:SteeringLogitsProcessorV2"


@dataclass
class EngineInfo:
    model_path: str
    served_model_name: str
    max_model_len: int
    vocab_size: int
    dtype: str = ""  # the weights' dtype as the engine resolved it ("float32", "bfloat16")
    created: int = field(default_factory=lambda: int(time.time()))


class EngineHandle:
    """Owns the AsyncLLM; `state` is one of starting / ready / failed / stopped."""

    def __init__(self, engine_args: Any, served_model_name: str):
        self.engine_args = engine_args
        self.served_model_name = served_model_name
        self.state = "starting"
        self.error: str | None = None
        self.engine = None
        self.tokenizer = None
        self.info: EngineInfo | None = None
        self.vocab_index = None  # the steering vocabulary index (rollback bookkeeping)
        self.signal_token: int | None = None  # the processor's signal (rollback, failure)
        self.max_num_seqs: int | None = None  # sequences the engine runs at once
        self.on_ready = None  # called once the engine is up
        self._ready = asyncio.Event()
        # Called when the engine cannot start (serve_main stops the HTTP server then, so a
        # supervisor sees the process exit instead of a server answering 503 forever).
        self.on_failed = None
        # where the engine's processes write the steering step counters (/metrics reads
        # them: control/step_stats.py); made at start, removed at shutdown
        self._stats_dir: tempfile.TemporaryDirectory | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    async def start(self) -> None:
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.perf_counter()
        try:
            self._stats_dir = tempfile.TemporaryDirectory(prefix="greyelephant-steering-")
            os.environ[STATS_DIR_ENV] = self._stats_dir.name  # (the engine inherits it)
            self.engine = await asyncio.to_thread(
                AsyncLLM.from_engine_args,
                self.engine_args,
                usage_context=UsageContext.OPENAI_API_SERVER,
            )
            self.tokenizer = self.engine.get_tokenizer()
            model_config = self.engine.model_config
            self.info = EngineInfo(
                model_path=model_config.model,
                served_model_name=self.served_model_name,
                max_model_len=model_config.max_model_len,
                vocab_size=model_config.get_vocab_size(),
                dtype=str(model_config.dtype).removeprefix("torch."),
            )
            self.vocab_index, self.signal_token = await asyncio.to_thread(
                _steering_tables, self.tokenizer, self.info.vocab_size)
            self.max_num_seqs = int(self.engine.vllm_config.scheduler_config.max_num_seqs)
            self.state = "ready"
            if self.on_ready is not None:
                self.on_ready()
            logger.info("engine ready in %.1f s", time.perf_counter() - started)
        except Exception as exc:  # surfaced through /ready and the 503 message
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("engine failed to start")
            if self.on_failed is not None:
                self.on_failed()
        finally:
            self._ready.set()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        await asyncio.wait_for(self._ready.wait(), timeout)
        return self.ready

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
        if self._stats_dir is not None:
            self._stats_dir.cleanup()
            self._stats_dir = None
        self.state = "stopped"


def _steering_tables(tokenizer, vocab_size: int):
    """The vocabulary index the engine's processor also builds (this process follows
    rollback-steered choices with it) and the rollback signal token."""
    from greyelephant.control.rollback import signal_token_for
    from greyelephant.control.vocab_index import vocab_index_for

    hf = getattr(tokenizer, "tokenizer", tokenizer)  # vLLM may wrap the HF tokenizer
    index = vocab_index_for(hf, max(len(hf), vocab_size))
    return index, signal_token_for(hf, vocab_size)


def build_engine_args(args: Any, model_path: str) -> Any:
    """vLLM AsyncEngineArgs from the parsed CLI namespace, with the model path resolved
    and the steering logits processor registered for the model runner that will run:
    ``--model-runner v1|v2`` pins it; ``auto`` takes vLLM's own choice (V2 on GPUs for
    dense models, V1 on CPU) and registers the matching adapter."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    args.model = model_path
    if getattr(args, "tokenizer", None) is None:
        args.tokenizer = model_path
    engine_args = AsyncEngineArgs.from_cli_args(args)
    runner = choose_model_runner(getattr(args, "model_runner", "auto"), engine_args)
    os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "1" if runner == "v2" else "0"
    ours = STEERING_PROCESSOR_V2 if runner == "v2" else STEERING_PROCESSOR
    processors = [p for p in (engine_args.logits_processors or [])
                  if p not in (STEERING_PROCESSOR, STEERING_PROCESSOR_V2)]
    engine_args.logits_processors = [*processors, ours]  # steering is never served without
    logger.info("model runner %s; steering processor %s", runner, ours)
    return engine_args


def choose_model_runner(requested: str, engine_args: Any) -> str:
    if requested in ("v1", "v2"):
        return requested
    env = os.environ.get("VLLM_USE_V2_MODEL_RUNNER")
    if env is not None:  # the operator chose through vLLM's own variable
        return "v2" if env.strip().lower() in ("1", "true", "yes") else "v1"
    from vllm.platforms import current_platform

    if not current_platform.is_cuda_alike():
        return "v1"
    try:
        from vllm.usage.usage_lib import UsageContext

        config = engine_args.create_engine_config(UsageContext.OPENAI_API_SERVER)
        return "v2" if config.use_v2_model_runner else "v1"
    except Exception:  # noqa: BLE001 - the engine reports config errors itself later
        logger.exception("could not tell which model runner vLLM picks; using V1")
        return "v1"
