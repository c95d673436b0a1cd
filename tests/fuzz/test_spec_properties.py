"""Property-based fuzzing of the steering spec parser and of the engine form's parser.

* ``SteeringSpec.model_validate`` / ``parse_steering`` on arbitrary JSON-like values, JSON
  text and bytes, and near-valid specs (values at and just past every limit, odd Unicode):
  nothing but ``pydantic.ValidationError`` / ``SteeringPolicyError`` (both ValueError) comes
  out, nothing hangs, and an accepted spec respects every documented limit
  (control/limits.py) and hashes stably (alias / strategy / key order do not matter).
* ``EngineSteering.parse`` (control/engine_args.py) on arbitrary dicts: only ValueError,
  and what it accepts respects its own limits.

Fast (no server, no model). Hypothesis runs derandomized, so CI sees the same cases.
"""

from __future__ import annotations

import json
import math
import random
import signal
import unicodedata
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from pydantic import ValidationError

from greyelephant.control import limits as L
from greyelephant.control.engine_args import EngineSteering
from greyelephant.control.normalize import fold_form, normalize_text
from greyelephant.control.spec import (
    STRATEGY_ORDER,
    SteeringPolicy,
    SteeringPolicyError,
    SteeringSpec,
    parse_steering,
)

# One example may take this long (a spec near every limit expands thousands of surface
# forms; the machine may be busy). Past it, the example counts as a hang.
HANG_SECONDS = 20.0
FAST = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
SLOW = settings(FAST, max_examples=200)

SPEC_KEYS = ("avoid", "prefer", "strategies", "max_revisions", "prefer_bias",
             "no_repeat_ngram", "revision_style", "max_rollbacks")
ENGINE_KEYS = ("v", "avoid", "prefer", "prefer_bias", "no_repeat_ngram", "signal",
               "rollback_mass", "resume", "start_ban", "min_tokens")


class Hang(Exception):
    pass


@contextmanager
def bounded(seconds: float = HANG_SECONDS):
    """Fail an example that runs longer than ``seconds`` (SIGALRM: main thread, Unix)."""

    def expire(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _note(label: str) -> None:
    """Count outcomes in Hypothesis' statistics (pytest --hypothesis-show-statistics)."""
    try:
        event(label)
    except InvalidArgument:  # not inside a Hypothesis test
        pass


def parse(data: Any, policy: SteeringPolicy | None = None) -> SteeringSpec | None:
    """The spec, or None when it was rejected the documented way; anything else fails."""
    with bounded():
        try:
            spec = parse_steering(data, policy)
        except (ValidationError, SteeringPolicyError) as exc:
            _note(f"rejected: {type(exc).__name__}")
            return None
    _note("accepted")
    return spec


def engine_parse(data: Any) -> EngineSteering | None:
    with bounded():
        try:
            engine = EngineSteering.parse(data)
        except ValueError:  # pydantic.ValidationError is one
            _note("rejected")
            return None
    _note("accepted")
    return engine


# -- strategies -----------------------------------------------------------------------------
json_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
# characters that normalisation, folding or the control-character rule treat specially
SPECIAL = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\t", "\n", "\r", "\u00a0", "\u00ad",
           "\u200b", "\u200d", "\u2028", "\ufeff", "\ud800", "\udfff", "\u0301", "\u2019",
           "\ufb03", "\u2122", "\u2153", "\uff23", "\u0130", "\u00df", "'", "-", ".", "_",
           "/", " "]
plain_names = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,10}( [A-Za-z0-9]{1,8}){0,2}",
                            fullmatch=True)


@st.composite
def names(draw) -> Any:
    """Entity names and aliases: plain, odd, around the length limit, or not strings."""
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return draw(plain_names)
    if kind <= 5:  # a plain name with special characters spliced in
        base = list(draw(plain_names))
        for _ in range(draw(st.integers(1, 3))):
            base.insert(draw(st.integers(0, len(base))), draw(st.sampled_from(SPECIAL)))
        return "".join(base)
    if kind == 6:  # around MAX_NAME_CHARS (before and after normalisation)
        n = draw(st.sampled_from([L.MAX_NAME_CHARS - 1, L.MAX_NAME_CHARS,
                                  L.MAX_NAME_CHARS + 1, L.MAX_NAME_CHARS // 3 + 1]))
        unit = draw(st.sampled_from(["a", "ab ", "\ufb03", "\u2153", " a ", "\u00e9"]))
        return (unit * n)[:n] if len(unit) == 1 else unit * (n // len(unit) + 1)
    if kind == 7:
        return draw(st.text(max_size=12))
    if kind == 8:
        return draw(st.text(st.sampled_from(SPECIAL), max_size=4))
    return draw(json_scalars)


def _count(draw, limit: int) -> int:
    return draw(st.sampled_from([0, 1, 2, 3, limit - 1, limit, limit + 1]))


@st.composite
def entities(draw) -> Any:
    shape = draw(st.integers(0, 9))
    if shape <= 3:
        return draw(names())
    if shape <= 8:
        entity: dict[str, Any] = {"entity": draw(names())}
        if draw(st.booleans()):
            n = _count(draw, L.MAX_ALIASES_PER_ENTITY) if shape == 8 else draw(st.integers(0, 3))
            entity["aliases"] = [draw(names()) for _ in range(n)]
        if draw(st.integers(0, 9)) == 0:
            entity[draw(st.sampled_from(["alias", "x", "Entity"]))] = draw(json_scalars)
        return entity
    return draw(json_values)


def _many_entities(draw, n: int) -> list[Any]:
    """n entities cheaply (distinct plain names; a few drawn ones)."""
    out: list[Any] = [f"brand {i} name" for i in range(n)]
    for _ in range(min(n, 3)):
        out[draw(st.integers(0, n - 1))] = draw(entities())
    return out


NUMBERS = [None, -1, 0, 1, 2, 3, 4, 5, L.MAX_REVISIONS, L.MAX_REVISIONS + 1,
           L.MAX_NO_REPEAT_NGRAM, L.MAX_NO_REPEAT_NGRAM + 1, L.MAX_ROLLBACKS,
           L.MAX_ROLLBACKS + 1, L.MAX_PREFER_BIAS, L.MAX_PREFER_BIAS + 0.001, -0.0, 0.5, 2.0,
           1e308, -1e-300, float("nan"), float("inf"), -float("inf"), True, False, "4", "",
           [], {}, 2**64]


VALID_VALUES = {
    "max_revisions": st.integers(0, L.MAX_REVISIONS),
    "prefer_bias": st.floats(0.0, L.MAX_PREFER_BIAS),
    "no_repeat_ngram": st.sampled_from([0, *range(2, L.MAX_NO_REPEAT_NGRAM + 1)]),
    "max_rollbacks": st.integers(0, L.MAX_ROLLBACKS),
    "revision_style": st.sampled_from(["rewrite", "in_context"]),
}


@st.composite
def valid_entities(draw) -> Any:
    name = draw(plain_names)
    if draw(st.booleans()):
        return name
    return {"entity": name, "aliases": draw(st.lists(plain_names, max_size=3))}


@st.composite
def valid_specs(draw) -> dict[str, Any]:
    spec: dict[str, Any] = {"avoid": draw(st.lists(valid_entities(), min_size=1, max_size=3))}
    if draw(st.booleans()):
        spec["prefer"] = draw(st.lists(valid_entities(), max_size=2))
    if draw(st.booleans()):
        spec["strategies"] = draw(st.permutations(STRATEGY_ORDER))[:draw(st.integers(1, 3))]
    for key, values in VALID_VALUES.items():
        if draw(st.booleans()):
            spec[key] = draw(values)
    return spec


def _mutate(draw, spec: dict[str, Any]) -> None:
    """One step off the valid path: a value at or past a limit, an odd name, a wrong type."""
    kind = draw(st.integers(0, 8))
    lists = [k for k in ("avoid", "prefer") if isinstance(spec.get(k), list) and spec[k]]
    if kind <= 1 and lists:  # an odd name or alias
        entities_ = spec[draw(st.sampled_from(lists))]
        i = draw(st.integers(0, len(entities_) - 1))
        entity = entities_[i]
        if isinstance(entity, dict) and entity.get("aliases") and draw(st.booleans()):
            entity["aliases"][draw(st.integers(0, len(entity["aliases"]) - 1))] = draw(names())
        elif isinstance(entity, dict):
            entity["entity"] = draw(names())
        else:
            entities_[i] = draw(names())
    elif kind == 2:  # entities per list around the limit
        spec[draw(st.sampled_from(["avoid", "prefer"]))] = _many_entities(
            draw, _count(draw, L.MAX_ENTITIES_PER_LIST))
    elif kind == 3 and lists:  # aliases per entity around the limit
        entities_ = spec[draw(st.sampled_from(lists))]
        i = draw(st.integers(0, len(entities_) - 1))
        n = _count(draw, L.MAX_ALIASES_PER_ENTITY)
        base = entities_[i]["entity"] if isinstance(entities_[i], dict) else entities_[i]
        entities_[i] = {"entity": base, "aliases": [f"{base} alias {j}" for j in range(n)]}
    elif kind == 4:  # a number at or past its bounds, or of the wrong type
        spec[draw(st.sampled_from(list(VALID_VALUES)))] = draw(st.sampled_from(NUMBERS))
    elif kind == 5:
        spec["strategies"] = draw(st.sampled_from(
            [[], ["logits", "logits"], ["magic"], "logits", ["Logits"], None,
             [*STRATEGY_ORDER, "directive"], [1]]))
    elif kind == 6:  # the lists themselves
        key = draw(st.sampled_from(["avoid", "prefer"]))
        value = draw(st.sampled_from([None, "Nike", {"entity": "Nike"}, [], 5, [[]], [None],
                                      "__drop__"]))
        if value == "__drop__":
            spec.pop(key, None)
        else:
            spec[key] = value
    elif kind == 7:  # an unknown key, at the top or in an entity
        target = spec
        if lists and draw(st.booleans()):
            entity = spec[lists[0]][0]
            target = entity if isinstance(entity, dict) else target
        target[draw(st.sampled_from(["alias", "x", "Avoid", "entities", ""]))] = 1
    else:  # any JSON value for any field
        spec[draw(st.sampled_from(SPEC_KEYS))] = draw(json_values)


@st.composite
def near_valid_specs(draw) -> dict[str, Any]:
    """Valid specs, and specs one to three steps off (about half of them are accepted)."""
    spec = draw(valid_specs())
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        _mutate(draw, spec)
    return spec


# -- the invariants of an accepted spec -----------------------------------------------------
def _clean(name: str) -> None:
    assert isinstance(name, str)
    assert 1 <= len(name) <= L.MAX_NAME_CHARS, name
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in name), repr(name)
    assert name == normalize_text(name), repr(name)
    assert name == name.strip() and "  " not in name, repr(name)
    assert fold_form(name), repr(name)


def check_limits(spec: SteeringSpec) -> None:
    assert spec.avoid or spec.prefer
    assert len(spec.avoid) <= L.MAX_ENTITIES_PER_LIST
    assert len(spec.prefer) <= L.MAX_ENTITIES_PER_LIST
    for entity in (*spec.avoid, *spec.prefer):
        _clean(entity.entity)
        assert len(entity.aliases) <= L.MAX_ALIASES_PER_ENTITY
        assert len(set(entity.aliases)) == len(entity.aliases)
        assert entity.entity not in entity.aliases
        for alias in entity.aliases:
            _clean(alias)
    assert len(spec.avoid_patterns) + len(spec.prefer_patterns) <= L.MAX_SURFACE_FORMS
    if spec.strategies is not None:
        assert spec.strategies
        assert list(spec.strategies) == [s for s in STRATEGY_ORDER if s in spec.strategies]
    if spec.max_revisions is not None:
        assert type(spec.max_revisions) is int
        assert 0 <= spec.max_revisions <= L.MAX_REVISIONS
    if spec.prefer_bias is not None:
        assert math.isfinite(spec.prefer_bias)
        assert 0.0 <= spec.prefer_bias <= L.MAX_PREFER_BIAS
    if spec.no_repeat_ngram is not None:
        assert type(spec.no_repeat_ngram) is int
        assert spec.no_repeat_ngram == 0 or 2 <= spec.no_repeat_ngram <= L.MAX_NO_REPEAT_NGRAM
    if spec.max_rollbacks is not None:
        assert type(spec.max_rollbacks) is int
        assert 0 <= spec.max_rollbacks <= L.MAX_ROLLBACKS
    assert spec.revision_style in (None, "rewrite", "in_context")
    # the engine form derived from it is accepted by the engine's own parser
    engine = spec.engine_steering(signal=7)
    if engine is not None:
        assert EngineSteering.parse(engine.to_extra_args()) == engine
        check_engine_limits(engine)
    filled = spec.with_defaults()
    assert filled.strategies and filled.max_revisions is not None
    assert filled.spec_hash() == spec.with_defaults().spec_hash()


def check_engine_limits(engine: EngineSteering) -> None:
    forms = [f for group in engine.avoid for f in group] + list(engine.prefer)
    assert len(forms) <= L.MAX_SURFACE_FORMS
    assert all(isinstance(f, str) and len(f) <= L.MAX_ENGINE_FORM_CHARS for f in forms)
    assert math.isfinite(engine.prefer_bias) and 0.0 <= engine.prefer_bias <= L.MAX_PREFER_BIAS
    assert engine.no_repeat_ngram == 0 or 2 <= engine.no_repeat_ngram <= L.MAX_NO_REPEAT_NGRAM
    assert all(0 <= g < len(engine.avoid) for g in engine.start_ban)
    assert engine.resume >= 0 and engine.min_tokens >= 0
    assert engine.signal is None or engine.signal >= 0
    if engine.rollback_mass is not None:
        assert 0.0 < engine.rollback_mass <= 1.0 and engine.signal is not None


# -- the tests ------------------------------------------------------------------------------
@FAST
@given(value=json_values)
def test_arbitrary_json_values_are_rejected_cleanly(value):
    spec = parse(value)
    if spec is not None:
        check_limits(spec)


@FAST
@given(value=st.dictionaries(st.sampled_from([*SPEC_KEYS, "entity", "aliases", "x"]),
                             json_values, max_size=6))
def test_dicts_with_spec_keys_are_rejected_cleanly(value):
    spec = parse(value)
    if spec is not None:
        check_limits(spec)


@FAST
@given(raw=st.one_of(json_values.map(json.dumps), st.text(max_size=60),
                     st.binary(max_size=60),
                     near_valid_specs().map(lambda s: json.dumps(s, allow_nan=True))))
def test_json_text_and_bytes(raw):
    spec = parse(raw)
    if spec is not None:
        check_limits(spec)


@SLOW
@given(value=near_valid_specs())
def test_near_valid_specs(value):
    spec = parse(value)
    if spec is not None:
        check_limits(spec)


@SLOW
@given(value=near_valid_specs(),
       allowed=st.lists(st.sampled_from(STRATEGY_ORDER), min_size=1, max_size=3, unique=True))
def test_server_policy(value, allowed):
    policy = SteeringPolicy(allowed_strategies=tuple(allowed),
                            default_strategies=tuple(allowed[:1]))
    spec = parse(value, policy)
    if spec is not None:
        check_limits(spec)
        assert set(spec.strategies) <= set(allowed)


def _permuted(value: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    """The same spec written differently: key order, alias order, strategy order."""
    out: dict[str, Any] = {}
    keys = list(value)
    rnd.shuffle(keys)
    for key in keys:
        v = value[key]
        if key in ("avoid", "prefer") and isinstance(v, list):
            v = [_permuted_entity(e, rnd) for e in v]
        elif key == "strategies" and isinstance(v, list):
            v = rnd.sample(v, len(v))
        out[key] = v
    return out


def _permuted_entity(entity: Any, rnd: random.Random) -> Any:
    if not isinstance(entity, dict):
        return entity
    items = list(entity.items())
    rnd.shuffle(items)
    out = dict(items)
    if isinstance(out.get("aliases"), list):
        out["aliases"] = rnd.sample(out["aliases"], len(out["aliases"]))
    return out


@SLOW
@given(value=near_valid_specs(), seed=st.integers(0, 2**32 - 1))
def test_hash_is_stable_under_permutations(value, seed):
    spec = parse(value)
    other = parse(_permuted(value, random.Random(seed)))
    assert (spec is None) == (other is None)
    if spec is None:
        return
    assert other.spec_hash() == spec.spec_hash()
    assert other.with_defaults().spec_hash() == spec.with_defaults().spec_hash()
    # the same spec sent as JSON text, and re-parsed from its own canonical form
    again = parse(json.dumps(value, allow_nan=True))
    assert again is not None and again.spec_hash() == spec.spec_hash()
    assert len(spec.spec_hash()) == 64


@st.composite
def engine_dicts(draw) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from([*ENGINE_KEYS, "x"]), unique=True, max_size=8)):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            out[key] = draw(json_values)
        elif key == "avoid":
            out[key] = draw(st.lists(st.one_of(names(), st.lists(names(), max_size=3)),
                                     max_size=4))
        elif key == "prefer":
            out[key] = draw(st.lists(names(), max_size=4))
        elif key == "start_ban":
            out[key] = draw(st.lists(st.integers(-2, 5) | json_scalars, max_size=3))
        else:
            out[key] = draw(st.sampled_from(NUMBERS) | st.integers(-3, 40)
                            | st.floats(-1, 12))
    if draw(st.integers(0, 9)) == 0:  # many / long forms
        n = draw(st.sampled_from([L.MAX_SURFACE_FORMS, L.MAX_SURFACE_FORMS + 1]))
        out["prefer"] = [f"f{i}" for i in range(n)]
    if draw(st.integers(0, 9)) == 0:
        n = draw(st.sampled_from([L.MAX_ENGINE_FORM_CHARS, L.MAX_ENGINE_FORM_CHARS + 1]))
        out["avoid"] = [["x" * n]]
    return out


@FAST
@given(value=engine_dicts() | json_values)
def test_engine_steering_parse(value):
    engine = engine_parse(value)
    if engine is not None:
        assert isinstance(value, dict)
        check_engine_limits(engine)
        assert EngineSteering.parse(engine.to_extra_args()) == engine


def test_specs_at_every_limit_are_accepted_quickly():
    """The largest spec the limits allow parses (within HANG_SECONDS), and one more of
    anything is refused."""
    aliases = [f"alias {j}" for j in range(L.MAX_ALIASES_PER_ENTITY)]
    big = {"avoid": [{"entity": f"e{i}", "aliases": [f"{a} of {i}" for a in aliases[:1]]}
                     for i in range(L.MAX_ENTITIES_PER_LIST)],
           "prefer": [{"entity": "p" * L.MAX_NAME_CHARS,
                       "aliases": [f"pref {j}" for j in range(L.MAX_ALIASES_PER_ENTITY)]}],
           "strategies": list(STRATEGY_ORDER), "max_revisions": L.MAX_REVISIONS,
           "prefer_bias": L.MAX_PREFER_BIAS, "no_repeat_ngram": L.MAX_NO_REPEAT_NGRAM,
           "max_rollbacks": L.MAX_ROLLBACKS, "revision_style": "in_context"}
    spec = parse(big)
    assert spec is not None
    check_limits(spec)
    over = [
        {**big, "avoid": [*big["avoid"], "one more"]},
        {**big, "prefer": [{**big["prefer"][0], "aliases": [*big["prefer"][0]["aliases"],
                                                            "one more"]}]},
        {**big, "prefer": [{**big["prefer"][0], "entity": "p" * (L.MAX_NAME_CHARS + 1)}]},
        {**big, "max_revisions": L.MAX_REVISIONS + 1},
        {**big, "prefer_bias": L.MAX_PREFER_BIAS * 1.001},
        {**big, "no_repeat_ngram": L.MAX_NO_REPEAT_NGRAM + 1},
        {**big, "max_rollbacks": L.MAX_ROLLBACKS + 1},
        {**big, "prefer": [{**big["prefer"][0], "entity": "pp\x00pp"}]},
    ]
    for value in over:
        assert parse(value) is None


@pytest.mark.parametrize("name, ok", [
    ("a" * L.MAX_NAME_CHARS, True),
    ("a" * (L.MAX_NAME_CHARS + 1), False),
    # NFKC: "ﬃ" is three letters, so 43 of them are 129 characters after normalisation
    ("\ufb03" * 42, True),
    ("\ufb03" * 43, False),
    ("  " + "a" * L.MAX_NAME_CHARS + "\n", True),  # whitespace is stripped first
    ("Nike\x00", False),
    ("Ni\u200bke", True),  # a format character, not a control character
    ("\ud800Nike", False),  # a lone surrogate
])
def test_name_length_and_characters(name, ok):
    assert (parse({"avoid": [name]}) is not None) is ok
