"""The staged read of runner V2's committed lengths and newest tokens
(control/fed_read.py), on the CPU: what it reads, per slot, against the tensors read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from greyelephant.control.fed_read import StagedFedRead


def _expect(history: torch.Tensor, total_len: torch.Tensor, slots: np.ndarray):
    lengths = total_len[slots].to(torch.int64)
    newest = history[slots, (lengths - 1).clamp(min=0)].to(torch.int64)
    return lengths.numpy(), newest.numpy()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_read_gives_each_slot_its_length_and_newest_token(data):
    n_slots = data.draw(st.integers(1, 12))
    width = data.draw(st.integers(1, 20))
    dtypes = data.draw(st.sampled_from([(torch.int32, torch.int32),
                                        (torch.int32, torch.int64),
                                        (torch.int64, torch.int64)]))
    reader = StagedFedRead()
    for _ in range(3):  # (buffers and slots kept, grown or replaced between reads)
        history = torch.tensor(data.draw(st.lists(
            st.integers(0, 50_000), min_size=n_slots * width, max_size=n_slots * width)),
            dtype=dtypes[0]).view(n_slots, width)
        total_len = torch.tensor(data.draw(st.lists(
            st.integers(0, width), min_size=n_slots, max_size=n_slots)), dtype=dtypes[1])
        chosen = data.draw(st.sets(st.integers(0, n_slots - 1), min_size=1))
        slots = np.array(sorted(chosen), dtype=np.int64)
        read = reader.start(history, total_len, slots, n_slots)
        read.wait()
        lengths, newest = _expect(history, total_len, slots)
        assert read.event is None
        assert np.array_equal(read.place[slots], np.arange(slots.size))
        assert (read.place[np.setdiff1d(np.arange(n_slots), slots)] == -1).all()
        assert np.array_equal(read.host[0].astype(np.int64), lengths)
        # a slot with no token yet reads its row's first entry (clamped), never another row's
        assert np.array_equal(read.host[1].astype(np.int64), newest)


def test_nothing_to_read_gives_none():
    reader = StagedFedRead()
    history = torch.zeros(4, 8, dtype=torch.int32)
    total = torch.ones(4, dtype=torch.int32)
    assert reader.start(history, total, np.array([], dtype=np.int64), 4) is None
    assert reader.start(history[:, ::2], total, np.array([1]), 4) is None  # (not contiguous)
    assert reader.start(history.view(-1), total, np.array([1]), 4) is None  # (not 2-D)


def test_a_later_read_reflects_the_tensors_then():
    """The host view is the buffer a read fills: a later read overwrites it (a read serves
    the step after it only)."""
    reader = StagedFedRead()
    history = torch.arange(24, dtype=torch.int32).view(3, 8)
    total = torch.tensor([2, 5, 8], dtype=torch.int32)
    first = reader.start(history, total, np.array([0, 2]), 3)
    assert first.host.tolist() == [[2, 8], [1, 23]]
    total[0] = 3
    second = reader.start(history, total, np.array([0, 1, 2]), 3)
    assert second.host.tolist() == [[3, 5, 8], [2, 12, 23]]


@pytest.mark.parametrize("n_slots", [3, 5])
def test_the_places_follow_the_slot_count(n_slots):
    reader = StagedFedRead()
    history = torch.zeros(5, 4, dtype=torch.int32)
    total = torch.ones(5, dtype=torch.int32)
    reader.start(history, total, np.array([0, 2]), 2 + 1)
    read = reader.start(history, total, np.array([0, 2]), n_slots)
    assert read.place.size == n_slots and read.place[2] == 1
