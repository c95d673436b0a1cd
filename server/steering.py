"""Per-request steering plan: the compiled spec, which strategies run, and the report.

`plan_for` turns the request's `steering` object (merged with the server's default
policy, per adapter if configured) into a plan that the chat and completion handlers
call at fixed points: before rendering the prompt (directive), when building sampling
params (logits → `extra_args`), after generation (detection, critique-revise), and when
writing the response (report). With no `steering` the plan is inactive and costs nothing.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any

import msgspec
from vllm.sampling_params import RequestOutputKind

from greyelephant.control.critique_revise import critique_revise
from greyelephant.control.directive import apply_directive, apply_directive_prompt, build_directive
from greyelephant.control.spec import SteeringPolicy, SteeringPolicyError, SteeringSpec

from .errors import APIError


class SteeringPlan:
    """No steering requested."""

    active = False
    uses_directive = False
    buffers_stream = False

    def apply_directive(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


INACTIVE = SteeringPlan()


class ActivePlan(SteeringPlan):
    active = True

    def __init__(self, spec: SteeringSpec, metrics):
        self.spec = spec
        self.metrics = metrics
        self.strategies = list(spec.strategies)
        self.uses_directive = "directive" in self.strategies
        self.uses_logits = "logits" in self.strategies
        self.revise = "critique_revise" in self.strategies
        # Critique-revise may replace a draft, so streams are sent once the text is settled.
        self.buffers_stream = self.revise
        self.principle = build_directive(spec)
        self.avoid_detector = spec.avoid_detector() if spec.avoid else None
        self.prefer_detector = spec.prefer_detector() if spec.prefer else None
        self.choices: list[dict[str, Any]] = []
        for strategy in self.strategies:
            metrics.steering.labels(strategy).inc()

    def apply_directive(self, messages):
        return apply_directive(messages, self.principle) if self.uses_directive else messages

    def apply_directive_prompt(self, prompt):
        return apply_directive_prompt(prompt, self.principle) if self.uses_directive else prompt

    def extra_args(self):
        args = self.spec.engine_args()
        return {"steering": args} if args else None

    def _count(self, detector, text: str) -> int:
        return len(detector.find(text)) if detector is not None else 0

    async def finish(self, ctx, route, drafts, messages, params, lora, request_id):
        if not self.revise or self.avoid_detector is None:
            self.record_final_texts([c.text for c in drafts])
            return drafts
        revise_params = params.clone()
        revise_params.n = 1
        revise_params.output_kind = RequestOutputKind.FINAL_ONLY
        revise_params.structured_outputs = None
        revise_params.logprobs = None
        # Revisions always run with the ban active: a revision cannot name an avoided entity.
        revise_params.extra_args = {"steering": self.spec.model_copy(
            update={"strategies": ("logits",)}).engine_args()}
        counter = iter(range(1, 1 << 30))

        async def generate(revision_prompt: list[dict[str, str]]) -> str:
            from .generation import generate_choices
            from .serving_chat import render_chat_prompt

            ids = render_chat_prompt(ctx.engine.tokenizer, revision_prompt)
            budget = ctx.engine.info.max_model_len - len(ids)
            if budget <= 0:
                raise APIError(400, "the conversation is too long to revise within the context",
                               "messages", "context_length_exceeded")
            p = revise_params.clone()
            p.max_tokens = min(p.max_tokens or budget, budget)
            sub_id = f"{request_id}-rev{next(counter)}"
            (choice,) = await generate_choices(ctx, route, ids, p, sub_id, lora)
            self.metrics.revisions.inc()
            return choice.text

        async def settle(choice):
            outcome = await critique_revise(
                choice.text, messages, detector=self.avoid_detector, principle=self.principle,
                avoid=self.spec.avoid_entities(), prefer=self.spec.prefer_entities(),
                generate=generate, max_revisions=self.spec.max_revisions,
                style=self.spec.revision_style)
            if outcome.revisions:
                choice.text = outcome.text
                choice.token_ids = ctx.engine.tokenizer.encode(outcome.text,
                                                               add_special_tokens=False)
                choice.logprobs = []
                choice.finish_reason = "stop"
                choice.stop_reason = None
            return outcome

        outcomes = await asyncio.gather(*(settle(c) for c in drafts))
        self.choices = [
            {"index": c.index, "revisions": o.revisions, "draft_violations": o.draft_violations,
             "violations": o.violations, "prefer_mentions": self._count(self.prefer_detector, c.text)}
            for c, o in zip(drafts, outcomes, strict=True)
        ]
        self._observe()
        return drafts

    def record_final_texts(self, texts: list[str]) -> None:
        self.choices = []
        for i, text in enumerate(texts):
            found = self._count(self.avoid_detector, text)
            self.choices.append({"index": i, "revisions": 0, "draft_violations": found,
                                 "violations": found,
                                 "prefer_mentions": self._count(self.prefer_detector, text)})
        self._observe()

    def _observe(self) -> None:
        self.metrics.violations.labels("draft").inc(sum(c["draft_violations"] for c in self.choices))
        self.metrics.violations.labels("final").inc(sum(c["violations"] for c in self.choices))

    def report(self) -> dict[str, Any]:
        return {
            "strategies": self.strategies,
            "avoid": [e.entity for e in self.spec.avoid],
            "prefer": [e.entity for e in self.spec.prefer],
            "max_revisions": self.spec.max_revisions,
            "revision_style": self.spec.revision_style if self.revise else None,
            # loop guard n of the logits-steered generations (drafts with `logits`,
            # revisions always); 0 = off or no logits-steered generation
            "no_repeat_ngram": (self.spec.effective_no_repeat_ngram()
                                if self.uses_logits or self.revise else 0),
            "revisions": sum(c["revisions"] for c in self.choices),
            "draft_violations": sum(c["draft_violations"] for c in self.choices),
            "violations": sum(c["violations"] for c in self.choices),
            "prefer_mentions": sum(c["prefer_mentions"] for c in self.choices),
            "choices": self.choices,
            "spec_hash": self.spec.spec_hash()[:16],
        }


@lru_cache(maxsize=64)
def _policy(defaults_json: bytes) -> SteeringPolicy:
    return SteeringPolicy.model_validate_json(defaults_json)


def policy_for(ctx, model: str) -> SteeringPolicy:
    settings = ctx.settings
    defaults = settings.adapter_steering_defaults.get(model, settings.steering_defaults)
    return _policy(msgspec.json.encode(defaults))


def plan_for(ctx, spec: SteeringSpec | None, model: str, tokenizer=None) -> SteeringPlan:
    if spec is None:
        return INACTIVE
    try:
        merged = spec.with_defaults(policy_for(ctx, model))
    except SteeringPolicyError as exc:
        raise APIError(400, str(exc), "steering.strategies") from exc
    return ActivePlan(merged, ctx.metrics)
