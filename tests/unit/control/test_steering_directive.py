"""Directive text and its placement."""

from __future__ import annotations

import pytest

from greyelephant.control.directive import (
    DirectiveTemplates,
    apply_directive,
    apply_directive_prompt,
    build_directive,
)
from greyelephant.control.spec import SteeringSpec


def spec(**kw):
    return SteeringSpec.model_validate(kw)


def test_text():
    d = build_directive(spec(avoid=[{"entity": "Eiffel Tower", "aliases": ["Tour Eiffel"]}, "Big Ben"],
                             prefer=["Louvre"]))
    assert d == ('Do not mention "Eiffel Tower" (also called "Tour Eiffel") or "Big Ben" in your '
                 'reply, under any name, spelling or form. Where relevant, discuss "Louvre" instead.')
    assert build_directive(spec(avoid=["Nike"])).startswith('Do not mention "Nike"')
    assert build_directive(spec(prefer=["Adidas"])) == 'Where relevant, discuss "Adidas".'


def test_custom_templates_and_validation():
    t = DirectiveTemplates(avoid_only="Never say {avoid}.")
    assert build_directive(spec(avoid=["Nike"]), t) == 'Never say "Nike".'
    with pytest.raises(ValueError):
        DirectiveTemplates(avoid_only="Never say {entity}.")
    # braces inside entity names are values, not template fields
    assert "{x}" in build_directive(spec(avoid=["a{x}b"]))


def test_merge_into_system_message():
    msgs = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "hi"}]
    out = apply_directive(msgs, "DIRECTIVE")
    assert out[0] == {"role": "system", "content": "You are helpful.\n\nDIRECTIVE"}
    assert msgs[0]["content"] == "You are helpful."  # input untouched
    assert out[1] == msgs[1]


def test_insert_new_system_message_and_parts():
    out = apply_directive([{"role": "user", "content": "hi"}], "D")
    assert out == [{"role": "system", "content": "D"}, {"role": "user", "content": "hi"}]
    parts = [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}]
    out = apply_directive(parts, "D")
    assert out[0]["content"] == [{"type": "text", "text": "be brief"}, {"type": "text", "text": "\n\nD"}]
    assert parts[0]["content"] == [{"type": "text", "text": "be brief"}]


def test_prompt_variant():
    assert apply_directive_prompt("Once upon a time", "D") == "D\n\nOnce upon a time"
