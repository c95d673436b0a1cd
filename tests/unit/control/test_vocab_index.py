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
