"""OpenAI request fields → vLLM SamplingParams."""

from __future__ import annotations

from typing import Any

from vllm.exceptions import VLLMClientError
from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

from .errors import APIError
from .protocol import ResponseFormat, SamplingFields


def is_structured(fmt: ResponseFormat | None) -> bool:
    """The request constrains its output to JSON."""
    return fmt is not None and fmt.type != "text"


def structured_outputs(fmt: ResponseFormat | None) -> StructuredOutputsParams | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return StructuredOutputsParams(json_object=True)
    return StructuredOutputsParams(json=fmt.json_schema.schema_)


def build_sampling_params(
    req: SamplingFields,
    *,
    max_tokens: int,
    logprobs: int | None,
    response_format: ResponseFormat | None,
    vocab_size: int,
    stream: bool,
    extra_args: dict[str, Any] | None = None,
    extra_stop_token_ids: list[int] = (),
) -> SamplingParams:
    logit_bias = None
    if req.logit_bias:
        logit_bias = {}
        for key, value in req.logit_bias.items():
            token = int(key)
            if not 0 <= token < vocab_size:
                raise APIError(400, f"logit_bias token id {token} is outside the vocabulary "
                                    f"(0..{vocab_size - 1})", "logit_bias")
            logit_bias[token] = value
    if req.stop_token_ids and any(not 0 <= t < vocab_size for t in req.stop_token_ids):
        raise APIError(400, "stop_token_ids contains ids outside the vocabulary", "stop_token_ids")
    if req.min_tokens > max_tokens:
        raise APIError(400, "min_tokens must not exceed max_tokens", "min_tokens")
    kwargs: dict[str, Any] = dict(
        n=req.n,
        max_tokens=max_tokens,
        min_tokens=req.min_tokens,
        stop=req.stop,
        stop_token_ids=[*(req.stop_token_ids or []), *extra_stop_token_ids] or None,
        ignore_eos=req.ignore_eos,
        logprobs=logprobs,
        logit_bias=logit_bias,
        seed=req.seed,
        skip_special_tokens=req.skip_special_tokens,
        structured_outputs=structured_outputs(response_format),
        extra_args=extra_args,
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
    )
    # Only pass what the client set, so vLLM's (and the model's generation config's)
    # defaults stay in force otherwise.
    for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty",
                 "frequency_penalty", "repetition_penalty"):
        value = getattr(req, name)
        if value is not None:
            kwargs[name] = value
    try:
        return SamplingParams(**kwargs)
    except (VLLMClientError, ValueError, TypeError) as exc:
        raise APIError(400, str(exc), getattr(exc, "parameter", None)) from exc
