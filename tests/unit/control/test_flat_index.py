"""FlatIndex: row * vocab + ids, memoised per (row, id array, vocab), read-only, bounded."""

import numpy as np
import pytest

from greyelephant.control.flat_index import FlatIndex


def test_flat_indices_are_memoised_per_row_array_and_vocab():
    flat = FlatIndex()
    ids = np.array([0, 5, 9], dtype=np.int32)
    a = flat(2, ids, 10)
    assert a.dtype == np.int64 and a.tolist() == [20, 25, 29]
    assert flat(2, ids, 10) is a  # the same array: memoised
    assert flat(3, ids, 10).tolist() == [30, 35, 39]  # another row
    assert flat(2, ids, 16).tolist() == [32, 37, 41]  # another vocabulary
    equal = ids.copy()  # equal contents, another array: its own entry
    assert flat(2, equal, 10) is not a and flat(2, equal, 10).tolist() == a.tolist()
    with pytest.raises(ValueError):
        a[0] = 1  # shared between steps: read-only


def test_the_memo_is_bounded():
    flat = FlatIndex(capacity=4)
    arrays = [np.array([k], dtype=np.int32) for k in range(10)]
    for k, ids in enumerate(arrays):
        assert flat(1, ids, 100).tolist() == [100 + k]
        assert len(flat) <= 4


def test_padded_flat_indices_repeat_the_first_id():
    flat = FlatIndex()
    ids = np.array([7, 3], dtype=np.int32)
    a = flat.padded(1, ids, 10, 4)
    assert a.tolist() == [17, 13, 17, 17]
    assert flat.padded(1, ids, 10, 4) is a
    assert flat(1, ids, 10).tolist() == [17, 13]  # the unpadded entry is its own
    assert flat.padded(1, np.array([5, 6, 7, 8], dtype=np.int64), 10, 4).tolist() == [
        15, 16, 17, 18]
