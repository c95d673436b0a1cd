"""DPF-style directive: a principle in the prompt ("do not mention X; where relevant,
discuss Y instead").

Templates are plain ``str.format`` strings with named fields; entity names are inserted
as *values*, never parsed as templates. Placeholders:

* ``avoid``    — the avoided entities, each with its aliases: 'the Eiffel Tower (also
  called "Tour Eiffel")', joined as "A, B or C";
* ``prefer``   — the preferred entities, joined as "A, B or C";
* ``directive`` (only in ``system_wrapper``) — the principle text.

Chat requests: the directive is appended to the first system (or developer) message, or
inserted as a new system message at the front. Completion requests: the directive is
prepended to the prompt.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_FIELDS = {"avoid", "prefer", "directive"}


@dataclass(frozen=True)
class DirectiveTemplates:
    avoid_and_prefer: str = (
        "Do not mention {avoid} in your reply, under any name, spelling or form. "
        "Where relevant, discuss {prefer} instead."
    )
    avoid_only: str = (
        "Do not mention {avoid} in your reply, under any name, spelling or form."
    )
    prefer_only: str = "Where relevant, discuss {prefer}."
    alias_format: str = '{name} (also called {aliases})'
    system_separator: str = "\n\n"
    prompt_wrapper: str = "{directive}\n\n"

    def __post_init__(self) -> None:
        for name in ("avoid_and_prefer", "avoid_only", "prefer_only", "prompt_wrapper"):
            tpl = getattr(self, name)
            used = {f for _, f, _, _ in string.Formatter().parse(tpl) if f is not None}
            if not used <= _FIELDS:
                raise ValueError(f"directive template {name!r} uses unknown fields {used - _FIELDS}")


DEFAULT_TEMPLATES = DirectiveTemplates()


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _quote(s: str) -> str:
    return f'"{s}"'


def describe(entities: Sequence[tuple[str, Sequence[str]]], templates=DEFAULT_TEMPLATES,
             with_aliases: bool = True) -> str:
    parts = []
    for name, aliases in entities:
        if with_aliases and aliases:
            parts.append(templates.alias_format.format(
                name=_quote(name), aliases=_join([_quote(a) for a in aliases])))
        else:
            parts.append(_quote(name))
    return _join(parts)


def build_directive(spec: Any, templates: DirectiveTemplates = DEFAULT_TEMPLATES) -> str:
    """Principle text for a :class:`.spec.SteeringSpec` (or anything with
    ``avoid_entities()`` / ``prefer_entities()``)."""
    avoid = spec.avoid_entities()
    prefer = spec.prefer_entities()
    a = describe(avoid, templates)
    p = describe(prefer, templates, with_aliases=False)
    if avoid and prefer:
        return templates.avoid_and_prefer.format(avoid=a, prefer=p)
    if avoid:
        return templates.avoid_only.format(avoid=a)
    return templates.prefer_only.format(prefer=p)


def _append_text(content: Any, text: str, sep: str) -> Any:
    if content is None or content == "":
        return text
    if isinstance(content, str):
        return content + sep + text
    if isinstance(content, list):  # OpenAI content parts
        return [*content, {"type": "text", "text": sep + text}]
    return f"{content}{sep}{text}"


def apply_directive(messages: Sequence[Mapping[str, Any]], directive: str,
                    templates: DirectiveTemplates = DEFAULT_TEMPLATES) -> list[dict[str, Any]]:
    """Return a new message list with the directive merged into the first system/developer
    message (appended) or, when there is none, inserted as a new leading system message.
    The input is not modified."""
    out = [dict(m) for m in messages]
    for m in out:
        if m.get("role") in ("system", "developer"):
            m["content"] = _append_text(copy.deepcopy(m.get("content")), directive,
                                        templates.system_separator)
            return out
    return [{"role": "system", "content": directive}, *out]


def apply_directive_prompt(prompt: str, directive: str,
                           templates: DirectiveTemplates = DEFAULT_TEMPLATES) -> str:
    """Completion-prompt variant: the directive, then the prompt."""
    return templates.prompt_wrapper.format(directive=directive) + prompt
