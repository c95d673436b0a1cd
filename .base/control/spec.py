"""The ``steering`` request extension: parsing, limits, hashing, server defaults.

::

    "steering": {
      "avoid":  ["pink elephant", {"entity": "Eiffel Tower", "aliases": ["Tour Eiffel"]}],
      "prefer": ["grey elephant"],
      "strategies": ["directive", "logits", "critique_revise"],
      "max_revisions": 2,
      "prefer_bias": 4.0,
      "no_repeat_ngram": 4,
      "revision_style": "rewrite",
      "max_rollbacks": 8
    }

Invalid input raises ``pydantic.ValidationError`` (the server answers 400). Every limit is
a module constant below. Omitted ``strategies`` / ``max_revisions`` / ``prefer_bias`` /
``no_repeat_ngram`` / ``revision_style`` / ``max_rollbacks`` stay ``None`` until
:meth:`SteeringSpec.with_defaults` fills them from a :class:`SteeringPolicy`.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from .aho_corasick import Automaton
from .engine_args import EngineSteering
from .loop_guard import check_ngram_size
from .normalize import fold_form, normalize_text
from .surface_forms import entity_patterns, expand_entity

from .limits import (  # noqa: E402  (re-exported: the documented limits)
    DEFAULT_MAX_ROLLBACKS,
    DEFAULT_NO_REPEAT_NGRAM,
    DEFAULT_PREFER_BIAS,
    MAX_ALIASES_PER_ENTITY,
    MAX_ENTITIES_PER_LIST,
    MAX_NAME_CHARS,
    MAX_NO_REPEAT_NGRAM,
    MAX_PREFER_BIAS,
    MAX_REVISIONS,
    MAX_ROLLBACKS,
    MAX_SURFACE_FORMS,
    ROLLBACK_MASS,
)

Strategy = Literal["directive", "logits", "critique_revise"]
STRATEGY_ORDER: tuple[str, ...] = ("directive", "logits", "critique_revise")
RevisionStyle = Literal["rewrite", "in_context"]


class SteeringPolicyError(ValueError):
    """A request asks for something the server's policy does not allow (→ 400)."""


def _clean_name(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{what} must be a string")
    if any(unicodedata.category(c) in ("Cc", "Cs") and not c.isspace() for c in v):
        raise ValueError(f"{what} must not contain control characters")
    s = normalize_text(v)
    if not s:
        raise ValueError(f"{what} must not be empty")
    if len(s) > MAX_NAME_CHARS:
        raise ValueError(f"{what} is longer than {MAX_NAME_CHARS} characters")
    if not fold_form(s):
        raise ValueError(f"{what} {v!r} must contain at least one letter or digit")
    return s


class EntitySpec(BaseModel):
    """One entity: a canonical name plus aliases (all normalised, aliases de-duplicated)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str
    aliases: tuple[str, ...] = Field(default=(), max_length=MAX_ALIASES_PER_ENTITY)

    @field_validator("entity", mode="before")
    @classmethod
    def _entity(cls, v: Any) -> str:
        return _clean_name(v, "entity")

    @field_validator("aliases", mode="before")
    @classmethod
    def _aliases(cls, v: Any) -> Any:
        if v is None:
            return ()
        if isinstance(v, str) or not isinstance(v, (list, tuple)):
            raise ValueError("aliases must be a list of strings")
        if len(v) > MAX_ALIASES_PER_ENTITY:
            raise ValueError(f"at most {MAX_ALIASES_PER_ENTITY} aliases per entity")
        out: list[str] = []
        for a in v:
            s = _clean_name(a, "alias")
            if s not in out:
                out.append(s)
        return tuple(out)

    @model_validator(mode="after")
    def _drop_self_alias(self) -> EntitySpec:
        if self.entity in self.aliases:
            object.__setattr__(
                self, "aliases", tuple(a for a in self.aliases if a != self.entity)
            )
        return self

    def forms(self) -> list[str]:
        """Surface forms (display strings) of the entity and its aliases."""
        return expand_entity(self.entity, self.aliases)

    def patterns(self) -> list[str]:
        """Distinct folded surface forms."""
        return list(entity_patterns(self.entity, tuple(self.aliases)))


def _entity_input(v: Any) -> Any:
    if isinstance(v, str):
        return {"entity": v}
    if not isinstance(v, (dict, EntitySpec)):
        raise ValueError('an entity must be a string or an object {"entity", "aliases"}')
    return v


EntityInput = Annotated[EntitySpec, BeforeValidator(_entity_input)]


class SteeringPolicy(BaseModel):
    """Server-side defaults and allowances, merged into each request's spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_strategies: tuple[Strategy, ...] = ("directive", "logits")
    allowed_strategies: tuple[Strategy, ...] = STRATEGY_ORDER  # type: ignore[assignment]
    default_max_revisions: int = Field(default=2, ge=0, le=MAX_REVISIONS)
    default_prefer_bias: float = Field(default=DEFAULT_PREFER_BIAS, ge=0.0, le=MAX_PREFER_BIAS)
    default_no_repeat_ngram: int = Field(default=DEFAULT_NO_REPEAT_NGRAM, ge=0,
                                         le=MAX_NO_REPEAT_NGRAM)
    default_revision_style: RevisionStyle = "rewrite"
    default_max_rollbacks: int = Field(default=DEFAULT_MAX_ROLLBACKS, ge=0, le=MAX_ROLLBACKS)

    @field_validator("default_no_repeat_ngram")
    @classmethod
    def _ngram(cls, v: int) -> int:
        return check_ngram_size(v, "default_no_repeat_ngram")


DEFAULT_POLICY = SteeringPolicy()
_DERIVED = ("avoid_forms", "prefer_forms", "avoid_patterns", "prefer_patterns")


class SteeringSpec(BaseModel):
    """The validated ``steering`` object of a chat or completions request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    avoid: tuple[EntityInput, ...] = Field(default=(), max_length=MAX_ENTITIES_PER_LIST)
    prefer: tuple[EntityInput, ...] = Field(default=(), max_length=MAX_ENTITIES_PER_LIST)
    strategies: tuple[Strategy, ...] | None = Field(default=None, min_length=1)
    max_revisions: int | None = Field(default=None, ge=0, le=MAX_REVISIONS)
    prefer_bias: float | None = Field(default=None, ge=0.0, le=MAX_PREFER_BIAS)
    # loop guard of the logits strategy: no token n-gram twice in the output (0 = off)
    no_repeat_ngram: int | None = Field(default=None, ge=0, le=MAX_NO_REPEAT_NGRAM,
                                        strict=True)
    # critique_revise's prompt: "rewrite" shows the draft in a rewrite prompt; "in_context"
    # asks the conversation again with the critique in the system message
    revision_style: RevisionStyle | None = None
    # rollbacks per choice of the logits strategy before it falls back to masking alone
    # (0 = off: the ban only masks, and the model may route around it with a look-alike)
    max_rollbacks: int | None = Field(default=None, ge=0, le=MAX_ROLLBACKS, strict=True)

    @field_validator("no_repeat_ngram")
    @classmethod
    def _no_repeat_ngram(cls, v: int | None) -> int | None:
        return None if v is None else check_ngram_size(v)

    @field_validator("avoid", "prefer", mode="before")
    @classmethod
    def _list(cls, v: Any, info) -> Any:
        if v is None:
            return ()
        if isinstance(v, (str, dict)) or not isinstance(v, (list, tuple)):
            raise ValueError(f"{info.field_name} must be a list of entities")
        if len(v) > MAX_ENTITIES_PER_LIST:
            raise ValueError(f"at most {MAX_ENTITIES_PER_LIST} entities in {info.field_name}")
        return v

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return None
        if len(set(v)) != len(v):
            raise ValueError("strategies must not repeat")
        return tuple(s for s in STRATEGY_ORDER if s in v)

    @model_validator(mode="after")
    def _check(self) -> SteeringSpec:
        if not self.avoid and not self.prefer:
            raise ValueError("steering needs at least one entity in avoid or prefer")
        n = len(self.avoid_patterns) + len(self.prefer_patterns)
        if n > MAX_SURFACE_FORMS:
            raise ValueError(
                f"steering expands to {n} surface forms; the limit is {MAX_SURFACE_FORMS}"
                " (fewer entities or aliases)"
            )
        if self.avoid and self.prefer:
            ac = Automaton(self.avoid_patterns)
            for ent in self.prefer:
                for pat in ent.patterns():
                    if ac.feed(ac.start, pat)[1]:
                        raise ValueError(
                            f"prefer entity {ent.entity!r} contains an avoided name "
                            f"({pat!r}); it could never be said"
                        )
        return self

    # -- derived (cached on the frozen instance) ------------------------------------
    def model_copy(self, *, update=None, deep: bool = False):  # type: ignore[override]
        new = super().model_copy(update=update, deep=deep)
        if update and {"avoid", "prefer"} & set(update):
            for name in _DERIVED:  # cached values of the old entities
                new.__dict__.pop(name, None)
        return new

    @cached_property
    def avoid_forms(self) -> list[str]:
        return sorted({f for e in self.avoid for f in e.forms()})

    @cached_property
    def prefer_forms(self) -> list[str]:
        return sorted({f for e in self.prefer for f in e.forms()})

    @cached_property
    def avoid_patterns(self) -> list[str]:
        return sorted({p for e in self.avoid for p in e.patterns()})

    @cached_property
    def prefer_patterns(self) -> list[str]:
        return sorted({p for e in self.prefer for p in e.patterns()})

    def with_avoid_aliases(self, extra: Mapping[str, Sequence[str]]) -> SteeringSpec:
        """This spec with ``extra[entity]`` added to the aliases of each avoided entity
        (critique-revise bans the near misses it found this way). Validated like a
        request: raises ``pydantic.ValidationError`` when the result breaks a rule or a
        limit (a preferred name that contains a new alias, too many forms)."""
        if not extra:
            return self
        data = self.model_dump()
        data["avoid"] = [{**e, "aliases": [*e["aliases"], *extra.get(e["entity"], ())]}
                         for e in data["avoid"]]
        return type(self).model_validate(data)

    def avoid_entities(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(e.entity, e.aliases) for e in self.avoid]

    def prefer_entities(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(e.entity, e.aliases) for e in self.prefer]

    def avoid_detector(self):
        from .detector import detector_for

        return detector_for(self.avoid_entities())

    def prefer_detector(self):
        from .detector import detector_for

        return detector_for(self.prefer_entities())

    # -- identity ----------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        out = {
            "avoid": [[e.entity, sorted(e.aliases)] for e in self.avoid],
            "prefer": [[e.entity, sorted(e.aliases)] for e in self.prefer],
            "strategies": list(self.strategies) if self.strategies is not None else None,
            "max_revisions": self.max_revisions,
            "prefer_bias": self.prefer_bias,
        }
        if self.no_repeat_ngram is not None:  # absent: hashes of older specs unchanged
            out["no_repeat_ngram"] = self.no_repeat_ngram
        if self.revision_style is not None:
            out["revision_style"] = self.revision_style
        if self.max_rollbacks is not None:
            out["max_rollbacks"] = self.max_rollbacks
        return out

    def spec_hash(self) -> str:
        """Stable sha256 hex of the normalised spec (alias order does not matter)."""
        blob = json.dumps(self.canonical(), ensure_ascii=False, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    # -- server defaults ----------------------------------------------------------------
    def with_defaults(self, policy: SteeringPolicy = DEFAULT_POLICY) -> SteeringSpec:
        """Fill omitted fields from the policy; raise :class:`SteeringPolicyError` when a
        requested strategy is not allowed."""
        strategies = self.strategies or tuple(
            s for s in STRATEGY_ORDER if s in policy.default_strategies
        )
        bad = [s for s in strategies if s not in policy.allowed_strategies]
        if bad:
            raise SteeringPolicyError(f"strategies not enabled on this server: {bad}")
        return self.model_copy(
            update={
                "strategies": strategies,
                "max_revisions": (
                    policy.default_max_revisions if self.max_revisions is None
                    else self.max_revisions
                ),
                "prefer_bias": (
                    policy.default_prefer_bias if self.prefer_bias is None else self.prefer_bias
                ),
                "no_repeat_ngram": (
                    policy.default_no_repeat_ngram if self.no_repeat_ngram is None
                    else self.no_repeat_ngram
                ),
                "revision_style": self.revision_style or policy.default_revision_style,
                "max_rollbacks": (
                    policy.default_max_rollbacks if self.max_rollbacks is None
                    else self.max_rollbacks
                ),
            }
        )

    def uses(self, strategy: str) -> bool:
        strategies = self.strategies or DEFAULT_POLICY.default_strategies
        return strategy in strategies

    def engine_steering(self, signal: int | None = None,
                        rollback: bool = True) -> EngineSteering | None:
        """The typed engine form (:mod:`.engine_args`) for the logits processor, or None
        when the ``logits`` strategy is off. ``signal`` is the server's signal token;
        rollback is on when a signal is given, ``rollback`` is True and the spec allows
        rollbacks (``max_rollbacks`` > 0) and avoids something."""
        if not self.uses("logits"):
            return None
        bias = DEFAULT_PREFER_BIAS if self.prefer_bias is None else self.prefer_bias
        on = (signal is not None and rollback and self.effective_max_rollbacks() > 0
              and bool(self.avoid))
        return EngineSteering(
            avoid=tuple(tuple(e.patterns()) for e in self.avoid),
            prefer=tuple(self.prefer_patterns),
            prefer_bias=float(bias),
            no_repeat_ngram=self.effective_no_repeat_ngram(),
            signal=signal,
            rollback_mass=ROLLBACK_MASS if on else None,
        )

    def engine_args(self) -> dict[str, Any] | None:
        """JSON-able ``SamplingParams.extra_args["steering"]`` without rollback (see
        :meth:`engine_steering`), or None when the ``logits`` strategy is off."""
        es = self.engine_steering()
        return es.to_extra_args() if es is not None else None

    def effective_max_rollbacks(self) -> int:
        """Rollbacks allowed per choice of a logits-steered generation (0 = off)."""
        return DEFAULT_MAX_ROLLBACKS if self.max_rollbacks is None else self.max_rollbacks

    def effective_no_repeat_ngram(self) -> int:
        """The loop guard's n for logits-steered generation (0 = off)."""
        return DEFAULT_NO_REPEAT_NGRAM if self.no_repeat_ngram is None else self.no_repeat_ngram


def parse_steering(data: Any, policy: SteeringPolicy | None = None) -> SteeringSpec:
    """Validate a raw ``steering`` object (dict or JSON string) and, if a policy is given,
    fill its defaults."""
    spec = (SteeringSpec.model_validate_json(data) if isinstance(data, (str, bytes))
            else SteeringSpec.model_validate(data))
    return spec.with_defaults(policy) if policy is not None else spec
