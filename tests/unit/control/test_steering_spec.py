"""SteeringSpec: parsing, limits, hashing, policy merge, engine args."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from greyelephant.control import spec as S
from greyelephant.control.spec import SteeringPolicy, SteeringPolicyError, SteeringSpec, parse_steering

EXAMPLE = {
    "avoid": ["pink elephant", {"entity": "Eiffel Tower", "aliases": ["Tour Eiffel"]}],
    "prefer": ["grey elephant"],
    "strategies": ["directive", "logits", "critique_revise"],
    "max_revisions": 2,
}


def test_parse_example():
    s = SteeringSpec.model_validate(EXAMPLE)
    assert [e.entity for e in s.avoid] == ["pink elephant", "Eiffel Tower"]
    assert s.avoid[1].aliases == ("Tour Eiffel",)
    assert s.strategies == ("directive", "logits", "critique_revise")
    assert "eiffel tower" in s.avoid_patterns and "grey elephant" in s.prefer_patterns
    assert "Tour Eiffel" in s.avoid_forms


def test_normalisation_of_names():
    s = SteeringSpec.model_validate({"avoid": [{"entity": "  McDonald\u2019s ", "aliases": [
        "McDonalds", "McDonalds", "McDonald's"]}]})
    assert s.avoid[0].entity == "McDonald's"
    assert s.avoid[0].aliases == ("McDonalds",)  # deduplicated, self-alias dropped


@pytest.mark.parametrize(
    "body, needle",
    [
        ({}, "at least one entity"),
        ({"avoid": [], "prefer": []}, "at least one entity"),
        ({"avoid": ["x"], "unknown": 1}, "Extra inputs"),
        ({"avoid": [{"entity": "x", "alias": []}]}, "Extra inputs"),
        ({"avoid": "Nike"}, "list of entities"),
        ({"avoid": [""]}, "must not be empty"),
        ({"avoid": ["   "]}, "must not be empty"),
        ({"avoid": ["!!!"]}, "letter or digit"),
        ({"avoid": [5]}, "must be a string or an object"),
        ({"avoid": [{"entity": 5}]}, "must be a string"),
        ({"avoid": ["x" * (S.MAX_NAME_CHARS + 1)]}, "longer than"),
        ({"avoid": [{"entity": "x", "aliases": "y"}]}, "list of strings"),
        ({"avoid": [{"entity": "x", "aliases": ["a"] * (S.MAX_ALIASES_PER_ENTITY + 1)}]},
         "aliases per entity"),
        ({"avoid": [f"e{i}" for i in range(S.MAX_ENTITIES_PER_LIST + 1)]}, "at most"),
        ({"avoid": ["x"], "strategies": []}, "at least 1"),
        ({"avoid": ["x"], "strategies": ["logits", "logits"]}, "repeat"),
        ({"avoid": ["x"], "strategies": ["magic"]}, "directive"),
        ({"avoid": ["x"], "max_revisions": S.MAX_REVISIONS + 1}, "less than or equal"),
        ({"avoid": ["x"], "max_revisions": -1}, "greater than or equal"),
        ({"avoid": ["x"], "prefer_bias": 100}, "less than or equal"),
        ({"avoid": ["x"], "no_repeat_ngram": 1}, "1 would forbid any token twice"),
        ({"avoid": ["x"], "no_repeat_ngram": S.MAX_NO_REPEAT_NGRAM + 1}, "less than or equal"),
        ({"avoid": ["x"], "no_repeat_ngram": -1}, "greater than or equal"),
        ({"avoid": ["x"], "no_repeat_ngram": True}, "valid integer"),
        ({"avoid": ["x"], "no_repeat_ngram": 4.0}, "valid integer"),
        ({"avoid": ["x"], "no_repeat_ngram": "4"}, "valid integer"),
        ({"avoid": ["Amazon"], "prefer": ["Amazon Web Services"]}, "could never be said"),
        ({"avoid": ["Building"], "prefer": ["Empire State Building"]}, "could never be said"),
    ],
)
def test_invalid(body, needle):
    with pytest.raises(ValidationError) as ei:
        SteeringSpec.model_validate(body)
    assert needle in str(ei.value), str(ei.value)


def test_surface_form_cap():
    # 1,000+ forms work ...
    ok = {"avoid": [{"entity": f"Brand {i}", "aliases": [f"Alias {i} Name {j}" for j in range(20)]}
                    for i in range(20)]}
    s = SteeringSpec.model_validate(ok)
    assert 1000 <= len(s.avoid_patterns) <= S.MAX_SURFACE_FORMS
    # ... and the cap is enforced with a clear message
    big = {"avoid": [{"entity": f"Big Name {i}", "aliases": [f"Other Big Name {i} {j}" for j in range(32)]}
                     for i in range(64)]}
    with pytest.raises(ValidationError, match="surface forms; the limit is 4096"):
        SteeringSpec.model_validate(big)


def test_hash_stable_and_sensitive():
    a = SteeringSpec.model_validate(EXAMPLE)
    b = SteeringSpec.model_validate({**EXAMPLE, "strategies": ["critique_revise", "logits", "directive"]})
    c = SteeringSpec.model_validate({**EXAMPLE, "avoid": ["pink elephant", {
        "entity": "Eiffel Tower", "aliases": ["Tour Eiffel", "La Tour"]}]})
    assert a.spec_hash() == b.spec_hash() == SteeringSpec.model_validate(EXAMPLE).spec_hash()
    assert a.spec_hash() != c.spec_hash()
    assert len(a.spec_hash()) == 64


def test_policy_defaults_and_allowance():
    s = SteeringSpec.model_validate({"avoid": ["Nike"]})
    assert s.strategies is None
    m = s.with_defaults()
    assert m.strategies == ("directive", "logits") and m.max_revisions == 2 and m.prefer_bias == 4.0
    pol = SteeringPolicy(default_strategies=("logits",), allowed_strategies=("directive", "logits"),
                         default_prefer_bias=3.0)
    assert s.with_defaults(pol).strategies == ("logits",)
    with pytest.raises(SteeringPolicyError):
        SteeringSpec.model_validate({"avoid": ["x"], "strategies": ["critique_revise"]}).with_defaults(pol)
    assert parse_steering('{"avoid": ["Nike"], "max_revisions": 0}', pol).max_revisions == 0


def test_engine_args():
    s = parse_steering({"avoid": ["Nike"], "prefer": ["Adidas"], "prefer_bias": 5}, SteeringPolicy())
    args = s.engine_args()
    assert args == {"v": 2, "avoid": [s.avoid[0].patterns()], "prefer": s.prefer_patterns,
                    "prefer_bias": 5.0, "no_repeat_ngram": S.DEFAULT_NO_REPEAT_NGRAM,
                    "signal": None, "rollback_mass": None, "resume": 0, "start_ban": [],
                    "min_tokens": 0}
    assert "nike" in args["avoid"][0] and "adidas" in args["prefer"]
    # with the server's signal token, rollback is on (off when max_rollbacks is 0)
    on = s.engine_steering(signal=7)
    assert on.signal == 7 and on.rollback
    assert not s.engine_steering(signal=7, rollback=False).rollback
    off = parse_steering({"avoid": ["Nike"], "max_rollbacks": 0}, SteeringPolicy())
    assert off.engine_steering(signal=7).signal == 7 and not off.engine_steering(signal=7).rollback
    assert parse_steering({"avoid": ["Nike"], "strategies": ["directive"]}).engine_args() is None
    import json
    json.dumps(args)  # JSON-able


def test_model_copy_does_not_keep_stale_derived_forms():
    s = SteeringSpec.model_validate({"avoid": ["Nike"], "prefer": ["Adidas"]})
    assert "nike" in s.avoid_patterns
    t = s.model_copy(update={"avoid": (s.prefer[0],)})
    assert "adidas" in t.avoid_patterns and "nike" not in t.avoid_patterns
    assert s.with_defaults().avoid_patterns == s.avoid_patterns


def test_no_repeat_ngram_defaults_hash_and_engine_args():
    s = SteeringSpec.model_validate({"avoid": ["Nike"]})
    assert s.no_repeat_ngram is None and s.effective_no_repeat_ngram() == S.DEFAULT_NO_REPEAT_NGRAM
    assert s.with_defaults().no_repeat_ngram == S.DEFAULT_NO_REPEAT_NGRAM == 4
    pol = SteeringPolicy(default_no_repeat_ngram=6)
    assert s.with_defaults(pol).engine_args()["no_repeat_ngram"] == 6
    off = parse_steering({"avoid": ["Nike"], "no_repeat_ngram": 0}, pol)
    assert off.no_repeat_ngram == 0 and off.engine_args()["no_repeat_ngram"] == 0
    assert parse_steering('{"avoid": ["Nike"], "no_repeat_ngram": 3}').no_repeat_ngram == 3
    with pytest.raises(ValidationError, match="1 would forbid"):
        SteeringPolicy(default_no_repeat_ngram=1)
    # absent from the hash when unset (older hashes unchanged), part of it when set
    assert "no_repeat_ngram" not in s.canonical()
    assert s.spec_hash() != s.model_copy(update={"no_repeat_ngram": 4}).spec_hash()


def test_revision_style_defaults_validation_and_hash():
    s = SteeringSpec.model_validate({"avoid": ["Nike"]})
    assert s.revision_style is None and "revision_style" not in s.canonical()
    assert s.with_defaults().revision_style == "rewrite"
    pol = SteeringPolicy(default_revision_style="in_context")
    assert s.with_defaults(pol).revision_style == "in_context"
    t = parse_steering({"avoid": ["Nike"], "revision_style": "rewrite"}, pol)
    assert t.revision_style == "rewrite"
    assert t.spec_hash() != t.model_copy(update={"revision_style": "in_context"}).spec_hash()
    with pytest.raises(ValidationError, match="rewrite"):
        SteeringSpec.model_validate({"avoid": ["Nike"], "revision_style": "paraphrase"})


def test_max_rollbacks_defaults_validation_and_hash():
    s = SteeringSpec.model_validate({"avoid": ["Nike"]})
    assert s.max_rollbacks is None and "max_rollbacks" not in s.canonical()
    assert s.with_defaults().max_rollbacks == S.DEFAULT_MAX_ROLLBACKS
    assert s.with_defaults(SteeringPolicy(default_max_rollbacks=0)).max_rollbacks == 0
    t = parse_steering({"avoid": ["Nike"], "max_rollbacks": 3})
    assert t.spec_hash() != t.model_copy(update={"max_rollbacks": 4}).spec_hash()
    for bad in [-1, S.MAX_ROLLBACKS + 1, 1.5, "2", True]:
        with pytest.raises(ValidationError):
            SteeringSpec.model_validate({"avoid": ["Nike"], "max_rollbacks": bad})
