"""Fail closed: a steered final text that still names an avoided entity is a 500
``steering_violation`` (unless the server runs with ``--on-violation report``)."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest

from greyelephant.control.spec import SteeringSpec
from greyelephant.server.errors import APIError
from greyelephant.server.generation import Choice
from greyelephant.server.steering import ActivePlan


def plan(strategies, on_violation="error"):
    ctx = SimpleNamespace(engine=SimpleNamespace(signal_token=None, vocab_index=None),
                          settings=SimpleNamespace(on_violation=on_violation))
    spec = SteeringSpec(avoid=["Eiffel Tower"], strategies=strategies)
    return ActivePlan(spec, MagicMock(), ctx=ctx)


NAMED = [Choice(index=0, text="Visit the Eiffel Tower at night.")]
CLEAN = [Choice(index=0, text="Visit the Louvre at night.")]


def test_a_logits_steered_answer_that_names_the_entity_is_an_error():
    with pytest.raises(APIError) as caught:
        plan(["directive", "logits"]).record(NAMED)
    assert caught.value.status == 500 and caught.value.code == "steering_violation"


def test_report_mode_returns_it_with_the_violation_counted():
    p = plan(["logits"], on_violation="report")
    p.record(NAMED)
    assert p.choices[0]["violations"] == 1


def test_a_clean_answer_passes():
    p = plan(["logits"])
    p.record(CLEAN)
    assert p.choices[0]["violations"] == 0


def test_directive_alone_promises_nothing_and_reports_the_mention():
    p = plan(["directive"])
    p.record(NAMED)
    assert p.choices[0]["violations"] == 1
