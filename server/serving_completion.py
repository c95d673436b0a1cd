"""/v1/completions (legacy text completions; a batch of prompts fans out to choices)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec

from .context import ServerContext
from .errors import APIError
from .generation import Choice, collect, usage
from .logprobs import completion_logprobs
from .protocol import CompletionRequest
from .sampling import build_sampling_params, is_structured
from .steering import plan_for

ROUTE = "completions"
_encode = msgspec.json.encode


def prompt_batches(tokenizer, prompt) -> list[tuple[str | None, list[int]]]:
    """Normalise the four OpenAI prompt shapes to [(text or None, token ids)]."""
    if isinstance(prompt, str):
        return [(prompt, tokenizer.encode(prompt))]
    if prompt and isinstance(prompt[0], int):
        return [(None, list(prompt))]
    out = []
    for item in prompt:
        if isinstance(item, str):
            out.append((item, tokenizer.encode(item)))
        else:
            if not item:
                raise APIError(400, "token prompts must not be empty", "prompt")
            out.append((None, list(item)))
    return out


class CompletionPrepared:
    def __init__(self, ctx: ServerContext, req: CompletionRequest, request_id: str):
        ctx.require_ready()
        if req.echo and req.logprobs is not None:
            raise APIError(400, "echo together with logprobs is not supported", "echo")
        self.model, self.lora = ctx.resolve_model(req.model)
        tokenizer = ctx.engine.tokenizer
        vocab = ctx.engine.info.vocab_size
        self.plans, self.prompts = [], []
        for text, ids in prompt_batches(tokenizer, req.prompt):
            if any(not 0 <= t < vocab for t in ids):
                raise APIError(400, "prompt contains token ids outside the vocabulary", "prompt")
            plan = plan_for(ctx, req.steering, req.model,
                            structured=is_structured(req.response_format))
            if plan.active and plan.uses_directive:
                text = plan.apply_directive_prompt(text if text is not None else tokenizer.decode(ids))
                ids = tokenizer.encode(text)
            self.plans.append(plan)
            self.prompts.append((text, ids))
        self.max_tokens = min(ctx.check_budget(len(ids), req.output_budget(), "max_tokens")
                              for _, ids in self.prompts)
        self.stream_live = req.stream and not self.plans[0].buffers_stream
        self.params = build_sampling_params(
            req, max_tokens=self.max_tokens, logprobs=req.n_logprobs(),
            response_format=req.response_format, vocab_size=vocab, stream=self.stream_live,
            extra_args=self.plans[0].extra_args(),
            extra_stop_token_ids=self.plans[0].stop_token_ids(),
        )
        self.request_id = request_id
        self.created = int(time.time())
        self.top_n = req.logprobs or 0

    def sub_id(self, k: int) -> str:
        return self.request_id if len(self.prompts) == 1 else f"{self.request_id}-{k}"


async def _final(ctx: ServerContext, p: CompletionPrepared, k: int) -> list[Choice]:
    text, ids = p.prompts[k]
    drafts = await collect(p.plans[k].generate(ctx, ROUTE, ids, p.params, p.sub_id(k), p.lora))
    messages = [{"role": "user", "content": text if text is not None
                 else ctx.engine.tokenizer.decode(ids)}]
    return await p.plans[k].finish(ctx, ROUTE, drafts, messages, p.params, p.lora, p.sub_id(k))


def _choice_body(ctx, req, p, k, c: Choice, base_index: int) -> dict:
    text = c.text
    if req.echo:
        prompt_text, ids = p.prompts[k]
        text = (prompt_text if prompt_text is not None else ctx.engine.tokenizer.decode(ids)) + text
    return {
        "index": base_index + c.index,
        "text": text,
        "logprobs": (completion_logprobs(ctx.engine.tokenizer, c.token_ids, c.logprobs, p.top_n)
                     if req.logprobs is not None else None),
        "finish_reason": c.finish_reason,
        "stop_reason": c.stop_reason,
    }


async def completion(ctx: ServerContext, req: CompletionRequest, request_id: str) -> dict:
    p = CompletionPrepared(ctx, req, request_id)
    results = await asyncio.gather(*(_final(ctx, p, k) for k in range(len(p.prompts))))
    choices, completion_tokens = [], 0
    for k, choice_list in enumerate(results):
        for c in choice_list:
            completion_tokens += len(c.token_ids)
            choices.append(_choice_body(ctx, req, p, k, c, k * req.n))
    body = {
        "id": request_id, "object": "text_completion", "created": p.created, "model": p.model,
        "choices": choices,
        "usage": usage(sum(len(ids) for _, ids in p.prompts), completion_tokens),
    }
    if p.plans[0].active:
        body["steering"] = _merged_report(p)
    return body


def _merged_report(p: CompletionPrepared) -> dict:
    if len(p.plans) == 1:
        return p.plans[0].report()
    return {"prompts": [plan.report() for plan in p.plans]}


async def completion_stream(ctx: ServerContext, req: CompletionRequest,
                            request_id: str) -> AsyncIterator[bytes]:
    p = CompletionPrepared(ctx, req, request_id)
    if len(p.prompts) > 1:
        raise APIError(400, "streaming supports one prompt per request", "prompt")
    return _completion_events(ctx, req, p)


def _chunk(p: CompletionPrepared, choices: list[dict], **extra) -> bytes:
    body = {"id": p.request_id, "object": "text_completion", "created": p.created,
            "model": p.model, "choices": choices, **extra}
    return b"data: " + _encode(body) + b"\n\n"


async def _completion_events(ctx: ServerContext, req: CompletionRequest,
                             p: CompletionPrepared) -> AsyncIterator[bytes]:
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    tokenizer = ctx.engine.tokenizer
    prompt_text, ids = p.prompts[0]
    completion_tokens = 0
    if req.echo:
        echo = prompt_text if prompt_text is not None else tokenizer.decode(ids)
        yield _chunk(p, [{"index": i, "text": echo, "logprobs": None, "finish_reason": None}
                         for i in range(req.n)])
    if p.stream_live:
        finals = [Choice(i) for i in range(req.n)]
        offsets = [0] * req.n
        async for o in p.plans[0].generate(ctx, ROUTE, ids, p.params, p.request_id, p.lora,
                                           stream=True):
            completion_tokens += len(o.token_ids)
            finals[o.index].add(o)
            lp = None
            if req.logprobs is not None:
                lp = completion_logprobs(tokenizer, o.token_ids, o.logprobs, p.top_n,
                                         offsets[o.index])
                offsets[o.index] += len(o.text)
            yield _chunk(p, [{"index": o.index, "text": o.text, "logprobs": lp,
                              "finish_reason": o.finish_reason,
                              **({"stop_reason": o.stop_reason} if o.finish_reason else {})}])
        p.plans[0].record(finals)
    else:
        for c in await _final(ctx, p, 0):
            completion_tokens += len(c.token_ids)
            body = _choice_body(ctx, req, p, 0, c, 0)
            if req.echo:
                body["text"] = c.text
            yield _chunk(p, [body])
    if p.plans[0].active:
        yield _chunk(p, [], steering=p.plans[0].report())
    if include_usage:
        yield _chunk(p, [], usage=usage(len(ids), completion_tokens))
    yield b"data: [DONE]\n\n"
