"""SteeringBatch's admission memo (``_admit``): requests of one spec skip validation and
the compile cache after the first, and no argument that validates differently ever shares
an entry (types included), whatever order requests come in."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greyelephant.control import steering_batch as sb
from greyelephant.control.engine_args import EngineSteering
from greyelephant.control.spec import parse_steering
from greyelephant.control.steering_batch import SteeringBatch

BASE = parse_steering({"avoid": ["Coca-Cola", "Nike"], "prefer": ["Pepsi"],
                       "strategies": ["logits"]}).engine_steering(signal=16).to_extra_args()


def fresh(raw: dict) -> dict:
    """The arguments as the engine receives them: decoded anew, no object shared."""
    return json.loads(json.dumps(raw))


def parse_or_error(raw):
    try:
        return EngineSteering.parse(raw)
    except ValueError as e:
        return type(e)


def admit_or_error(batch, raw):
    try:
        return batch._admit(raw)[0]
    except ValueError as e:
        return type(e)


@pytest.fixture(scope="module")
def batch(vocab_index):
    return SteeringBatch(vocab_index, "cpu")


def test_one_spec_is_validated_and_compiled_once(vocab_index):
    batch = SteeringBatch(vocab_index, "cpu")
    first = batch._admit(fresh(BASE))
    hits = batch.cache.hits + batch.cache.misses
    again = batch._admit(fresh(BASE))
    assert again[0] is first[0] and again[1] is first[1]
    assert batch.cache.hits + batch.cache.misses == hits  # the compile cache not asked
    other = batch._admit(fresh({**BASE, "avoid": [["nike"]]}))
    assert other[0].avoid == (("nike",),) and other[1] is not first[1]


def test_a_value_of_another_type_is_validated_on_its_own(batch):
    """``prefer_bias: true`` equals ``1`` in Python but is refused by validation: an
    admitted ``1`` must not let it through."""
    ok = {**BASE, "prefer_bias": 1}
    assert batch._admit(fresh(ok))[0].prefer_bias == 1.0
    bad = {**BASE, "prefer_bias": True}
    assert bad == ok  # (what a memo keyed by equality would conflate)
    for _ in range(2):  # a refused spec is never memoised either
        with pytest.raises(ValueError):
            batch._admit(fresh(bad))


def test_arguments_that_are_no_plain_dict_are_not_memoised(batch):
    parsed = EngineSteering.parse(fresh(BASE))
    assert sb._exact_key(parsed) is None
    assert batch._admit(parsed)[0] is parsed
    assert sb._exact_key({**BASE, "avoid": [object()]}) is None
    assert sb._exact_key({**BASE, "avoid": ["x" * sb.MAX_ADMIT_KEY_BYTES]}) is None


def test_the_memo_is_bounded(vocab_index, monkeypatch):
    monkeypatch.setattr(sb, "MAX_ADMIT_MEMO", 3)
    batch = SteeringBatch(vocab_index, "cpu")
    for n in range(10):
        batch._admit(fresh({**BASE, "min_tokens": n}))
        assert len(batch._admitted) <= 3


def test_an_inactive_spec_admits_no_row(batch):
    raw = fresh({**BASE, "avoid": [], "prefer": [], "no_repeat_ngram": 0})
    assert batch._admit(raw)[1] is None
    batch.add(0, raw, [])
    assert 0 not in batch.rows


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 40),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4))
_values = st.one_of(_scalars, st.lists(st.one_of(_scalars, st.lists(_scalars, max_size=2)),
                                       max_size=3))
_keys = st.sampled_from(sorted(BASE) + ["extra"])
_edits = st.lists(st.tuples(_keys, _values), max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.lists(_edits, min_size=1, max_size=6))
def test_admission_agrees_with_validation_in_any_order(vocab_index, edit_lists):
    """Each request, after any others in one batch, is admitted exactly as validation
    alone would admit (or refuse) it."""
    batch = SteeringBatch(vocab_index, "cpu")
    for edits in edit_lists * 2:  # each spec again, after the others: memo hits
        raw = {**BASE, **dict(edits)}
        assert admit_or_error(batch, fresh(raw)) == parse_or_error(fresh(raw))
