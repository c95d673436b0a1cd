"""padded_ids and FlatIndex: a set padded with repeats of its first id, and as flat
indices row * vocab + id, memoised per (row, id array, vocab, width), read-only, bounded."""

import numpy as np
import pytest

from greyelephant.control.flat_index import FlatIndex, padded_ids


def test_padded_ids_repeat_the_first_id():
    ids = np.array([7, 3], dtype=np.int32)
    a = padded_ids(ids, 4)
    assert a.tolist() == [7, 3, 7, 7] and padded_ids(ids, 4) is a
    assert padded_ids(np.array([5, 6, 7, 8]), 4).tolist() == [5, 6, 7, 8]
    with pytest.raises(ValueError):
        a[0] = 1  # shared between steps: read-only


def test_flat_indices_are_memoised_per_row_array_vocab_and_width():
    flat = FlatIndex()
    ids = np.array([7, 3], dtype=np.int32)
    a = flat.padded(1, ids, 10, 4)
    assert a.dtype == np.int64 and a.tolist() == [17, 13, 17, 17]
    assert flat.padded(1, ids, 10, 4) is a  # the same array: memoised
    assert flat.padded(2, ids, 10, 4).tolist() == [27, 23, 27, 27]  # another row
    assert flat.padded(1, ids, 16, 4).tolist() == [23, 19, 23, 23]  # another vocabulary
    assert flat.padded(1, ids, 10, 2).tolist() == [17, 13]  # another width
    equal = ids.copy()  # equal contents, another array: its own entry
    assert flat.padded(1, equal, 10, 4) is not a
    assert flat.padded(1, equal, 10, 4).tolist() == a.tolist()
    with pytest.raises(ValueError):
        a[0] = 1


def test_the_memo_is_bounded():
    flat = FlatIndex(capacity=4)
    arrays = [np.array([k], dtype=np.int32) for k in range(10)]
    for k, ids in enumerate(arrays):
        assert flat.padded(1, ids, 100, 2).tolist() == [100 + k] * 2
        assert len(flat) <= 4
