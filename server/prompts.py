"""Rendering a conversation into the model's prompt token ids (the tokenizer's chat
template), shared by the chat route and the critique-revise loop."""

from __future__ import annotations

from .errors import APIError


def render_chat_prompt(tokenizer, messages: list[dict[str, str]],
                       add_generation_prompt: bool = True) -> list[int]:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # template errors are the request's fault (e.g. role order)
        raise APIError(400, f"could not apply the chat template: {exc}", "messages") from exc
    return tokenizer.encode(text, add_special_tokens=False)
