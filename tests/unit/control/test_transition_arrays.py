"""The compiled step-state transition (``control/transition_arrays.py``) equals
:meth:`.ban_automaton.CompiledSteering.advance`, the Python path it mirrors: for rows
walked through real text into avoid and prefer states, over random tokens and over the
tokens that write, start, abandon and complete the forms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from greyelephant.control.ban_automaton import CompiledSteering, RowState
from greyelephant.control.transition_arrays import (
    GAVE_UP,
    NOT_PACKABLE,
    SpecArrays,
    TokenTexts,
    next_state_key,
    pack_state,
)

TEXT = (" I drank a Pepsi in Paris, then a Pep and a Pe, the Coca- and a Ro, Rome, Pepsico,"
        " a Coke\u00e9 and Ça va, naïve caf\u00e9 Pepsi-Cola.")


@pytest.fixture(scope="module")
def spec(vocab_index):
    return CompiledSteering(vocab_index, ["Rome", ["Coca-Cola", "Coke"]], ["Pepsi"])


@pytest.fixture(scope="module")
def texts(vocab_index):
    return TokenTexts(vocab_index)


@pytest.fixture(scope="module")
def states(spec, tokenizer):
    """Rows' states along the text (and its prefixes, cut at every token)."""
    ids = tokenizer.encode(TEXT)
    out, row = [], spec.new_row()
    for t in ids:
        spec.advance(row, t)
        out.append(dataclasses.replace(row))
    return [s for s in out if not s.violated and not s.pending]


def _key(kind: int, row: RowState) -> int:
    return pack_state((kind, row.avoid, row.pending, row.prefer, row.prefer_done,
                       row.prefer_trying, row.prefer_misses), kind)


def _compute(arrays: SpecArrays, texts: TokenTexts, key: int, t: int) -> int:
    av, pr = arrays.avoid, arrays.prefer
    return next_state_key(key, t, texts.ptr, texts.chars, texts.plain, arrays.alphabet,
                          av.delta, av.sep, av.accept, pr.delta, pr.sep, pr.accept,
                          pr.depth, arrays.boost_at, arrays.boost_ids)


def _check(spec, arrays, texts, row: RowState, t: int) -> None:
    kind = 7
    key = _key(kind, row)
    got = _compute(arrays, texts, key, t)
    if got == GAVE_UP:  # an entry not known yet: after teaching, it is known
        arrays.teach((kind, row.avoid, b"", row.prefer, row.prefer_done,
                      row.prefer_trying, row.prefer_misses), t)
        got = _compute(arrays, texts, key, t)
    assert got != GAVE_UP
    after = dataclasses.replace(row)
    spec.advance(after, t)
    if after.violated or after.pending or not 0 <= t < texts.plain.size or not texts.plain[t]:
        assert got == NOT_PACKABLE  # left to the Python path
    else:
        assert got == _key(kind, after), (row, t, spec.index.texts[t])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_tokens_from_reached_states(spec, texts, states, data):
    arrays = SpecArrays(spec)  # (fresh: every entry learned on the way)
    n = spec.index.vocab_size
    for _ in range(20):
        row = data.draw(st.sampled_from(states))
        t = data.draw(st.integers(min_value=-1, max_value=n))
        _check(spec, arrays, texts, row, t)


def test_the_text_s_own_tokens_and_every_form_token(spec, texts, states, tokenizer):
    """Every state along the text against every token of the text and of the forms'
    spellings (starts, completions, abandoned attempts)."""
    arrays = SpecArrays(spec)
    words = ["Pepsi", " Pepsi", " Pep", "si", " Pe", "psi", " Coca", "-", "Cola", " Coke",
             " Rome", " Ro", "me", "\u00e9", " caf", " na\u00efve"]
    tokens = sorted({*tokenizer.encode(TEXT), *(t for w in words
                                                 for t in tokenizer.encode(w))})
    for row in states:
        for t in tokens:
            _check(spec, arrays, texts, row, t)
    # prefer states with an attempt under way and with the boost spent are covered
    assert any(s.prefer_trying for s in states) and any(s.prefer_done for s in states)


def test_a_spec_without_prefer(vocab_index, texts, tokenizer):
    spec = CompiledSteering(vocab_index, ["Rome"])
    arrays = SpecArrays(spec)
    row = spec.new_row()
    for t in tokenizer.encode(" in Paris and Ro ma"):
        _check(spec, arrays, texts, row, t)
        spec.advance(row, t)


def test_pack_state_refuses_what_it_cannot_hold():
    assert pack_state((1, 2, b"\xc3", 3, False, False, 0), 1) == NOT_PACKABLE  # pending
    assert pack_state((1, 2, b"", 3, False, False, 0), 1 << 16) == NOT_PACKABLE
    assert pack_state((1, 2, b"", 3, False, False, 0), -1) == NOT_PACKABLE
    assert pack_state((1, 1 << 20, b"", 3, False, False, 0), 1) == NOT_PACKABLE
    keys = {pack_state((9, a, b"", p, d, t, m), k) for k in (1, 2) for a in (0, 5)
            for p in (0, 3) for d in (False, True) for t in (False, True) for m in (0, 1)}
    assert len(keys) == 64 and min(keys) > 0  # distinct, and never an empty hash slot


def test_token_texts_hold_the_folded_texts(vocab_index, texts):
    for t in (0, 5, 100, 1000, vocab_index.vocab_size - 1):
        got = "".join(map(chr, texts.chars[texts.ptr[t]:texts.ptr[t + 1]]))
        assert got == (vocab_index.texts[t] or "")
    assert texts.plain.dtype == np.uint8 and texts.plain.size == len(vocab_index.texts)


def _assert_tables_equal_the_automaton(ac, arrays) -> None:
    """Every entry of a table filled whole against the Python automaton: each state's
    step over each character of the alphabet and over one in no key, and its accept."""
    cols = arrays.columns
    outside = "\u2603"  # (in no key)
    for q in range(len(ac)):
        assert arrays.accept[q] == ac.accept(q), q
        assert arrays.sep[q] == (ac.edge[q] == " ")
        for ch in [*cols, outside]:
            if ch == " " and ac.edge[q] == " ":
                continue  # a separator run collapses before the table is read
            want = ac.step(q, ch)
            assert arrays.delta[q, cols.get(ch, len(cols))] == want, (q, ac.label(q), ch)


def test_whole_tables_equal_the_automaton_on_the_dev_set_s_entities(vocab_index):
    import json
    from pathlib import Path

    from greyelephant.control.surface_forms import expand_entity, fold_patterns

    lines = (Path(__file__).resolve().parents[3] / "benchmarks" / "data"
             / "pink_elephant_dev.jsonl").read_text().splitlines()
    cases = [json.loads(line) for line in lines if line.strip()]
    avoid = [fold_patterns(expand_entity(c["avoid"], c["avoid_aliases"])) for c in cases]
    spec = CompiledSteering(vocab_index, avoid, ["the grey elephant", "Louvre"])
    arrays = SpecArrays(spec)
    for ac, tables in ((spec.avoid, arrays.avoid), (spec.prefer, arrays.prefer)):
        _assert_tables_equal_the_automaton(ac, tables)


FORMS = st.lists(st.text(alphabet="ab -", min_size=1, max_size=6), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(avoid=FORMS, prefer=st.lists(st.text(alphabet="ab ", min_size=1, max_size=5),
                                    max_size=3))
def test_whole_tables_equal_the_automaton_for_overlapping_forms(vocab_index, avoid, prefer):
    # a two-letter alphabet and separators: forms that are each other's prefixes,
    # suffixes and repeats, and failure links that end at a separator
    spec = CompiledSteering(vocab_index, avoid, prefer)
    arrays = SpecArrays(spec)
    for ac, tables in ((spec.avoid, arrays.avoid), (spec.prefer, arrays.prefer)):
        _assert_tables_equal_the_automaton(ac, tables)
