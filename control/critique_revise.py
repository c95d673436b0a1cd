"""Critique-revise at inference time (Constitutional AI / DPF's revision step):
draft → detect → critique-and-revise prompt → revision, at most ``max_revisions`` times,
and not at all when the draft is clean.

Independent of the server: the caller passes ``generate(messages) -> str`` (which the
server runs with the logits strategy active, so a revision cannot name an avoided
entity) and the detector.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .detector import Detector, Span
from .directive import describe

CRITIQUE_TEMPLATE = (
    "Critique: the draft mentions {found}, which the principle forbids: \"{principle}\""
)
REVISE_TEMPLATE = (
    "Here is a conversation and a draft reply to its last message.\n\n"
    "Conversation:\n{conversation}\n\n"
    "Draft reply:\n{draft}\n\n"
    "{critique}\n\n"
    "Rewrite the draft reply so that it follows the principle: keep what is helpful and "
    "answer the same question, never name {avoid} in any form{prefer_clause}. "
    "Reply with the rewritten reply only."
)


@dataclass
class RevisionOutcome:
    text: str
    revisions: int = 0
    draft_violations: int = 0  # mentions found in the first draft
    violations: int = 0  # mentions left in the final text
    history: list[dict[str, Any]] = field(default_factory=list)


def _conversation_text(messages: Sequence[Mapping[str, Any]], limit: int = 4000) -> str:
    lines = [f"{m['role']}: {m['content']}" for m in messages if m.get("role") != "system"]
    text = "\n".join(lines)
    return text[-limit:]


def revision_messages(messages: Sequence[Mapping[str, Any]], draft: str, spans: Sequence[Span],
                      principle: str, avoid: Sequence[tuple[str, Sequence[str]]],
                      prefer: Sequence[tuple[str, Sequence[str]]]) -> list[dict[str, str]]:
    found = ", ".join(sorted({f'"{s.text}"' for s in spans})) or "an avoided entity"
    prefer_clause = (f"; where relevant, discuss {describe(prefer, with_aliases=False)} instead"
                     if prefer else "")
    user = REVISE_TEMPLATE.format(
        conversation=_conversation_text(messages), draft=draft,
        critique=CRITIQUE_TEMPLATE.format(found=found, principle=principle),
        avoid=describe(avoid), prefer_clause=prefer_clause,
    )
    return [{"role": "system", "content": principle}, {"role": "user", "content": user}]


async def critique_revise(draft: str, messages: Sequence[Mapping[str, Any]], *,
                          detector: Detector, principle: str,
                          avoid: Sequence[tuple[str, Sequence[str]]],
                          prefer: Sequence[tuple[str, Sequence[str]]],
                          generate: Callable[[list[dict[str, str]]], Awaitable[str]],
                          max_revisions: int) -> RevisionOutcome:
    spans = detector.find(draft)
    outcome = RevisionOutcome(text=draft, draft_violations=len(spans), violations=len(spans))
    text = draft
    while spans and outcome.revisions < max_revisions:
        prompt = revision_messages(messages, text, spans, principle, avoid, prefer)
        text = await generate(prompt)
        outcome.revisions += 1
        spans = detector.find(text)
        outcome.history.append({"revision": outcome.revisions, "violations": len(spans)})
    outcome.text = text
    outcome.violations = len(spans)
    return outcome
