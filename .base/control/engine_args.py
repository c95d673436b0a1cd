"""The engine form of a steering spec: what one engine request carries in
``SamplingParams.extra_args["steering"]``.

It is derived from the validated :class:`.spec.SteeringSpec` in one place
(:meth:`.spec.SteeringSpec.engine_steering`) and parsed back by the logits processor with
the same model (:meth:`EngineSteering.parse`), so the server and the engine agree on one
typed contract::

    {"v": 2,
     "avoid": [["eiffel tower", "tour eiffel", ...], ["nike", ...]],   # one list per entity
     "prefer": ["louvre", ...], "prefer_bias": 4.0, "no_repeat_ngram": 4,
     "signal": 16, "rollback_mass": 0.5,         # None: no signal / rollback off
     "resume": 0, "start_ban": [], "min_tokens": 0}

``avoid`` holds folded surface forms (display forms are accepted too and folded in the
engine), one list per avoided entity (a plain string is an entity with one form): a rollback names the entities whose starts it bans
by their index here. The rollback fields:

* ``signal`` — a stop token of the request that the processor forces to tell the server
  something: the row heads into an avoided form (with rollback on), or the row's spec
  could not be compiled in the engine (the server then fails the request: a steered row is
  steered or its request fails). Banned at every other step;
* ``rollback_mass`` — rollback on: when the row heads into an avoided form (the model's
  own choice is banned inside a form; when sampling, the banned tokens carry more than
  this share of the probability), the processor forces ``signal`` instead of masking, and
  the server rolls the choice back (``server/rollback.py``). None: rollback off (the
  stricter prefix ban, see :mod:`.ban_automaton`);
* ``resume`` — the last ``resume`` prompt tokens are this choice's accepted output from
  before a rollback: the row's state (ban automaton, prefer nudge, loop guard, presence
  and frequency penalties) is rebuilt from them;
* ``start_ban`` — entity indices whose starts are banned at the row's first step (the
  position the rollback returned to);
* ``min_tokens`` — the request's ``min_tokens`` minus the resumed tokens, enforced by the
  processor for rollback rows (vLLM ignores stop tokens before its own ``min_tokens``,
  which would swallow the rollback signal, so the server sets that one to 0).
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .limits import (
    ENGINE_ARGS_VERSION,
    MAX_ENGINE_FORM_CHARS,
    MAX_PREFER_BIAS,
    MAX_SURFACE_FORMS,
)
from .loop_guard import check_ngram_size


class EngineSteering(BaseModel):
    """``extra_args["steering"]`` of one engine request (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[ENGINE_ARGS_VERSION] = ENGINE_ARGS_VERSION  # type: ignore[valid-type]
    avoid: tuple[tuple[str, ...], ...] = ()
    prefer: tuple[str, ...] = ()
    prefer_bias: float = Field(default=0.0, ge=0.0, le=MAX_PREFER_BIAS)
    no_repeat_ngram: int = 0
    signal: int | None = Field(default=None, ge=0)
    rollback_mass: float | None = Field(default=None, gt=0.0, le=1.0)
    resume: int = Field(default=0, ge=0)
    start_ban: tuple[int, ...] = ()
    min_tokens: int = Field(default=0, ge=0)

    @field_validator("avoid", mode="before")
    @classmethod
    def _groups(cls, v: Any) -> Any:
        # a plain string is an entity with that one form
        if isinstance(v, (list, tuple)):
            return [(x,) if isinstance(x, str) else x for x in v]
        return v

    @field_validator("prefer_bias", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError("prefer_bias must be a finite number")
        return v

    @field_validator("no_repeat_ngram", mode="before")
    @classmethod
    def _ngram(cls, v: Any) -> int:
        return check_ngram_size(v, "no_repeat_ngram")

    @model_validator(mode="after")
    def _limits(self) -> EngineSteering:
        # (one pass in C over the forms' lengths: admission runs inside an engine step)
        lengths = list(map(len, chain(chain.from_iterable(self.avoid), self.prefer)))
        if len(lengths) > MAX_SURFACE_FORMS:
            raise ValueError(f"more than {MAX_SURFACE_FORMS} forms")
        if lengths and max(lengths) > MAX_ENGINE_FORM_CHARS:
            raise ValueError(f"a form is longer than {MAX_ENGINE_FORM_CHARS} characters")
        if any(not 0 <= g < len(self.avoid) for g in self.start_ban):
            raise ValueError("start_ban names an entity that is not in avoid")
        if self.rollback_mass is not None and self.signal is None:
            raise ValueError("rollback needs a signal token")
        return self

    @property
    def rollback(self) -> bool:
        return self.rollback_mass is not None

    @classmethod
    def parse(cls, obj: Any) -> EngineSteering:
        """Validate a raw ``extra_args["steering"]``; raises ValueError (vLLM answers 400)."""
        if isinstance(obj, cls):
            return obj
        if not isinstance(obj, dict):
            raise ValueError("extra_args.steering must be an object")
        return cls.model_validate(obj)

    def to_extra_args(self) -> dict[str, Any]:
        """The JSON-able dict for ``SamplingParams.extra_args["steering"]``."""
        return self.model_dump(mode="json", exclude_defaults=False)

    @property
    def active(self) -> bool:
        return bool(self.avoid or (self.prefer and self.prefer_bias > 0) or self.no_repeat_ngram)
