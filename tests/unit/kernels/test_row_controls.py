"""The per-row CPU form of the logit controls (``apply_row_controls_numpy``) against the
fused op (``apply_logit_controls``, CSR lists): the same logits, bit for bit, on
contiguous logits (flat indices) and on strided views (row by row)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from greyelephant.kernels import apply_logit_controls, pack_token_bitmask
from greyelephant.kernels.logit_controls_numpy import apply_row_controls_numpy


def _csr(lists, dtype):
    indptr = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in lists], out=indptr[1:])
    flat = np.concatenate([np.asarray(a, dtype=dtype) for a in lists]) if lists else \
        np.zeros(0, dtype)
    return torch.from_numpy(indptr), torch.from_numpy(flat.astype(dtype))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_row_controls_match_the_fused_op(data):
    b = data.draw(st.integers(1, 5))
    v = data.draw(st.integers(1, 300))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    x = torch.from_numpy(rng.standard_normal((b, v)).astype(np.float32))
    for _ in range(data.draw(st.integers(0, 4))):  # special values
        x[rng.integers(b), rng.integers(v)] = float(rng.choice([np.nan, np.inf, -np.inf]))
    rows = sorted(rng.choice(b, size=data.draw(st.integers(1, b)), replace=False).tolist())

    def ids(n, lo=0, hi=v, unique=True):  # some ids out of range on purpose
        if unique:
            return rng.choice(np.arange(lo - 2, hi + 2), size=min(n, hi - lo + 4),
                              replace=False).astype(np.int64)
        return rng.integers(lo - 2, hi + 2, size=n).astype(np.int64)

    bias, penalty, masks, banned = [], [], [], []
    for _ in rows:
        bi = ids(data.draw(st.integers(0, 6)))
        bias.append((bi, rng.uniform(-5, 5, bi.size).astype(np.float32))
                    if data.draw(st.booleans()) else None)
        pi = ids(data.draw(st.integers(0, 6)))
        penalty.append((pi, rng.integers(0, 4, pi.size).astype(np.int32),
                        float(rng.uniform(-1, 2)), float(rng.uniform(-1, 2)))
                       if data.draw(st.booleans()) else None)
        if data.draw(st.booleans()):
            share = data.draw(st.sampled_from([0.01, 0.5]))
            masks.append(pack_token_bitmask(torch.from_numpy(rng.random((1, v)) < share))[0]
                         .numpy())
        else:
            masks.append(None)
        banned.append(ids(data.draw(st.integers(0, 8)), unique=False)
                      if data.draw(st.booleans()) else None)

    if data.draw(st.booleans()):  # contiguous: flat indices into the storage
        got = x.clone()
    else:  # a view of wider rows (as a padded vocabulary gives): row by row
        got = torch.zeros(b, v + 3)[:, :v]
        got.copy_(x)
        assert b == 1 or not got.is_contiguous()  # one row: contiguous all the same
    apply_row_controls_numpy(got, rows, bias=bias, penalty=penalty, masks=masks,
                             banned=banned)

    # the same controls through the fused op, as CSR lists over every row of the batch
    def per_row(entries, pick, empty):
        at = dict(zip(rows, entries, strict=True))
        return [pick(at[i]) if at.get(i) is not None else empty for i in range(b)]

    kw = {}
    kw["bias_indptr"], kw["bias_token_ids"] = _csr(per_row(bias, lambda e: e[0], []), np.int32)
    kw["bias_values"] = torch.from_numpy(np.concatenate(
        per_row(bias, lambda e: e[1], np.zeros(0, np.float32))).astype(np.float32))
    kw["penalty_indptr"], kw["penalty_token_ids"] = _csr(
        per_row(penalty, lambda e: e[0], []), np.int32)
    kw["penalty_output_counts"] = _csr(per_row(penalty, lambda e: e[1], []), np.int32)[1]
    kw["presence_penalty"] = torch.tensor(per_row(penalty, lambda e: e[2], 0.0),
                                          dtype=torch.float32)
    kw["frequency_penalty"] = torch.tensor(per_row(penalty, lambda e: e[3], 0.0),
                                           dtype=torch.float32)
    words = (v + 31) // 32
    kw["banned_bitmask"] = torch.from_numpy(np.stack(per_row(
        masks, lambda e: e, np.zeros(words, np.int32))).astype(np.int32))
    kw["banned_indptr"], kw["banned_token_ids"] = _csr(per_row(banned, lambda e: e, []),
                                                       np.int32)
    want = x.clone()
    apply_logit_controls(want, **kw)
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(torch.nan_to_num(got, nan=0.0), torch.nan_to_num(want, nan=0.0))


def test_row_controls_reject_what_the_numpy_path_cannot_take():
    with pytest.raises(TypeError):
        apply_row_controls_numpy(torch.zeros(2, 4, dtype=torch.bfloat16), [0])
    with pytest.raises(IndexError):
        apply_row_controls_numpy(torch.zeros(2, 4), [2], banned=[np.array([1])])


def test_in_range_skips_the_checks_with_the_same_result():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((3, 50)).astype(np.float32))
    kw = dict(bias=[(np.array([1, 7, 49]), np.array([1.0, -2.0, 3.0], np.float32)), None, None],
              penalty=[None, (np.array([0, 5]), np.array([2, 0], np.int32), 0.5, 0.25), None],
              banned=[np.array([3, 3], np.int32), None, np.array([0, 49])])
    a, b = x.clone(), x.clone()
    apply_row_controls_numpy(a, [0, 1, 2], **kw)
    apply_row_controls_numpy(b, [0, 1, 2], in_range=True, **kw)
    assert torch.equal(a, b) and a[0, 3] == float("-inf") and a[2, 49] == float("-inf")
    assert a[0, 7] == x[0, 7] - 2.0 and a[1, 0] == x[1, 0] - 0.5 - 0.5


def test_a_mask_longer_or_shorter_than_the_row():
    x = torch.zeros(2, 40)
    long = pack_token_bitmask(torch.tensor([[t in (3, 39, 70) for t in range(96)]]))[0].numpy()
    short = pack_token_bitmask(torch.tensor([[t == 5 for t in range(32)]]))[0].numpy()
    apply_row_controls_numpy(x, [0, 1], masks=[long, short])
    assert torch.isneginf(x[0]).nonzero().flatten().tolist() == [3, 39]
    assert torch.isneginf(x[1]).nonzero().flatten().tolist() == [5]


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_flat_controls_match_the_row_controls(data):
    """Bias and banned ids given as flat indices (``apply_flat_controls_numpy``) leave the
    logits as the per-row lists do, special values included."""
    from greyelephant.kernels import apply_flat_controls_numpy

    b = data.draw(st.integers(1, 5))
    v = data.draw(st.integers(1, 300))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    x = torch.from_numpy(rng.standard_normal((b, v)).astype(np.float32))
    for _ in range(data.draw(st.integers(0, 4))):
        x[rng.integers(b), rng.integers(v)] = float(rng.choice([np.nan, np.inf, -np.inf]))
    rows = sorted(rng.choice(b, size=data.draw(st.integers(1, b)), replace=False).tolist())
    bias, banned = [], []
    for _ in rows:
        bi = rng.choice(v, size=min(v, data.draw(st.integers(0, 6))), replace=False)
        bias.append((bi.astype(np.int32), rng.uniform(-5, 5, bi.size).astype(np.float32)))
        banned.append(rng.integers(0, v, size=data.draw(st.integers(0, 8))).astype(np.int32))
    want = x.clone()
    apply_row_controls_numpy(want, rows, bias=bias, banned=banned)
    got = x.clone()
    apply_flat_controls_numpy(
        got.numpy().reshape(-1),
        bias_index=np.concatenate([i * v + e[0].astype(np.int64)
                                   for i, e in zip(rows, bias, strict=True)]),
        bias_values=np.concatenate([e[1] for e in bias]),
        banned_index=np.concatenate([i * v + e.astype(np.int64)
                                     for i, e in zip(rows, banned, strict=True)]))
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(torch.nan_to_num(got, nan=0.0), torch.nan_to_num(want, nan=0.0))


def test_flat_controls_reject_what_is_not_a_flat_float32_view():
    from greyelephant.kernels import apply_flat_controls_numpy

    for bad in (np.zeros((2, 4), np.float32), np.zeros(8, np.float64)):
        with pytest.raises(TypeError):
            apply_flat_controls_numpy(bad, banned_index=np.array([1]))
