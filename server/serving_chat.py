"""/v1/chat/completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec

from .context import ServerContext
from .generation import Choice, collect, usage
from .logprobs import chat_logprobs
from .prompts import render_chat_prompt
from .protocol import ChatCompletionRequest
from .sampling import build_sampling_params, is_structured
from .steering import SteeringPlan, plan_for

ROUTE = "chat"
_encode = msgspec.json.encode


def to_template_messages(req: ChatCompletionRequest) -> list[dict[str, str]]:
    return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in req.messages]


class ChatPrepared:
    """Everything decided before the engine runs."""

    def __init__(self, ctx: ServerContext, req: ChatCompletionRequest, request_id: str):
        ctx.require_ready()
        self.model, self.lora = ctx.resolve_model(req.model)
        self.plan: SteeringPlan = plan_for(ctx, req.steering, req.model,
                                           structured=is_structured(req.response_format))
        tokenizer = ctx.engine.tokenizer
        self.messages = self.plan.apply_directive(to_template_messages(req))
        self.prompt_ids = render_chat_prompt(tokenizer, self.messages, req.add_generation_prompt)
        self.max_tokens = ctx.check_budget(len(self.prompt_ids), req.output_budget(),
                                           "max_completion_tokens" if req.max_completion_tokens
                                           else "max_tokens")
        self.top_n = req.top_logprobs or 0
        self.stream_live = req.stream and not self.plan.buffers_stream
        self.params = build_sampling_params(
            req, max_tokens=self.max_tokens, logprobs=req.n_logprobs(),
            response_format=req.response_format, vocab_size=ctx.engine.info.vocab_size,
            stream=self.stream_live, extra_args=self.plan.extra_args(),
            extra_stop_token_ids=self.plan.stop_token_ids(),
        )
        self.request_id = request_id
        self.created = int(time.time())


async def chat_completion(ctx: ServerContext, req: ChatCompletionRequest, request_id: str) -> dict:
    p = ChatPrepared(ctx, req, request_id)
    choices = await _final_choices(ctx, p)
    tokenizer = ctx.engine.tokenizer
    body = {
        "id": request_id,
        "object": "chat.completion",
        "created": p.created,
        "model": p.model,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": ({"content": chat_logprobs(tokenizer, c.token_ids, c.logprobs, p.top_n)}
                             if req.logprobs else None),
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason,
            }
            for c in choices
        ],
        "usage": usage(len(p.prompt_ids), sum(len(c.token_ids) for c in choices)),
    }
    if p.plan.active:
        body["steering"] = p.plan.report()
    return body


async def _final_choices(ctx: ServerContext, p: ChatPrepared) -> list[Choice]:
    drafts = await collect(p.plan.generate(ctx, ROUTE, p.prompt_ids, p.params, p.request_id,
                                           p.lora))
    return await p.plan.finish(ctx, ROUTE, drafts, p.messages, p.params, p.lora, p.request_id)


async def chat_completion_stream(ctx: ServerContext, req: ChatCompletionRequest,
                                 request_id: str) -> AsyncIterator[bytes]:
    """SSE stream. Validation happens before the first byte, so errors are plain 4xx."""
    p = ChatPrepared(ctx, req, request_id)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return _chat_events(ctx, req, p, include_usage)


def _chunk(p: ChatPrepared, choices: list[dict], **extra) -> bytes:
    body = {"id": p.request_id, "object": "chat.completion.chunk", "created": p.created,
            "model": p.model, "choices": choices, **extra}
    return b"data: " + _encode(body) + b"\n\n"


async def _chat_events(ctx: ServerContext, req: ChatCompletionRequest, p: ChatPrepared,
                       include_usage: bool) -> AsyncIterator[bytes]:
    tokenizer = ctx.engine.tokenizer
    for i in range(req.n):
        yield _chunk(p, [{"index": i, "delta": {"role": "assistant", "content": ""},
                          "logprobs": None, "finish_reason": None}])
    completion_tokens = 0
    if p.stream_live:
        finals = [Choice(i) for i in range(req.n)]
        async for o in p.plan.generate(ctx, ROUTE, p.prompt_ids, p.params, p.request_id,
                                       p.lora, stream=True):
            completion_tokens += len(o.token_ids)
            finals[o.index].add(o)
            if not o.text and o.finish_reason is None and not req.logprobs:
                continue
            lp = ({"content": chat_logprobs(tokenizer, o.token_ids, o.logprobs, p.top_n)}
                  if req.logprobs else None)
            yield _chunk(p, [{"index": o.index, "delta": {"content": o.text} if o.text else {},
                              "logprobs": lp, "finish_reason": o.finish_reason,
                              **({"stop_reason": o.stop_reason} if o.finish_reason else {})}])
        p.plan.record(finals)
    else:
        # Critique-revise may replace a draft, so the final text is sent once it is settled.
        for c in await _final_choices(ctx, p):
            completion_tokens += len(c.token_ids)
            lp = ({"content": chat_logprobs(tokenizer, c.token_ids, c.logprobs, p.top_n)}
                  if req.logprobs else None)
            yield _chunk(p, [{"index": c.index, "delta": {"content": c.text}, "logprobs": lp,
                              "finish_reason": c.finish_reason, "stop_reason": c.stop_reason}])
    if p.plan.active:
        yield _chunk(p, [], steering=p.plan.report())
    if include_usage:
        yield _chunk(p, [], usage=usage(len(p.prompt_ids), completion_tokens))
    yield b"data: [DONE]\n\n"
