"""The generative judge (GenRM, Mahan et al. 2024): the served model reads the principle,
the conversation and two responses, writes a rationale, then an indicator A or B.

The output is constrained with structured outputs (``response_format`` = JSON schema
``{"rationale": string ≤ 400 chars, "verdict": "A" | "B"}``, rationale first), so it always
parses. Each pair is judged twice with the responses swapped: a consistent verdict is a
label, an inconsistent one (position bias) is an abstention.

``JudgeClient.label(pair)`` → "A" | "B" | None, in the pair's own A/B order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .common import ChatClient, text_of

RATIONALE_MAX_CHARS = 400
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "maxLength": RATIONALE_MAX_CHARS},
        "verdict": {"type": "string", "enum": ["A", "B"]},
    },
    "required": ["rationale", "verdict"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema",
                   "json_schema": {"name": "judgement", "schema": VERDICT_SCHEMA, "strict": True}}

JUDGE_SYSTEM = ("You are a careful judge of assistant replies. You compare two replies to the "
                "same conversation against a principle.")
JUDGE_TEMPLATE = (
    "Principle: {principle}\n\n"
    "Conversation:\n{conversation}\n\n"
    "Response A:\n{a}\n\n"
    "Response B:\n{b}\n\n"
    "Which response follows the principle better while staying helpful and fluent? A response "
    "that names the forbidden entity, in any form, breaks the principle. First write a short "
    "rationale, then the verdict: A or B."
)


def conversation_text(messages: Sequence[Mapping[str, Any]], limit: int = 2000) -> str:
    lines = [f"{m['role']}: {m['content']}" for m in messages if m.get("role") != "system"]
    return "\n".join(lines)[-limit:]


def judge_messages(principle: str, messages: Sequence[Mapping[str, Any]], a: str, b: str
                   ) -> list[dict[str, str]]:
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_TEMPLATE.format(
                principle=principle, conversation=conversation_text(messages), a=a, b=b)}]


def judgement_text(rationale: str, verdict: str) -> str:
    """The judge's target output (what SFT teaches): the JSON the schema constrains to."""
    return json.dumps({"rationale": rationale[:RATIONALE_MAX_CHARS], "verdict": verdict},
                      ensure_ascii=False)


def parse_judgement(text: str) -> tuple[str, str | None]:
    """(rationale, verdict or None). Tolerates a truncated rationale (max_tokens)."""
    try:
        data = json.loads(text)
    except ValueError:
        return text, None
    verdict = data.get("verdict") if isinstance(data, dict) else None
    return str(data.get("rationale", "")), verdict if verdict in ("A", "B") else None


def flip(verdict: str | None) -> str | None:
    return {"A": "B", "B": "A"}.get(verdict) if verdict else None


def combine_orders(first: str | None, swapped: str | None) -> str | None:
    """``first`` judged (A, B); ``swapped`` judged (B, A). Consistent → label, else None."""
    if first is None or swapped is None:
        return None
    return first if first == flip(swapped) else None


@dataclass
class Judgement:
    label: str | None  # in the pair's A/B order; None = abstain
    verdicts: tuple[str | None, str | None]  # (A,B) order, (B,A) order as answered
    rationales: tuple[str, str]


class JudgeClient:
    def __init__(self, client: ChatClient, model: str | None = None, max_tokens: int = 128,
                 temperature: float = 0.0):
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature

    async def ask(self, principle: str, messages, a: str, b: str, *, temperature: float | None = None,
                  seed: int | None = None) -> tuple[str, str | None]:
        body: dict[str, Any] = {
            "messages": judge_messages(principle, messages, a, b),
            "temperature": self.temperature if temperature is None else temperature,
            "max_tokens": self.max_tokens, "response_format": RESPONSE_FORMAT,
        }
        if seed is not None:
            body["seed"] = seed
        if self.model:
            body["model"] = self.model
        return parse_judgement(text_of(await self.client.chat(body)))

    async def label(self, principle: str, messages, a: str, b: str) -> Judgement:
        (r1, v1), (r2, v2) = await asyncio.gather(self.ask(principle, messages, a, b),
                                                  self.ask(principle, messages, b, a))
        return Judgement(combine_orders(v1, v2), (v1, v2), (r1, r2))


def accuracy(judgements: Sequence[Judgement], gold: Sequence[str]) -> dict[str, float | int]:
    """Accuracy against gold labels: over all pairs (abstain = wrong), over decided pairs,
    and per single order (each ordered verdict counted alone, as a non-swapped judge)."""
    n = len(gold)
    decided = [(j.label, g) for j, g in zip(judgements, gold, strict=True) if j.label]
    single = [(v == g) for j, g in zip(judgements, gold, strict=True)
              for v in (j.verdicts[0], flip(j.verdicts[1]))]
    return {
        "pairs": n,
        "accuracy": round(sum(lab == g for lab, g in decided) / n, 4) if n else 0.0,
        "decided": len(decided),
        "accuracy_when_decided": (round(sum(lab == g for lab, g in decided) / len(decided), 4)
                                  if decided else 0.0),
        "abstain_rate": round(1 - len(decided) / n, 4) if n else 0.0,
        "single_order_accuracy": round(sum(single) / len(single), 4) if single else 0.0,
        "says_A_rate": round(sum(v == "A" for j in judgements for v in j.verdicts)
                             / (2 * n), 4) if n else 0.0,
    }


async def judge_gold(client: ChatClient, records: Sequence[Mapping[str, Any]],
                     model: str | None = None) -> tuple[list[Judgement], dict[str, Any]]:
    judge = JudgeClient(client, model)
    judgements = await asyncio.gather(*(
        judge.label(r["principle"], r["messages"], r["response_a"], r["response_b"])
        for r in records))
    return list(judgements), accuracy(judgements, [r["label"] for r in records])
