"""NgramTable: many rows' loop guards in one hash table, exactly HF's no_repeat_ngram."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greyelephant.control.loop_guard import NgramGuard, banned_ngram_tokens
from greyelephant.control import ngram_table
from greyelephant.control.ngram_table import TOKEN_LIMIT, NgramTable

# a few small ids (so that n-grams repeat) and the packing's edges
TOKENS = st.one_of(st.integers(0, 4), st.sampled_from([0, TOKEN_LIMIT - 1, TOKEN_LIMIT - 2]))

# one op: ("push", rows to push one token into, the tokens) | ("one", row, token) |
# ("reset", row) | ("close", row) | ("open", n)
OPS = st.lists(st.one_of(
    st.tuples(st.just("push"), st.lists(st.integers(0, 7), max_size=8, unique=True),
              st.lists(TOKENS, min_size=8, max_size=8)),
    st.tuples(st.just("one"), st.integers(0, 7), TOKENS),
    st.tuples(st.just("reset"), st.integers(0, 7)),
    st.tuples(st.just("close"), st.integers(0, 7)),
    st.tuples(st.just("open"), st.integers(2, 4)),
), max_size=60)


@pytest.mark.parametrize("mark_range", [ngram_table.MARK_RANGE, 0],
                         ids=["flags", "isin"])  # the rebuild's two ways to find live uids
@settings(max_examples=300, deadline=None)
@given(ns=st.lists(st.integers(2, 4), min_size=1, max_size=8), ops=OPS)
def test_bans_equal_hf_reference_and_ngram_guard(mark_range, ns, ops):
    default, ngram_table.MARK_RANGE = ngram_table.MARK_RANGE, mark_range
    try:
        _check_bans_against_the_references(ns, ops)
    finally:
        ngram_table.MARK_RANGE = default


def _check_bans_against_the_references(ns, ops):
    table = NgramTable(min_capacity=16)  # small: rebuilds happen
    rows = []  # [handle, n, history, NgramGuard] per open row
    for n in ns:
        rows.append([table.open(n), n, [], NgramGuard(n)])

    def check(r):
        h, n, hist, guard = r
        want = banned_ngram_tokens(hist, n)
        assert set(table.banned(h)) == want == set(guard.banned())

    for op in ops:
        if op[0] == "push" and rows:
            picked = [rows[i % len(rows)] for i in dict.fromkeys(i % len(rows) for i in op[1])]
            tokens = op[2][:len(picked)]
            got = dict(table.push_many(np.array([r[0] for r in picked], dtype=np.int64),
                                       np.array(tokens, dtype=np.int64)))
            for k, (r, t) in enumerate(zip(picked, tokens, strict=True)):
                r[2].append(t)
                want = r[3].push_banned(t)
                assert set(got.get(k, ())) == set(want) == banned_ngram_tokens(r[2], r[1])
                assert k not in got or got[k]  # only rows with bans are returned
        elif op[0] == "one" and rows:
            r = rows[op[1] % len(rows)]
            r[2].append(op[2])
            table.extend(r[0], [op[2]])  # one row's token, as a replay pushes it
            assert set(table.banned(r[0])) == set(r[3].push_banned(op[2]))
        elif op[0] == "reset" and rows:
            r = rows[op[1] % len(rows)]
            table.reset(r[0])
            r[2].clear()
            r[3].reset()
        elif op[0] == "close" and rows:
            r = rows.pop(op[1] % len(rows))
            table.close(r[0])
        elif op[0] == "open":
            rows.append([table.open(op[1]), op[1], [], NgramGuard(op[1])])
        for r in rows:
            check(r)
    assert table.rows == len(rows)


def test_a_long_loop_is_banned_at_every_step_after_it_began():
    table = NgramTable()
    hs = np.array([table.open(4), table.open(2)], dtype=np.int64)
    seq = [7, 8, 9] * 50
    hist = []
    for t in seq:
        hist.append(t)
        got = dict(table.push_many(hs, np.array([t, t], dtype=np.int64)))
        assert set(got.get(0, ())) == banned_ngram_tokens(hist, 4)
        assert set(got.get(1, ())) == banned_ngram_tokens(hist, 2)


def test_many_rows_grow_the_table_and_keep_every_row_exact():
    rng = np.random.default_rng(0)
    table = NgramTable(min_capacity=16)
    hs = np.array([table.open(3) for _ in range(300)], dtype=np.int64)
    guards = [NgramGuard(3) for _ in hs]
    for _ in range(40):
        tokens = rng.integers(0, 6, size=hs.size)
        got = dict(table.push_many(hs, tokens))
        for k, g in enumerate(guards):
            assert set(got.get(k, ())) == set(g.push_banned(int(tokens[k])))


def test_ids_outside_the_packing_and_sizes_past_it_are_refused():
    table = NgramTable()
    h = table.open(4)
    with pytest.raises(ValueError):
        table.extend(h, [TOKEN_LIMIT])
    with pytest.raises(ValueError):
        table.push_many(np.array([h]), np.array([-1]))
    assert not NgramTable.fits(5) and not NgramTable.fits(1) and NgramTable.fits(4)
    with pytest.raises(ValueError):
        table.open(5)


def test_closed_rows_entries_are_dropped_at_a_rebuild():
    table = NgramTable(min_capacity=16)
    for _ in range(20):
        h = table.open(2)
        table.extend(h, range(10))
        table.close(h)
    h = table.open(2)
    table.extend(h, [1, 2, 1])
    assert set(table.banned(h)) == {2}
    assert table._used <= 10 + 20  # the closed rows' n-grams did not pile up


def test_rebuilds_of_one_size_reuse_the_table_before_and_keep_rows_exact():
    rng = np.random.default_rng(1)
    table = NgramTable(min_capacity=64)
    hs = np.array([table.open(2) for _ in range(8)], dtype=np.int64)
    guards = [NgramGuard(2) for _ in hs]
    tables = []  # the table's buffer after each rebuild
    for step in range(400):
        if step % 5 == 0:  # a row starts over: its old entries are dead at the rebuild
            k = step % hs.size
            table.close(int(hs[k]))
            hs[k] = table.open(2)
            guards[k] = NgramGuard(2)
        tokens = rng.integers(0, 40, size=hs.size)
        before = table._table
        got = dict(table.push_many(hs, tokens))
        if table._table is not before:
            tables.append(table._table)
        for k, g in enumerate(guards):
            assert set(got.get(k, ())) == set(g.push_banned(int(tokens[k])))
    same_size = [(a, b) for a, b in zip(tables, tables[2:], strict=False)
                 if a.shape == b.shape]
    assert same_size and all(a is b for a, b in same_size)  # two buffers, alternating
