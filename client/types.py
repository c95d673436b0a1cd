"""Typed steering spec (what you send) and typed responses (what the server answers).

The spec is deliberately thin: it coerces Python shapes into the JSON the server expects
(`"pink elephant"` → an entity, `"directive,logits"` → a strategy list) and checks types,
but it does not re-implement the server's limits. The server is the one authority on
what is valid; an invalid spec comes back as :class:`~greyelephant.client.BadRequestError`
carrying the server's message and ``param`` (e.g. ``steering.max_revisions``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["directive", "logits", "critique_revise"]
STRATEGIES: tuple[str, ...] = ("directive", "logits", "critique_revise")

__all__ = [
    "STRATEGIES", "ChatResponse", "Choice", "ChoiceReport", "CompletionResponse", "Entity",
    "ModelInfo", "Steering", "SteeringReport", "Strategy", "Usage",
]


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Entity:
    """One entity to avoid or prefer: a canonical name plus aliases.

    ``Entity("Eiffel Tower", ["Tour Eiffel"])``. The server also matches case, spacing,
    punctuation and plural variants of every name; aliases are for other names entirely.
    """

    entity: str
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.entity, str):
            raise TypeError(f"Entity.entity must be a string, got {type(self.entity).__name__}")
        aliases = self.aliases
        if aliases is None:
            aliases = ()
        elif isinstance(aliases, str):
            aliases = (aliases,)
        aliases = tuple(aliases)
        if not all(isinstance(a, str) for a in aliases):
            raise TypeError("Entity.aliases must be strings")
        object.__setattr__(self, "aliases", aliases)

    @classmethod
    def coerce(cls, value: Entity | str | Mapping[str, Any]) -> Entity:
        """``"name"``, ``{"entity": ..., "aliases": [...]}`` or an :class:`Entity`."""
        if isinstance(value, Entity):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            unknown = set(value) - {"entity", "aliases"}
            if unknown or "entity" not in value:
                raise TypeError(f'an entity mapping has keys "entity" and "aliases", got {sorted(value)}')
            return cls(value["entity"], value.get("aliases") or ())
        raise TypeError(f"an entity is a string, a mapping or an Entity, got {type(value).__name__}")

    def to_json(self) -> str | dict[str, Any]:
        """The request form: a bare string when there are no aliases."""
        if not self.aliases:
            return self.entity
        return {"entity": self.entity, "aliases": list(self.aliases)}


EntityLike = Entity | str | Mapping[str, Any]


def _entities(value: EntityLike | Iterable[EntityLike] | None) -> tuple[Entity, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, Entity, Mapping)):
        return (Entity.coerce(value),)
    return tuple(Entity.coerce(v) for v in value)


def _strategies(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [s for s in (p.strip() for p in value.split(",")) if s]
    out = tuple(value)
    if not all(isinstance(s, str) for s in out):
        raise TypeError("strategies must be strings")
    return out


@dataclass(frozen=True)
class Steering:
    """The ``steering`` request extension.

    ``Steering(avoid=["pink elephant"], prefer=["grey elephant"], strategies=["directive", "logits"])``

    * ``avoid`` / ``prefer``: entities (strings, mappings or :class:`Entity`); a single
      string is one entity.
    * ``strategies``: any of ``directive``, ``logits``, ``critique_revise`` (list or
      comma-separated string); omitted → the server's default policy.
    * ``max_revisions``: critique-revise rounds; ``prefer_bias``: logit bonus for preferred
      entities; ``no_repeat_ngram``: the logits strategy's loop guard (no token n-gram
      twice in the output, 0 = off); ``revision_style``: critique-revise's prompt,
      ``"rewrite"`` (edit the shown draft) or ``"in_context"`` (answer the conversation
      again with the critique); ``max_rollbacks``: rollbacks per choice of the logits
      strategy (0 = off). Omitted → server defaults.
    * ``extra``: further fields sent as they are (for a server newer than this client).
    """

    avoid: tuple[Entity, ...] = ()
    prefer: tuple[Entity, ...] = ()
    strategies: tuple[str, ...] | None = None
    max_revisions: int | None = None
    prefer_bias: float | None = None
    no_repeat_ngram: int | None = None
    revision_style: str | None = None
    max_rollbacks: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "avoid", _entities(self.avoid))
        object.__setattr__(self, "prefer", _entities(self.prefer))
        object.__setattr__(self, "strategies", _strategies(self.strategies))
        for name in ("max_revisions", "no_repeat_ngram", "max_rollbacks"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{name} must be an int")
        if not isinstance(self.extra, Mapping):
            raise TypeError("extra must be a mapping")
        object.__setattr__(self, "extra", dict(self.extra))
        if self.prefer_bias is not None and (
                isinstance(self.prefer_bias, bool) or not isinstance(self.prefer_bias, (int, float))):
            raise TypeError("prefer_bias must be a number")

    @classmethod
    def coerce(cls, value: Steering | Mapping[str, Any]) -> Steering:
        """From a :class:`Steering` or the JSON form (fields it does not know go to ``extra``)."""
        if isinstance(value, Steering):
            return value
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
            known = {k: v for k, v in value.items() if k in names}
            extra = {k: v for k, v in value.items() if k not in names}
            return cls(**known, extra=extra)
        raise TypeError(f"steering is a Steering or a mapping, got {type(value).__name__}")

    def replace(self, **changes: Any) -> Steering:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object sent as ``"steering"`` (omitted fields are left to the server)."""
        out: dict[str, Any] = {}
        if self.avoid:
            out["avoid"] = [e.to_json() for e in self.avoid]
        if self.prefer:
            out["prefer"] = [e.to_json() for e in self.prefer]
        if self.strategies is not None:
            out["strategies"] = list(self.strategies)
        if self.max_revisions is not None:
            out["max_revisions"] = self.max_revisions
        if self.prefer_bias is not None:
            out["prefer_bias"] = float(self.prefer_bias)
        if self.no_repeat_ngram is not None:
            out["no_repeat_ngram"] = self.no_repeat_ngram
        if self.revision_style is not None:
            out["revision_style"] = self.revision_style
        if self.max_rollbacks is not None:
            out["max_rollbacks"] = self.max_rollbacks
        out.update(self.extra)
        return out


STEERING_KEYWORDS: tuple[str, ...] = (
    "avoid", "prefer", "strategies", "max_revisions", "prefer_bias", "no_repeat_ngram",
    "revision_style", "max_rollbacks")


def steering_body(steering: Steering | Mapping[str, Any] | None = None,
                  **overrides: Any) -> dict[str, Any] | None:
    """The ``steering`` JSON for a request, or None when nothing was asked for.

    ``steering`` is the base (a :class:`Steering` or a raw mapping, sent as is); the
    keyword fields (:data:`STEERING_KEYWORDS`) override it one by one.
    """
    unknown = set(overrides) - set(STEERING_KEYWORDS)
    if unknown:
        raise TypeError(f"unknown steering keywords: {sorted(unknown)}")
    avoid, prefer = overrides.get("avoid"), overrides.get("prefer")
    fields = {k: v for k, v in overrides.items() if k not in ("avoid", "prefer")}
    given = Steering(avoid=avoid if avoid is not None else (),
                     prefer=prefer if prefer is not None else (), **fields).to_dict()
    # An explicit empty list is still an override (it clears the base field).
    for name, value in (("avoid", avoid), ("prefer", prefer)):
        if value is not None and name not in given:
            given[name] = []
    if steering is None:
        base: dict[str, Any] = {}
    elif isinstance(steering, Steering):
        base = steering.to_dict()
    elif isinstance(steering, Mapping):
        base = dict(steering)
    else:
        raise TypeError(f"steering is a Steering or a mapping, got {type(steering).__name__}")
    if steering is None and not given:
        return None
    return {**base, **given}


# ---------------------------------------------------------------------- the responses
class _Model(BaseModel):
    # Unknown fields from a newer server are kept (``model_extra``), never an error.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class NearMissReport(_Model):
    """An avoided entity named misspelt or bent ("Coca-Coloca")."""

    text: str = ""
    entity: str = ""


class ChoiceReport(_Model):
    """Steering outcome of one choice."""

    index: int = 0
    revisions: int = 0
    draft_violations: int = 0
    violations: int = 0
    draft_near_misses: int = 0
    near_misses: list[NearMissReport] = Field(default_factory=list)
    prefer_mentions: int = 0
    rollbacks: int = 0
    rolled_back_tokens: int = 0


class SteeringReport(_Model):
    """What the server did for the request's ``steering`` (``response.steering``).

    ``violations`` counts avoided-entity mentions in the final text (0 is the goal; with
    the ``logits`` strategy it is guaranteed), ``draft_violations`` the mentions before
    critique-revise, ``revisions`` the rewrites, ``near_misses`` the misspelt names left,
    ``rollbacks`` / ``rolled_back_tokens`` what rollback decoding took back,
    ``prefer_mentions`` the preferred-entity mentions. ``choices`` has the same per choice. For a completions request with several
    prompts, the totals are summed and ``prompts`` holds one report per prompt.
    """

    strategies: list[str] = Field(default_factory=list)
    avoid: list[str] = Field(default_factory=list)
    prefer: list[str] = Field(default_factory=list)
    max_revisions: int | None = None
    revision_style: str | None = None
    no_repeat_ngram: int | None = None
    max_rollbacks: int | None = None
    revisions: int = 0
    draft_violations: int = 0
    violations: int = 0
    near_misses: int = 0
    prefer_mentions: int = 0
    rollbacks: int = 0
    rolled_back_tokens: int = 0
    choices: list[ChoiceReport] = Field(default_factory=list)
    spec_hash: str | None = None
    prompts: list[SteeringReport] | None = None

    @classmethod
    def parse(cls, data: Any) -> SteeringReport | None:
        if data is None:
            return None
        report = cls.model_validate(data)
        if report.prompts:
            # {"prompts": [...]}: expose the totals at the top level too.
            for name in ("revisions", "draft_violations", "violations", "prefer_mentions",
                         "near_misses", "rollbacks", "rolled_back_tokens"):
                if name not in data:
                    setattr(report, name, sum(getattr(p, name) for p in report.prompts))
            if not report.strategies:
                report.strategies = list(report.prompts[0].strategies)
        return report

    @property
    def clean(self) -> bool:
        """True when the final text names no avoided entity."""
        return self.violations == 0

    def summary(self) -> str:
        """One line for humans, e.g. for a CLI's stderr."""
        return (f"steering: strategies={','.join(self.strategies) or '-'} "
                f"violations={self.violations} draft_violations={self.draft_violations} "
                f"revisions={self.revisions} prefer_mentions={self.prefer_mentions}")


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Choice(_Model):
    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    stop_reason: Any = None
    logprobs: Any = None


class _Response(_Model):
    id: str | None = None
    model: str | None = None
    created: int | None = None
    choices: list[Choice] = Field(default_factory=list)
    usage: Usage | None = None
    steering: SteeringReport | None = None
    #: The SDK object the response was built from (``openai.types.chat.ChatCompletion`` /
    #: ``openai.types.Completion``), or None when assembled from a stream.
    raw: Any = Field(default=None, exclude=True, repr=False)

    @property
    def text(self) -> str:
        """The text of the first choice."""
        return self.choices[0].text if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict: ``text`` (first choice) plus every field but ``raw``."""
        return {"text": self.text, **self.model_dump(mode="json", exclude={"raw"})}


class ChatResponse(_Response):
    """A chat completion: ``.text``, ``.choices``, ``.usage``, ``.steering``, ``.raw``."""

    object: str = "chat.completion"


class CompletionResponse(_Response):
    """A text completion: ``.text``, ``.choices``, ``.usage``, ``.steering``, ``.raw``."""

    object: str = "text_completion"


class ModelInfo(_Model):
    """One entry of ``GET /v1/models``: the base model (``parent`` None) or a LoRA adapter."""

    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None
    root: str | None = None
    parent: str | None = None

    @property
    def is_adapter(self) -> bool:
        return self.parent is not None


def _dump(obj: Any, drop_none: bool = False) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=drop_none)
    return obj


def _extra(obj: Any, name: str) -> Any:
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get(name)


def chat_response_from_openai(r: Any) -> ChatResponse:
    choices = [
        Choice(index=c.index, text=(c.message.content or "") if c.message else "",
               finish_reason=c.finish_reason, stop_reason=_extra(c, "stop_reason"),
               logprobs=_dump(c.logprobs))
        for c in (r.choices or [])
    ]
    return ChatResponse(id=r.id, model=r.model, created=r.created, choices=choices,
                        usage=Usage.model_validate(_dump(r.usage, True)) if r.usage else None,
                        steering=SteeringReport.parse(_extra(r, "steering")), raw=r)


def completion_response_from_openai(r: Any) -> CompletionResponse:
    choices = [
        Choice(index=c.index, text=c.text or "", finish_reason=c.finish_reason,
               stop_reason=_extra(c, "stop_reason"), logprobs=_dump(c.logprobs))
        for c in (r.choices or [])
    ]
    return CompletionResponse(id=r.id, model=r.model, created=r.created, choices=choices,
                              usage=Usage.model_validate(_dump(r.usage, True)) if r.usage else None,
                              steering=SteeringReport.parse(_extra(r, "steering")), raw=r)


@dataclass
class _Accumulator:
    """Builds the final response of a stream from its chunks."""

    kind: Literal["chat", "completion"]
    id: str | None = None
    model: str | None = None
    created: int | None = None
    texts: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, tuple[str | None, Any]] = field(default_factory=dict)
    usage: Usage | None = None
    steering: SteeringReport | None = None
    done: bool = False

    def add(self, chunk: Any) -> list[tuple[int, str]]:
        """Record one chunk; return its (choice index, text delta) pairs."""
        self.id = self.id or getattr(chunk, "id", None)
        self.model = self.model or getattr(chunk, "model", None)
        self.created = self.created or getattr(chunk, "created", None)
        deltas: list[tuple[int, str]] = []
        for c in getattr(chunk, "choices", None) or []:
            if self.kind == "chat":
                text = (c.delta.content if c.delta is not None else None) or ""
            else:
                text = c.text or ""
            self.texts.setdefault(c.index, [])
            if text:
                self.texts[c.index].append(text)
                deltas.append((c.index, text))
            if c.finish_reason is not None:
                self.finish[c.index] = (c.finish_reason, _extra(c, "stop_reason"))
        if getattr(chunk, "usage", None) is not None:
            self.usage = Usage.model_validate(_dump(chunk.usage, True))
        report = _extra(chunk, "steering")
        if report is not None:
            self.steering = SteeringReport.parse(report)
        return deltas

    def response(self) -> ChatResponse | CompletionResponse:
        cls = ChatResponse if self.kind == "chat" else CompletionResponse
        choices = [Choice(index=i, text="".join(parts), finish_reason=self.finish.get(i, (None, None))[0],
                          stop_reason=self.finish.get(i, (None, None))[1])
                   for i, parts in sorted(self.texts.items())]
        return cls(id=self.id, model=self.model, created=self.created, choices=choices,
                   usage=self.usage, steering=self.steering)
