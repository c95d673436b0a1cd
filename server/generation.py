"""Running one engine request: prompt tokens in, RequestOutputs out, with metrics.

Shared by chat, completions and the critique-revise loop so all three count tokens,
time-to-first-token and queue depth the same way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from vllm.exceptions import VLLMClientError, VLLMNotFoundError
from vllm.inputs import TokensPrompt
from vllm.v1.engine.exceptions import EngineDeadError
from vllm.outputs import RequestOutput
from vllm.sampling_params import SamplingParams

from .context import ServerContext
from .errors import APIError


@dataclass
class Choice:
    """One finished choice, accumulated from deltas or taken from a final output."""

    index: int
    text: str = ""
    token_ids: list[int] | None = None
    logprobs: list | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    rollbacks: int = 0
    rolled_back_tokens: int = 0

    def __post_init__(self):
        self.token_ids = self.token_ids or []
        self.logprobs = self.logprobs if self.logprobs is not None else []

    def add(self, d: Delta) -> None:
        self.text += d.text
        self.token_ids.extend(d.token_ids)
        if d.logprobs:
            self.logprobs.extend(d.logprobs)
        if d.finish_reason is not None:
            self.finish_reason, self.stop_reason = d.finish_reason, d.stop_reason
            self.rollbacks, self.rolled_back_tokens = d.rollbacks, d.rolled_back_tokens


@dataclass
class Delta:
    """New output of one choice (the fields of vLLM's CompletionOutput deltas, plus the
    rollback counts a steered choice reports with its finish)."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    rollbacks: int = 0
    rolled_back_tokens: int = 0


async def stream_outputs(ctx: ServerContext, route: str, prompt_ids: list[int],
                         params: SamplingParams, request_id: str, lora=None
                         ) -> AsyncIterator[RequestOutput]:
    """Yield the engine's RequestOutputs; maps engine validation errors to 400."""
    metrics = ctx.metrics
    started = time.perf_counter()
    first = True
    metrics.in_flight.inc()
    metrics.queue_depth.inc()
    metrics.prompt_tokens.inc(len(prompt_ids))
    try:
        async for out in ctx.engine.engine.generate(
            TokensPrompt(prompt_token_ids=prompt_ids), params, request_id, lora_request=lora
        ):
            if first:
                first = False
                metrics.queue_depth.dec()
                metrics.ttft.labels(route).observe(time.perf_counter() - started)
            metrics.completion_tokens.inc(sum(len(o.token_ids) for o in out.outputs))
            yield out
    except EngineDeadError as exc:
        raise APIError(503, f"the engine has stopped ({exc}); the server needs a restart",
                       code="engine_unavailable") from exc
    except VLLMNotFoundError as exc:
        raise APIError(404, str(exc)) from exc
    except (VLLMClientError, ValueError) as exc:  # request validation, e.g. a bad JSON schema
        raise APIError(400, str(exc), getattr(exc, "parameter", None)) from exc
    finally:
        if first:
            metrics.queue_depth.dec()
        metrics.in_flight.dec()


async def plain_deltas(ctx: ServerContext, route: str, prompt_ids: list[int],
                       params: SamplingParams, request_id: str, lora=None,
                       signal: int | None = None) -> AsyncIterator[Delta]:
    """Every choice's output as :class:`Delta` objects, from one engine request that
    serves all ``n`` choices. ``signal``: the steering signal token; a choice that ends
    with it was not steered (its spec failed in the engine): the request fails."""
    async for out in stream_outputs(ctx, route, prompt_ids, params, request_id, lora):
        for o in out.outputs:
            if signal is not None and o.finish_reason == "stop" and o.stop_reason == signal:
                raise steering_failed()
            yield Delta(o.index, o.text, list(o.token_ids), o.logprobs, o.finish_reason,
                        o.stop_reason)


def steering_failed() -> APIError:
    return APIError(500, "steering could not be applied to this request in the engine; it "
                         "was stopped rather than answered unsteered (see the server log)",
                    code="steering_failed")


async def collect(deltas: AsyncIterator[Delta]) -> list[Choice]:
    """Accumulate deltas into finished choices, by index."""
    choices: dict[int, Choice] = {}
    async for d in deltas:
        choices.setdefault(d.index, Choice(d.index)).add(d)
    return [choices[i] for i in sorted(choices)]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
