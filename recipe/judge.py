"""The generative judge (GenRM, Mahan et al. 2024): the served model reads the principle,
the conversation and two responses, writes a rationale, then an indicator A or B.

The output is constrained with structured outputs (``response_format`` = JSON schema
``{"rationale": string ≤ 400 chars, "verdict": "A" | "B"}``, rationale first), so it always
parses. Each pair is judged twice with the responses swapped: a consistent verdict is a
label, an inconsistent one (position bias) is an abstention.

``JudgeClient.label(pair)`` → "A" | "B" | None, in the pair's own A/B order.

**A vote it has earned.** Before a judge labels anything it is measured on held-out human
gold (``accuracy``): how often it decides (the same verdict in both orders) and how often
it is right when it does. ``judge_gate`` turns that into its vote: a one-sided exact
binomial test of the decided verdicts against chance (H0: right with probability 0.5;
``binomial_tail`` sums ``math.comb`` terms), and a **vote weight**, the log-odds of the
one-sided lower confidence bound (Clopper–Pearson, level ``alpha``) of its accuracy when
it decides. The bound is above 0.5 exactly when the test rejects chance at ``alpha``, so a
judge that does not beat chance with confidence gets weight 0: no vote, no veto. The same
gate measures the rule (``labels.py``); gold labels are human and settle a pair outright.
"""

from __future__ import annotations

import asyncio
import json
import math
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
        "decided_correct": sum(lab == g for lab, g in decided),
        "accuracy_when_decided": (round(sum(lab == g for lab, g in decided) / len(decided), 4)
                                  if decided else 0.0),
        "abstain_rate": round(1 - len(decided) / n, 4) if n else 0.0,
        "single_order_accuracy": round(sum(single) / len(single), 4) if single else 0.0,
        "says_A_rate": round(sum(v == "A" for j in judgements for v in j.verdicts)
                             / (2 * n), 4) if n else 0.0,
    }


ALPHA = 0.05


def binomial_tail(k: int, n: int, p: float = 0.5) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly term by term (``math.comb``)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.5:  # exact rational: no rounding in the terms
        return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n
    return min(1.0, sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i)
                        for i in range(k, n + 1)))


def accuracy_lower_bound(k: int, n: int, alpha: float = ALPHA) -> float:
    """One-sided (1 - alpha) lower confidence bound of a proportion, k right of n
    (Clopper–Pearson): the p with P(X >= k | p) = alpha, found by bisection on the exact
    tail. 0 when nothing was right (or nothing decided)."""
    if n <= 0 or k <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if binomial_tail(k, n, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def vote_weight(k: int, n: int, alpha: float = ALPHA) -> float:
    """The vote of a source that was right k times of the n times it decided: the log-odds
    of its accuracy's lower confidence bound, or 0 when that bound is not above chance
    (the binomial test does not reject 0.5 at ``alpha``)."""
    bound = accuracy_lower_bound(k, n, alpha)
    if bound <= 0.5 or binomial_tail(k, n) >= alpha:
        return 0.0
    bound = min(bound, 1 - 1e-6)
    return math.log(bound / (1 - bound))


def judge_gate(metrics: Mapping[str, Any] | None, alpha: float = ALPHA) -> dict[str, Any]:
    """A source's measured accuracy on held-out gold (``accuracy``'s dict: ``pairs``,
    ``decided``, ``decided_correct``) → decided rate, accuracy when decided, the binomial
    p-value against chance, whether it passes at ``alpha``, and its vote weight."""
    if not metrics:
        return {"measured": False, "pairs": 0, "decided": 0, "decided_correct": 0,
                "decided_rate": 0.0, "accuracy_when_decided": 0.0, "p_value": 1.0,
                "alpha": alpha, "passes": False, "accuracy_lower_bound": 0.0, "weight": 0.0}
    n, k, pairs = metrics["decided"], metrics.get("decided_correct"), metrics["pairs"]
    if k is None:  # measured before decided_correct was recorded
        k = round(metrics["accuracy_when_decided"] * n)
    p_value = binomial_tail(k, n)
    weight = vote_weight(k, n, alpha)
    return {"measured": True, "pairs": pairs, "decided": n, "decided_correct": k,
            "decided_rate": round(n / pairs, 4) if pairs else 0.0,
            "accuracy_when_decided": round(k / n, 4) if n else 0.0,
            "p_value": float(f"{p_value:.4g}"), "alpha": alpha,
            "passes": p_value < alpha and weight > 0,
            "accuracy_lower_bound": round(accuracy_lower_bound(k, n, alpha), 4),
            "weight": round(weight, 4)}


def better_judge(zero_shot: Mapping[str, Any] | None, star: Mapping[str, Any] | None,
                 alpha: float = ALPHA) -> str:
    """"star" when the STaR-trained judge beats the zero-shot one on held-out gold: it passes
    its gate (beats chance with confidence) and, when the zero-shot judge passes too, has
    the higher lower confidence bound of its accuracy when deciding. Otherwise "zero_shot"
    (the untrained judge; with no vote when it fails its own gate)."""
    z, s = judge_gate(zero_shot, alpha), judge_gate(star, alpha)
    if not s["passes"]:
        return "zero_shot"
    if not z["passes"] or s["accuracy_lower_bound"] > z["accuracy_lower_bound"]:
        return "star"
    return "zero_shot"


async def judge_gold(client: ChatClient, records: Sequence[Mapping[str, Any]],
                     model: str | None = None) -> tuple[list[Judgement], dict[str, Any]]:
    judge = JudgeClient(client, model)
    judgements = await asyncio.gather(*(
        judge.label(r["principle"], r["messages"], r["response_a"], r["response_b"])
        for r in records))
    return list(judgements), accuracy(judgements, [r["label"] for r in records])
