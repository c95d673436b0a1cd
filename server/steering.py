"""Per-request steering plan: which strategies run, and the report they produce.

Filled in by the steering work (control/); with no `steering` in the request the plan is
inactive and costs nothing.
"""

from __future__ import annotations

from typing import Any


class SteeringPlan:
    active = False
    uses_directive = False
    buffers_stream = False

    def apply_directive(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        return messages

    def apply_directive_prompt(self, prompt: str) -> str:
        return prompt

    def extra_args(self) -> dict[str, Any] | None:
        return None

    async def finish(self, ctx, route, drafts, messages, params, lora, request_id):
        return drafts

    def record_final_texts(self, texts: list[str]) -> None:
        pass

    def report(self) -> dict[str, Any]:
        return {}


def plan_for(ctx, spec, model: str, tokenizer) -> SteeringPlan:
    if spec is None:
        return SteeringPlan()
    raise NotImplementedError
