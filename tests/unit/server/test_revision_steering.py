"""A critique-revise revision bans the near misses found so far as aliases of their
entity, and stays steered by the request's own ban when it cannot."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import MagicMock

from greyelephant.control.spec import SteeringSpec
from greyelephant.server.steering import ActivePlan


def plan(prefer=()):
    ctx = SimpleNamespace(engine=SimpleNamespace(signal_token=None, vocab_index=None),
                          settings=SimpleNamespace(on_violation="error"))
    spec = SteeringSpec(avoid=["McDonald's"], prefer=list(prefer),
                        strategies=["critique_revise"])
    return ActivePlan(spec, MagicMock(), ctx=ctx)


def engine_forms(spec: SteeringSpec) -> set[str]:
    """The folded forms the engine bans (its avoid groups, flattened)."""
    return {form for group in spec.engine_args()["avoid"] for form in group}


def test_without_near_misses_a_revision_runs_the_requests_ban():
    p = plan()
    spec, run = p._revision_steering((), None)
    assert spec is p.revision_spec and run is p.revision_run
    assert spec.strategies == ("logits",)


def test_near_misses_ride_in_the_revisions_engine_ban():
    p = plan(prefer=["Burger King"])
    spec, _ = p._revision_steering((("McDonald's", "MacDonald's"),
                                    ("McDonald's", "MacDonalds")), None)
    assert spec.strategies == ("logits",)
    forms = engine_forms(spec)
    assert {"macdonald s", "macdonalds"} <= forms
    assert forms > engine_forms(p.revision_spec)
    # the report's detector is the request's: the near misses stay near misses there
    assert not p.avoid_detector.find("MacDonald's")


def test_an_alias_that_would_make_the_spec_invalid_leaves_the_requests_ban():
    p = plan(prefer=["Burger King"])
    spec, run = p._revision_steering((("McDonald's", "Burger"),), None)
    assert spec is p.revision_spec and run is p.revision_run
    assert engine_forms(spec)  # still steered
