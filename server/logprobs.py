"""vLLM per-position logprob dicts → OpenAI chat / completions logprob objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _token_text(tokenizer, token_id: int, lp) -> str:
    text = getattr(lp, "decoded_token", None)
    return text if text is not None else tokenizer.decode([token_id])


def chat_logprobs(tokenizer, token_ids: Sequence[int], logprobs, top_n: int) -> list[dict[str, Any]]:
    content = []
    for token_id, position in zip(token_ids, logprobs or (), strict=False):
        chosen = position[token_id]
        text = _token_text(tokenizer, token_id, chosen)
        top = sorted(position.items(), key=lambda kv: kv[1].rank or 0)[:top_n] if top_n else []
        content.append({
            "token": text,
            "logprob": max(chosen.logprob, -9999.0),
            "bytes": list(text.encode("utf-8")),
            "top_logprobs": [
                {"token": (t := _token_text(tokenizer, tid, lp)), "logprob": max(lp.logprob, -9999.0),
                 "bytes": list(t.encode("utf-8"))}
                for tid, lp in top
            ],
        })
    return content


def completion_logprobs(tokenizer, token_ids: Sequence[int], logprobs, top_n: int,
                        text_offset: int = 0) -> dict[str, Any]:
    tokens, token_logprobs, tops, offsets = [], [], [], []
    offset = text_offset
    for token_id, position in zip(token_ids, logprobs or (), strict=False):
        chosen = position[token_id]
        text = _token_text(tokenizer, token_id, chosen)
        tokens.append(text)
        token_logprobs.append(max(chosen.logprob, -9999.0))
        offsets.append(offset)
        offset += len(text)
        top = sorted(position.items(), key=lambda kv: kv[1].rank or 0)[:top_n]
        tops.append({_token_text(tokenizer, tid, lp): max(lp.logprob, -9999.0) for tid, lp in top})
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops,
            "text_offset": offsets}
