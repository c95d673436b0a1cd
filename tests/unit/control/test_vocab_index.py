"""VocabIndex's range helpers: the positions inside ranges, and the tokens whose folded
text starts with (or equals) a query, against their definitions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from greyelephant.control.vocab_index import ranges_to_indices, ranges_to_mask

RANGES = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=12)


@given(ranges=RANGES)
def test_ranges_to_indices_lists_every_position_of_every_range_in_order(ranges):
    lo = np.array([a for a, _ in ranges], dtype=np.int64)
    hi = np.array([b for _, b in ranges], dtype=np.int64)
    want = [j for a, b in ranges for j in range(a, b)]  # (an empty or inverted range: none)
    got = ranges_to_indices(lo, hi)
    assert got.dtype == np.int64 and got.tolist() == want


@given(ranges=RANGES, size=st.sampled_from([61, 4000]))  # (many positions, then few)
def test_ranges_to_mask_marks_the_positions_inside_any_range(ranges, size):
    lo = np.array([a for a, _ in ranges], dtype=np.int64)
    hi = np.array([b for _, b in ranges], dtype=np.int64)
    want = np.zeros(size, dtype=bool)
    for a, b in ranges:
        want[a:b] = True
    assert np.array_equal(ranges_to_mask(lo, hi, size), want)


@settings(max_examples=60, deadline=None)
@given(queries=st.lists(st.text(alphabet="abcdeilnorst ", min_size=0, max_size=4),
                        max_size=6), exact=st.booleans())
def test_tokens_in_are_the_tokens_starting_with_or_equal_to_a_query(vocab_index, queries,
                                                                     exact):
    idx = vocab_index
    ranges = idx.exact_ranges(queries) if exact else idx.prefix_ranges(queries)
    got = np.flatnonzero(idx.tokens_in(ranges)).tolist()
    want = sorted({int(i) for text, i in zip(idx.sorted_texts, idx.sorted_ids, strict=True)
                   for q in queries if (text == q if exact else text.startswith(q))})
    assert got == want


QUERIES = st.lists(st.text(alphabet="abcdeilnorst ", min_size=0, max_size=4), max_size=6)


def _brute(idx, queries, sep, exact):
    """The token ids whose text (``sep``: a suffix of it from a separator) starts with,
    or equals, a query."""
    texts, ids = (idx.sep_texts, idx.sep_ids) if sep else (idx.sorted_texts, idx.sorted_ids)
    return sorted({int(i) for text, i in zip(texts, ids, strict=True)
                   for q in queries if (text == q if exact else text.startswith(q))})


@settings(max_examples=60, deadline=None)
@given(queries=QUERIES, sep=st.booleans(), exact=st.booleans(), seed=st.integers(0, 3))
def test_mark_sets_the_tokens_of_the_queries_and_keeps_what_was_set(vocab_index, queries,
                                                                    sep, exact, seed):
    # (one index for every example: the memoised queries are hit as often as missed)
    idx = vocab_index
    before = np.random.default_rng(seed).random(idx.vocab_size) < 0.001
    out = before.copy()
    idx.mark(out, [f" {q}" if sep else q for q in queries], sep=sep, exact=exact)
    want = before.copy()
    want[_brute(idx, [f" {q}" if sep else q for q in queries], sep, exact)] = True
    assert np.array_equal(out, want)


def test_the_query_memos_start_over_past_their_bound_and_answer_alike(vocab_index,
                                                                     monkeypatch):
    from greyelephant.control import vocab_index as vi
    idx = vocab_index
    queries = ["ni", "the", " a", "zz", "ni"]
    want_lo, want_hi = (a.tolist() for a in idx.prefix_ranges(queries))
    want_mask = np.zeros(idx.vocab_size, dtype=bool)
    idx.mark(want_mask, queries)
    monkeypatch.setattr(vi, "MAX_MEMO_RANGES", 2)
    for n in range(1, 4):  # each call clears its memo (past 2 strings), then fills it
        more = "q" * n  # (a string not memoised yet: the call has something to add)
        lo, hi = idx.prefix_ranges([*queries, more])
        assert lo[:5].tolist() == want_lo and hi[:5].tolist() == want_hi
        out = np.zeros(idx.vocab_size, dtype=bool)
        idx.mark(out, [*queries, "x" + more])
        assert np.array_equal(out, want_mask | idx.tokens_in(idx.prefix_ranges(["x" + more])))
        for memo in idx.memo(("ranges", False, False)), idx.memo(("ids", False, False)):
            assert len(memo) <= len(queries) + 1


def test_queries_matching_many_tokens_are_marked_alike_past_the_dense_bound(vocab_index,
                                                                            monkeypatch):
    """A query matching many tokens (a lone separator, a single letter, the empty string)
    is OR-ed in as a memoised boolean mask; past MAX_DENSE_MARKS those start over, and
    every call still sets what brute force finds, keeping what was set before."""
    from greyelephant.control import vocab_index as vi

    idx = vocab_index
    monkeypatch.setattr(vi, "MAX_DENSE_MARKS", 1)
    idx.memo(("dense", False, False)).clear()  # (other tests' masks)
    before = np.zeros(idx.vocab_size, dtype=bool)
    before[[5, 77, 40_000]] = True
    many = [[" "], [" s", " "], ["", "t"], ["a", "zzq", " s"], [" "]]
    assert all(len(_brute(idx, [q], False, False)) >= idx.vocab_size // vi.DENSE_MARK_SHARE
               for qs in many for q in qs if q not in ("zzq", "t"))
    for qs in many:
        out = before.copy()
        idx.mark(out, qs)
        want = before.copy()
        want[_brute(idx, qs, False, False)] = True
        assert np.array_equal(out, want), qs
        assert len(idx.memo(("dense", False, False))) <= 1


def test_an_index_with_no_separator_suffixes_gives_every_query_an_empty_range():
    from greyelephant.control.vocab_index import VocabIndex

    idx = VocabIndex.from_token_bytes([b"ab", b"cd"])  # (no token holds a separator)
    lo, hi = idx.sep_prefix_ranges([" ab", " x"])
    assert lo.tolist() == hi.tolist() == [0, 0]
    out = np.zeros(idx.vocab_size, dtype=bool)
    idx.mark(out, [" ab"], sep=True)
    assert not out.any()
    idx.mark(out, ["a"])
    assert out.tolist() == [True, False]
