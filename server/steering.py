"""Per-request steering plan: the compiled spec, which strategies run, and the report.

`plan_for` turns the request's `steering` object (merged with the server's default
policy, per adapter if configured) into a plan that the chat and completion handlers
call at fixed points: before rendering the prompt (directive), when building sampling
params (logits → `extra_args`), to run the generation (`generate`: rollback decoding for
the logits strategy, :mod:`.rollback`), after generation (detection, critique-revise), and
when writing the response (report). With no `steering` the plan is inactive and costs
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from typing import Any

import msgspec
from pydantic import ValidationError
from vllm.sampling_params import RequestOutputKind

from greyelephant.control.ban_automaton import compile_steering
from greyelephant.control.critique_revise import critique_revise, near_miss_aliases
from greyelephant.control.directive import apply_directive, apply_directive_prompt, build_directive
from greyelephant.control.spec import SteeringPolicy, SteeringPolicyError, SteeringSpec

from .errors import APIError
from .generation import Choice, collect, plain_deltas
from .prompts import render_chat_prompt
from .rollback import SteeredRun, steered_choices

logger = logging.getLogger("greyelephant.server")


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

    def stop_token_ids(self) -> list[int]:
        return []

    def generate(self, ctx, route, prompt_ids, params, request_id, lora, *, stream=False):
        """The choices' deltas (see :mod:`.generation`)."""
        return plain_deltas(ctx, route, prompt_ids, params, request_id, lora)

    async def finish(self, ctx, route, drafts, messages, params, lora, request_id):
        return drafts

    def record(self, choices, outcomes=None) -> None:
        pass

    def report(self) -> dict[str, Any]:
        return {}


INACTIVE = SteeringPlan()


class ActivePlan(SteeringPlan):
    active = True

    def __init__(self, spec: SteeringSpec, metrics, ctx=None, structured: bool = False):
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
        self.signal = getattr(ctx.engine, "signal_token", None) if ctx is not None else None
        self.on_violation = getattr(ctx.settings, "on_violation", "error") if ctx else "error"
        for strategy in self.strategies:
            metrics.steering.labels(strategy).inc()
        # rollback decoding for logits-steered generations (drafts when the request asks
        # for `logits`, revisions always); structured outputs keep the mask alone (a
        # forced signal token would break the grammar)
        self.draft_run = self._steered_run(spec, ctx) if self.uses_logits and not structured \
            else None
        self.revision_spec = spec.model_copy(update={"strategies": ("logits",)})
        self.revision_run = self._steered_run(self.revision_spec, ctx) if self.revise else None

    @staticmethod
    def _steered_run(spec: SteeringSpec, ctx) -> SteeredRun | None:
        token = getattr(ctx.engine, "signal_token", None) if ctx is not None else None
        index = getattr(ctx.engine, "vocab_index", None) if ctx is not None else None
        engine = spec.engine_steering(signal=token)
        if engine is None or not engine.rollback or index is None:
            return None
        compiled = compile_steering(index, engine.avoid, engine.prefer, engine.prefer_bias)
        return SteeredRun(engine, compiled, spec.effective_max_rollbacks(),
                          detector=spec.avoid_detector(),
                          group_of={e.entity: i for i, e in enumerate(spec.avoid)})

    def apply_directive(self, messages):
        return apply_directive(messages, self.principle) if self.uses_directive else messages

    def apply_directive_prompt(self, prompt):
        return apply_directive_prompt(prompt, self.principle) if self.uses_directive else prompt

    def extra_args(self):
        """Engine args of a draft that runs in one engine request (no rollback chain):
        the signal token rides along, so that a failure in the engine fails the request."""
        args = self.spec.engine_steering(signal=self.signal, rollback=False)
        return {"steering": args.to_extra_args()} if args else None

    def stop_token_ids(self) -> list[int]:
        return [self.signal] if self.signal is not None and self.uses_logits else []

    def generate(self, ctx, route, prompt_ids, params, request_id, lora, *, stream=False):
        if self.draft_run is None:
            return plain_deltas(ctx, route, prompt_ids, params, request_id, lora,
                                signal=self.signal if self.uses_logits else None)
        return steered_choices(ctx, route, prompt_ids, params, request_id, lora,
                               self.draft_run, stream=stream)

    def _count(self, detector, text: str) -> int:
        return len(detector.find(text)) if detector is not None else 0

    async def finish(self, ctx, route, drafts, messages, params, lora, request_id):
        if not self.revise or self.avoid_detector is None:
            self.record(drafts)
            return drafts
        revise_params = params.clone()
        revise_params.n = 1
        revise_params.output_kind = RequestOutputKind.FINAL_ONLY
        revise_params.structured_outputs = None
        revise_params.logprobs = None
        # Revisions always run with the ban active (extra_args, set per revision by
        # generate below): a revision cannot name an avoided entity.
        counter = iter(range(1, 1 << 30))

        async def settle(choice: Choice):
            async def generate(revision_prompt: list[dict[str, str]],
                               also_avoid: tuple[tuple[str, str], ...] = ()) -> str:
                ids = render_chat_prompt(ctx.engine.tokenizer, revision_prompt)
                budget = ctx.engine.info.max_model_len - len(ids)
                if budget <= 0:
                    raise APIError(400, "the conversation is too long to revise within the "
                                   "context", "messages", "context_length_exceeded")
                p = revise_params.clone()
                p.max_tokens = min(p.max_tokens or budget, budget)
                sub_id = f"{request_id}-rev{next(counter)}"
                spec, run = self._revision_steering(also_avoid, ctx)
                p.extra_args = {"steering": spec.engine_args()}
                gen = (steered_choices(ctx, route, ids, p, sub_id, lora, run) if run is not None
                       else plain_deltas(ctx, route, ids, p, sub_id, lora))
                (revision,) = await collect(gen)
                self.metrics.revisions.inc()
                choice.rollbacks += revision.rollbacks
                choice.rolled_back_tokens += revision.rolled_back_tokens
                return revision.text

            outcome = await critique_revise(
                choice.text, messages, detector=self.avoid_detector, principle=self.principle,
                avoid=self.spec.avoid_entities(), prefer=self.spec.prefer_entities(),
                generate=generate, max_revisions=self.spec.max_revisions,
                style=self.spec.revision_style)
            if outcome.chosen:  # a revision replaces the draft
                choice.text = outcome.text
                choice.token_ids = ctx.engine.tokenizer.encode(outcome.text,
                                                               add_special_tokens=False)
                choice.logprobs = []
                choice.finish_reason = "stop"
                choice.stop_reason = None
            return outcome

        outcomes = await asyncio.gather(*(settle(c) for c in drafts))
        self.record(drafts, outcomes)
        return drafts

    def _revision_steering(self, also_avoid: tuple[tuple[str, str], ...], ctx
                           ) -> tuple[SteeringSpec, SteeredRun | None]:
        """The steering of a revision: the request's avoid and prefer under the logits
        strategy, with the near misses found so far (``also_avoid``: (entity, text)) banned
        as aliases of their entities. When those aliases would break the spec's rules or
        limits (a preferred name containing one), the revision runs with the request's own
        ban, still steered."""
        if not also_avoid:
            return self.revision_spec, self.revision_run
        try:
            spec = self.revision_spec.with_avoid_aliases(near_miss_aliases(also_avoid))
        except ValidationError:
            logger.info("steering: near misses not banned in a revision (the spec would be "
                        "invalid): %s", also_avoid)
            return self.revision_spec, self.revision_run
        return spec, self._steered_run(spec, ctx)

    def record(self, choices: list[Choice], outcomes=None) -> None:
        """The report's per-choice counts for the final ``choices`` (and the
        critique-revise ``outcomes`` when the loop ran)."""
        self.choices = []
        for j, c in enumerate(choices):
            spans = self.avoid_detector.find(c.text) if self.avoid_detector else []
            near = self.avoid_detector.near_misses(c.text, spans) if self.avoid_detector else []
            found = len(spans)
            o = outcomes[j] if outcomes is not None else None
            self.choices.append({
                "index": c.index,
                "revisions": o.revisions if o else 0,
                "draft_violations": o.draft_violations if o else found,
                "violations": found,
                "draft_near_misses": o.draft_near_misses if o else len(near),
                "near_misses": [{"text": n.text, "entity": n.entity} for n in near],
                "prefer_mentions": self._count(self.prefer_detector, c.text),
                "rollbacks": c.rollbacks,
                "rolled_back_tokens": c.rolled_back_tokens,
            })
            self.metrics.rollbacks.inc(c.rollbacks)
        self._observe()
        broken = [c for j, c in enumerate(self.choices) if c["violations"] and (
            self.uses_logits or (outcomes is not None and outcomes[j].revisions))]
        if broken and self.on_violation == "error":
            # the ban guarantees no mention; a final text with one (e.g. a stop string cut
            # the text right after a name) is an error, not an answer
            raise APIError(500, f"the steered answer still names an avoided entity (choice "
                                f"{broken[0]['index']}); it is withheld (see "
                                "--on-violation)", code="steering_violation")

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
            "near_misses": sum(len(c["near_misses"]) for c in self.choices),
            "prefer_mentions": sum(c["prefer_mentions"] for c in self.choices),
            "max_rollbacks": (self.spec.effective_max_rollbacks()
                              if self.draft_run is not None or self.revision_run is not None
                              else 0),
            "rollbacks": sum(c["rollbacks"] for c in self.choices),
            "rolled_back_tokens": sum(c["rolled_back_tokens"] for c in self.choices),
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


def plan_for(ctx, spec: SteeringSpec | None, model: str, *, structured: bool = False
             ) -> SteeringPlan:
    """The request's plan; ``structured``: the request constrains its output (a JSON
    schema or object), which keeps the logits strategy on the mask alone."""
    if spec is None:
        return INACTIVE
    try:
        merged = spec.with_defaults(policy_for(ctx, model))
    except SteeringPolicyError as exc:
        raise APIError(400, str(exc), "steering.strategies") from exc
    return ActivePlan(merged, ctx.metrics, ctx, structured)
