"""The lanes' plan pool (``control/plan_pool.py``): pooled slices, the split of a step's
fast rows and its gathers, against a plain Python reference. (That a batch planned from
the pool controls the logits bit for bit as the per-row path does is
``test_step_states.py``'s twin test.)"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greyelephant.control import plan_pool as pp
from greyelephant.control.plan_pool import PlanPool
from greyelephant.control.step_states import FLAG_BITS, GREEDY, WATCH, Lanes


def _ids(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int32)


def _vals(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


def _code(sid: int, watch: bool = False, greedy: bool = True) -> int:
    return sid << FLAG_BITS | (WATCH if watch else 0) | (GREEDY if greedy else 0)


def _split(pool: PlanPool, codes: list[int], vocab: int = 1000):
    codes = np.array(codes, dtype=np.int64)
    rows = np.arange(codes.size, dtype=np.int64) * 2  # logits row of plan position k: 2k
    return pool.split(codes, rows, vocab, FLAG_BITS, WATCH, GREEDY)


def test_an_array_is_pooled_once_and_the_pool_grows():
    pool = PlanPool()
    pool.grow(4)
    shared = _ids(*range(700))
    pool.put(0, shared, _ids(1), _vals(2.0), False, None)
    pool.put(1, shared, _ids(1), _vals(2.0), False, None)  # equal arrays, not the same
    assert pool.ban_at[0] == pool.ban_at[1] == 0
    assert pool.bias_at[1] == 1  # a second copy: pooled by identity, not by value
    pool.put(2, _ids(*range(1000)), _ids(), _vals(), True, None)  # past the first 1024
    assert pool.ban_at[2] == 700 and pool.ban_n[2] == 1000
    got = _split(pool, [_code(2), _code(0)], vocab=10_000)
    assert got.bans.tolist() == list(range(1000)) + [20_000 + t for t in range(700)]
    assert got.bias_index.tolist() == [20_001] and got.bias_values.tolist() == [2.0]
    with pytest.raises(ValueError):
        pool.put(3, shared, _ids(1, 2), _vals(2.0), False, None)  # ids and values differ


def test_split_pools_all_but_watched_rows_inside_a_form_with_no_check():
    pool = PlanPool()
    pool.grow(8)
    pool.put(1, _ids(5), _ids(), _vals(), False, None)
    pool.put(2, _ids(5), _ids(), _vals(), True, None)  # inside a form, no check set
    pool.put(3, _ids(5), _ids(), _vals(), False, _ids(7, 8))  # tokens to anticipate
    pool.put(4, _ids(5), _ids(), _vals(), True, _ids(5))  # inside: its banned ids
    codes = [
        -1,  # not a fast row
        _code(0),  # its plan is not pooled
        _code(1, watch=True),  # pooled
        _code(2),  # inside a form, not watched: pooled
        _code(2, watch=True),  # watched inside a form: the rollback check reads its mask
        _code(3, watch=True),  # anticipated
        _code(3, watch=True, greedy=False),  # sampling rows are not anticipated
        _code(3),  # not watched: not anticipated
        _code(4, watch=True),  # checked against its banned ids
        _code(4, watch=True, greedy=False),  # a sampling row's check reads its mask
    ]
    got = _split(pool, codes)
    assert got.pos.tolist() == [2, 3, 5, 6, 7, 8]
    assert got.sids.tolist() == [1, 2, 3, 3, 3, 4]
    assert got.rest.tolist() == [0, 1, 4, 9]
    assert got.check_pos.tolist() == [5, 8] and got.check_rows.tolist() == [10, 16]
    assert got.check_sids.tolist() == [3, 4]
    assert got.check_inside.tolist() == [False, True]
    assert got.check_sizes.tolist() == [2, 1] and got.check_sets.tolist() == [7, 8, 5]
    assert got.bans.tolist() == [2 * k * 1000 + 5 for k in got.pos.tolist()]
    pool.clear()
    assert _split(pool, codes) is None


@settings(max_examples=60, deadline=None)
@given(plans=st.lists(st.tuples(
    st.lists(st.integers(0, 999), max_size=12, unique=True),
    st.lists(st.tuples(st.integers(0, 999), st.floats(-8, 8, width=32)), max_size=6,
             unique_by=lambda e: e[0])), min_size=1, max_size=8),
    picks=st.lists(st.integers(-1, 7), max_size=20))
def test_the_gathers_equal_the_plans_concatenated(plans, picks):
    pool = PlanPool()
    pool.grow(len(plans))
    for sid, (bans, bias) in enumerate(plans):
        pool.put(sid, _ids(*bans), _ids(*[t for t, _ in bias]), _vals(*[v for _, v in bias]),
                 False, _ids(*bans[:2]))
    # every row watched and greedy: the pooled rows are all anticipated
    codes = [-1 if p < 0 else _code(p % len(plans), watch=True) for p in picks]
    got = _split(pool, codes)
    taken = [(k, p % len(plans)) for k, p in enumerate(picks) if p >= 0]
    if not taken:
        assert got is None
        return
    assert got.pos.tolist() == got.check_pos.tolist() == [k for k, _ in taken]
    assert got.sids.tolist() == got.check_sids.tolist() == [s for _, s in taken]
    assert got.rest.tolist() == [k for k, p in enumerate(picks) if p < 0]
    assert got.check_rows.tolist() == [2 * k for k, _ in taken]
    assert got.bans.tolist() == [2 * k * 1000 + t for k, s in taken for t in plans[s][0]]
    assert got.bias_index.tolist() == [2 * k * 1000 + t for k, s in taken
                                       for t, _ in plans[s][1]]
    assert got.bias_values.tolist() == [np.float32(v) for _, s in taken
                                        for _, v in plans[s][1]]
    assert got.check_sizes.tolist() == [min(2, len(plans[s][0])) for _, s in taken]
    assert got.check_sets.tolist() == [t for _, s in taken for t in plans[s][0][:2]]


class _Table:
    """A mask table's per-slot arrays, as :meth:`PlanPool.split` reads them."""

    def __init__(self, slots: int):
        self.stamps = np.arange(slots, dtype=np.int64) * 10
        self.used_in = np.zeros(slots, dtype=np.int64)
        self.step = 7


def test_a_gpu_split_pools_tabled_plans_whose_slot_still_holds_their_mask():
    pool = PlanPool()
    pool.grow(6)
    pool.put(0, _ids(5), _ids(3), _vals(1.0), False, None)  # the CPU's form: not tabled
    pool.put(1, _ids(), _ids(3, 4), _vals(1.0, 2.0), False, None, slot=2, stamp=20)
    pool.put(2, _ids(), _ids(), _vals(), False, _ids(9), slot=3, stamp=30)
    pool.put(3, _ids(), _ids(6), _vals(0.5), False, None, slot=4, stamp=39)  # stale
    pool.put(4, _ids(), _ids(), _vals(), True, None, slot=5, stamp=50)  # inside a form
    table = _Table(8)
    mask_rows = np.zeros(7, dtype=np.int32)
    codes = np.array([_code(0), _code(1), _code(2, watch=True), _code(3), _code(4),
                      _code(4, watch=True), _code(1)], dtype=np.int64)
    rows = np.arange(7, dtype=np.int64) * 2
    got = pool.split(codes, rows, 1000, FLAG_BITS, WATCH, GREEDY, table, mask_rows)
    assert got.pos.tolist() == [1, 2, 4, 6] and got.sids.tolist() == [1, 2, 4, 1]
    assert got.rest.tolist() == [0, 3, 5]
    assert mask_rows.tolist() == [0, 2, 3, 0, 5, 0, 2]  # set for the pooled rows only
    assert table.used_in.tolist() == [0, 0, 7, 7, 0, 7, 0, 0]  # marked used this step
    assert got.bias_index.tolist() == [3, 4, 3, 4]  # ids as they are, no row offset
    assert got.bias_values.tolist() == [1.0, 2.0, 1.0, 2.0]
    assert got.bias_sizes.tolist() == [2, 0, 0, 2] and got.bans.size == 0
    assert got.check_pos.tolist() == [2] and got.check_sets.tolist() == [9]
    pool.restamp(3, 6, 60)  # uploaded again (the per-row way) into slot 6
    got = pool.split(codes, rows, 1000, FLAG_BITS, WATCH, GREEDY, table, mask_rows)
    assert 3 in got.pos.tolist() and mask_rows[3] == 6
    cpu = _split(pool, codes.tolist())  # the CPU's split takes the untabled plans alone
    assert cpu.pos.tolist() == [0]


_ROW_IDS = st.lists(st.integers(0, 30), max_size=5, unique=True)


@settings(max_examples=80, deadline=None)
@given(k=st.integers(1, 8), pooled=st.dictionaries(st.integers(0, 7), _ROW_IDS),
       other=st.dictionaries(st.integers(0, 7), _ROW_IDS),
       bans=st.dictionaries(st.integers(0, 7), st.lists(st.integers(0, 30), min_size=1,
                                                         max_size=6)))
def test_bias_lists_merge_pooled_and_other_rows_and_bans(k, pooled, other, bans):
    pooled = {j: ids for j, ids in pooled.items() if j < k}
    other = {j: ids for j, ids in other.items() if j < k}
    bans = {j: ids for j, ids in bans.items() if j < k}
    pos = sorted(pooled)
    step = pp.PooledStep(*([np.zeros(0, dtype=np.int64)] * len(pp.PooledStep._fields)))._replace(
        pos=np.array(pos, dtype=np.int64),
        bias_sizes=np.array([len(pooled[j]) for j in pos], dtype=np.int64),
        bias_index=np.array([t for j in pos for t in pooled[j]], dtype=np.int64),
        bias_values=np.array([t / 2 for j in pos for t in pooled[j]], dtype=np.float32))
    at = sorted(other)
    indptr, ids, vals = pp.bias_lists(
        k, step, np.array(at, dtype=np.int64),
        np.array([len(other[j]) for j in at], dtype=np.int64),
        _ids(*[t for j in at for t in other[j]]),
        _vals(*[-t for j in at for t in other[j]]),
        np.array(list(bans), dtype=np.int64), np.array([len(b) for b in bans.values()],
                                                       dtype=np.int64),
        np.array([t for b in bans.values() for t in b], dtype=np.int64))
    for j in range(k):  # the other rows' lists win over the pooled rows'; bans: -inf
        want = ([(t, -t) for t in other[j]] if j in other
                else [(t, t / 2) for t in pooled.get(j, [])])
        banned = set(bans.get(j, ()))
        want = [e for e in want if e[0] not in banned] + [(t, -np.inf)
                                                         for t in sorted(banned)]
        got = list(zip(ids[indptr[j]:indptr[j + 1]].tolist(),
                       vals[indptr[j]:indptr[j + 1]].tolist(), strict=True))
        assert got == want, j
    assert indptr[0] == 0 and indptr[-1] == ids.size == vals.size


def test_a_full_pool_starts_the_lanes_plans_over(monkeypatch):
    monkeypatch.setattr(pp, "MAX_POOLED", 6)
    lanes = Lanes()
    lane = lanes.open(plain_from=0, plain_below=1 << 40, min_stop=0, guard=-1, watch=False,
                      greedy=True)
    a = lanes.put(lane, (1, 0, b"", 0, True, False, 0), 0)
    b = lanes.put(lane, (1, 1, b"", 0, True, False, 0), 0)
    lanes.set_plan(a, "a", (_ids(1, 2, 3, 4), _ids(), _vals(), False, None))
    lanes.set_plan(b, "b", (_ids(5, 6, 7), _ids(), _vals(), False, None))
    assert lanes.plans[a] == "a" and lanes.pool.flags[a]  # 7 ids: past the bound now
    lanes.set_plan(b, "b", (_ids(5, 6, 7), _ids(), _vals(), False, None))
    assert lanes.plans[a] is None and not lanes.pool.flags[a]  # started over
    assert lanes.plans[b] == "b" and lanes.pool.flags[b]
    assert lanes.pool.ban_at[b] == 0
