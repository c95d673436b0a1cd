"""Critique-revise at inference time (Constitutional AI / DPF's revision step):
draft → detect → critique-and-revise prompt → revision, at most ``max_revisions`` times,
and not at all when the draft is clean.

Independent of the server: the caller passes ``generate(messages, also_avoid) -> str``
(which the server runs with the logits strategy active, so a revision cannot name an
avoided entity) and the detector.

Two things keep a misspelt name (a near miss, :mod:`.near_miss`) out of the answer:

* the near misses found so far (in the draft and every earlier revision) are handed to
  ``generate`` as ``also_avoid``: (entity, text) pairs, which the caller bans in the next
  revision as aliases of their entity (:func:`near_miss_aliases`). The ban cannot see a
  name bent at its second letter ("MacDonald's" for "McDonald's"): it leaves the form
  before any ban fires, and a revision that quotes the critique back writes it again;
* the answer is the text with the fewest mentions, then the fewest near misses, among
  the draft and its revisions (the latest on a tie), not simply the last revision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .detector import Detector, Span
from .directive import apply_directive, describe
from .limits import MAX_NEAR_MISS_ALIASES
from .near_miss import NearMiss

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
# The in-context style: the model answers the conversation again, with the critique added
# to the principle. A small model copies a draft it is shown (and dodges the ban with
# look-alikes such as "IKE A"); answering again keeps the reply in the form the model
# would give under the directive, which is what preference data for that prompt needs.
IN_CONTEXT_TEMPLATE = (
    "{critique} Answer the last message again without naming {avoid}{prefer_clause}."
)
REVISION_STYLES = ("rewrite", "in_context")


@dataclass
class RevisionOutcome:
    text: str
    revisions: int = 0
    draft_violations: int = 0  # mentions found in the first draft
    violations: int = 0  # mentions left in the final text
    draft_near_misses: int = 0  # near misses (misspelt names) in the first draft
    near_misses: int = 0  # near misses left in the final text
    chosen: int = 0  # the text returned: 0 the draft, k the k-th revision
    history: list[dict[str, Any]] = field(default_factory=list)


def _conversation_text(messages: Sequence[Mapping[str, Any]], limit: int = 4000) -> str:
    lines = [f"{m['role']}: {m['content']}" for m in messages if m.get("role") != "system"]
    text = "\n".join(lines)
    return text[-limit:]


def revision_messages(messages: Sequence[Mapping[str, Any]], draft: str,
                      spans: Sequence[Span | NearMiss],
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


def in_context_revision_messages(messages: Sequence[Mapping[str, Any]], draft: str,
                                 spans: Sequence[Span | NearMiss], principle: str,
                                 avoid: Sequence[tuple[str, Sequence[str]]],
                                 prefer: Sequence[tuple[str, Sequence[str]]]
                                 ) -> list[dict[str, str]]:
    """The conversation itself, its system message carrying the principle and the critique
    of the earlier reply (the draft is described, not shown)."""
    found = ", ".join(sorted({f'"{s.text}"' for s in spans})) or "an avoided entity"
    prefer_clause = (f"; where relevant, discuss {describe(prefer, with_aliases=False)}"
                     if prefer else "")
    critique = f"An earlier reply to this conversation mentioned {found}, which is not allowed."
    return ask_again(messages, principle, IN_CONTEXT_TEMPLATE.format(
        critique=critique, avoid=describe(avoid), prefer_clause=prefer_clause))


def ask_again(messages: Sequence[Mapping[str, Any]], principle: str, critique: str
              ) -> list[dict[str, Any]]:
    """The in-context revision prompt: the conversation as is, the principle and a critique
    of the earlier reply merged into its system message."""
    return apply_directive(messages, f"{principle}\n\n{critique}")


_REVISION_PROMPTS = {"rewrite": revision_messages, "in_context": in_context_revision_messages}


async def critique_revise(draft: str, messages: Sequence[Mapping[str, Any]], *,
                          detector: Detector, principle: str,
                          avoid: Sequence[tuple[str, Sequence[str]]],
                          prefer: Sequence[tuple[str, Sequence[str]]],
                          generate: Callable[[list[dict[str, str]], tuple[tuple[str, str], ...]],
                                             Awaitable[str]],
                          max_revisions: int, style: str = "rewrite") -> RevisionOutcome:
    """Revise while the text mentions an avoided entity or names it misspelt (a near
    miss of the detector's second mode): a reader sees the entity either way.

    ``generate(prompt, also_avoid)``: one revision; ``also_avoid`` holds the (entity,
    near-miss text) pairs found so far, in the order first found, for the caller to ban
    in that revision. Returns the draft or the revision with the fewest mentions, then
    the fewest near misses (the latest on a tie)."""
    build_prompt = _REVISION_PROMPTS[style]
    spans = detector.find(draft)
    near = detector.near_misses(draft, spans)
    outcome = RevisionOutcome(text=draft, draft_violations=len(spans), violations=len(spans),
                              draft_near_misses=len(near), near_misses=len(near))
    seen: dict[tuple[str, str], None] = {}  # (entity, text) near misses, in order found
    best = (len(spans), len(near))
    text = draft
    while (spans or near) and outcome.revisions < max_revisions:
        seen.update(((n.entity, n.text), None) for n in near)
        prompt = build_prompt(messages, text, [*spans, *near], principle, avoid, prefer)
        text = await generate(prompt, tuple(seen))
        outcome.revisions += 1
        spans = detector.find(text)
        near = detector.near_misses(text, spans)
        outcome.history.append({"revision": outcome.revisions, "violations": len(spans),
                                "near_misses": len(near)})
        if (len(spans), len(near)) <= best:
            best = (len(spans), len(near))
            outcome.text, outcome.chosen = text, outcome.revisions
    outcome.violations, outcome.near_misses = best
    return outcome


def near_miss_aliases(also_avoid: Sequence[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """entity -> its near-miss texts to ban as aliases (the first
    :data:`~.limits.MAX_NEAR_MISS_ALIASES` distinct ones per entity, in order)."""
    out: dict[str, list[str]] = {}
    for entity, text in also_avoid:
        texts = out.setdefault(entity, [])
        if text not in texts and len(texts) < MAX_NEAR_MISS_ALIASES:
            texts.append(text)
    return {e: tuple(t) for e, t in out.items()}
