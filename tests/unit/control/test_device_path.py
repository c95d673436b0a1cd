"""The batch's device form of a step, run on the CPU: the plan's arrays packed into one
buffer (:class:`.step_upload.StepUpload`), the masks read from the table by slot, only
the steered rows controlled (``logit_rows``), the rollback signals forced in one go. It
gives the same logits, bit for bit, as the CPU path (per-row id lists, numpy), over a
decode with partly steered batches, rollback signals, loop-guard bans and rows that
come and go."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greyelephant.control.spec import parse_steering
from greyelephant.control.step_upload import StepUpload
from greyelephant.control.steering_batch import RequestInfo, SteeringBatch

SIGNAL = 16


def _args(**extra) -> dict:
    spec = parse_steering({"avoid": ["Rome", {"entity": "Coca-Cola", "aliases": ["Coke"]}],
                           "prefer": ["Pepsi"], "no_repeat_ngram": 3, **extra})
    return spec.engine_steering(signal=SIGNAL).to_extra_args()


def _device_form(vocab_index, lanes: bool = False) -> SteeringBatch:
    """A CPU batch that takes the GPU's path: no id lists (every mask in the table), the
    plan's arrays packed into one buffer (``lanes``: with the lanes' fast path)."""
    batch = SteeringBatch(vocab_index, "cpu", lanes=lanes, lane_min_rows=0)
    batch.sparse_ids = False
    batch._upload = StepUpload("cpu", pack=True)
    return batch


@pytest.mark.parametrize("early", [True, False])
@pytest.mark.parametrize("lanes", [False, True])
@pytest.mark.parametrize("numpy_reads_logits", [True, False])
def test_the_device_form_equals_the_cpu_path(vocab_index, tokenizer, numpy_reads_logits,
                                             lanes, early, monkeypatch):
    """``numpy_reads_logits=False`` takes the GPU's path for the logits too: the rollback
    check's choices from torch's argmax (``_argmax_rows``), the controls only through
    ``apply_logit_controls``, the signals forced with torch (``_force_tokens``).
    ``early``: the plan's arrays go before the rollback check (``early_upload``, the
    default; sent again when the check changed the plan, the forced tokens on their own),
    else after it in one upload with the forced tokens."""
    from greyelephant.control import steering_batch

    host_bound = []  # per launch of the controls: whether a check had just waited
    launch = steering_batch.apply_logit_controls

    def recording_launch(logits, **kw):
        host_bound.append(kw["host_bound"])
        return launch(logits, **kw)

    def device_apply(batch, logits):
        with monkeypatch.context() as m:
            if not numpy_reads_logits:
                m.setattr(steering_batch, "_numpy_view", lambda t: None)
            m.setattr(steering_batch, "apply_logit_controls", recording_launch)
            return batch.apply(logits)

    text = tokenizer.encode(" I drank a Coca-Cola in Rome, the cat sat on the mat, the cat"
                            " sat on the mat, and a Coke")
    info = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=200)
    a, b = SteeringBatch(vocab_index, "cpu"), _device_form(vocab_index, lanes)
    b.early_upload = early
    # per step with a check: whether the plan had gone to the device when the check ran
    sent_before_check: list[bool] = []
    check = b._check

    def recording_check(*args):
        sent_before_check.append(b._upload.copies > copies)
        return check(*args)

    b._check = recording_check
    specs = [_args(), None, _args(), None, _args(), _args()]  # steered and plain rows
    outs_a = [[] for _ in specs]
    outs_b = [[] for _ in specs]
    for i, args in enumerate(specs):
        a.add(i, args, outs_a[i], info)
        b.add(i, args, outs_b[i], info)
    coke = tokenizer.encode(" Coca")[0]
    whole = tokenizer.encode(" Coke")[0]
    rng = np.random.default_rng(1)
    for step in range(50):
        if step == 25:  # row 2 leaves, a new request takes row 1
            for batch, outs in ((a, outs_a), (b, outs_b)):
                batch.remove(2)
                outs[1] = []
                batch.add(1, _args(), outs[1], info)
        n = len(specs)
        logits = torch.randn(n, vocab_index.vocab_size,
                             generator=torch.Generator().manual_seed(step))
        logits[:, coke] += 3.0  # the model heads into the name: checks and signals
        if step % 9 == 4:
            logits[:, whole] += 6.0  # a whole form in one token: anticipated start bans
        copies = b._upload.copies
        la, lb = a.apply(logits.clone()), device_apply(b, logits.clone())
        assert torch.equal(la, lb), step
        for i in range(n):
            t = text[(step + i) % len(text)] if rng.random() < 0.8 else int(la[i].argmax())
            if torch.isneginf(la[i, t]):
                t = int(la[i].argmax())
            outs_a[i].append(t)
            outs_b[i].append(t)
    assert a.signals > 0 and (a.signals, a.anticipated) == (b.signals, b.anticipated)
    assert a.anticipated > 0  # (the check changed plans: sent again when early)
    assert sent_before_check and set(sent_before_check) == {early}
    # after the rollback check (on a GPU, its wait) the controls ask for one launch
    assert host_bound.count(True) == len(sent_before_check) > 0
    assert (b.fast_rows > 0) == lanes
    assert (b.pooled_rows > b.fast_rows // 2) == lanes  # masks by slot, bias merged
    assert b._upload.copies >= 50 and a._upload.copies == 0


def test_step_upload_packs_every_array_once():
    """One copy for the step's arrays; each comes back with its dtype, shape and values,
    an empty one included; arrays of another dtype or shape are refused."""
    up = StepUpload("cpu", pack=True)
    arrays = {"rows": np.array([3, 1, 2], dtype=np.int32),
              "vals": np.array([0.5, -np.inf, 2.25, 1e-30, 7.0], dtype=np.float32),
              "none": np.zeros(0, dtype=np.int32),
              "one": np.array([-7], dtype=np.int32)}
    for _ in range(3):  # the buffers alternate and are reused
        out = up.send(arrays)
        for k, a in arrays.items():
            assert out[k].dtype == torch.from_numpy(a).dtype
            assert np.array_equal(out[k].numpy(), a)
    assert up.copies == 3
    big = {"x": np.arange(5000, dtype=np.int32)}  # the buffers grow
    assert np.array_equal(up.send(big)["x"].numpy(), big["x"])
    wide = {"a": np.array([1], dtype=np.int32),  # an int64 array: two entries each
            "b": np.array([-1, 1 << 40, 5], dtype=np.int64),
            "c": np.array([1.5], dtype=np.float32)}
    got = up.send(wide)
    for k, a in wide.items():
        assert got[k].dtype == torch.from_numpy(a).dtype
        assert np.array_equal(got[k].numpy(), a)
    for bad in (np.zeros(3, dtype=np.float64), np.zeros(3, dtype=np.int16),
                np.zeros((2, 2), dtype=np.int32)):
        with pytest.raises(TypeError):
            up.send({"bad": bad})


def test_bans_ride_in_the_bias_lists_with_unique_ids():
    """On a GPU a row's extra bans travel as -inf bias entries: a banned token that the
    row's bias lists too is replaced (ids stay unique), repeated bans count once."""
    from greyelephant.control.steering_batch import _with_bans

    ids = np.array([5, 9, 12], dtype=np.int32)
    vals = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert _with_bans(ids, vals, None)[0] is ids
    got_ids, got_vals = _with_bans(ids, vals, [7, 7, 3])  # disjoint
    assert got_ids.tolist() == [5, 9, 12, 3, 7] and got_ids.dtype == np.int32
    assert got_vals.tolist() == [1.0, 2.0, 3.0, -np.inf, -np.inf]
    got_ids, got_vals = _with_bans(ids, vals, [9, 4])  # 9 is biased and banned
    assert got_ids.tolist() == [5, 12, 4, 9]
    assert got_vals.tolist() == [1.0, 3.0, -np.inf, -np.inf]


def test_argmax_rows_gives_each_row_its_argmax_by_row_index():
    from greyelephant.control.steering_batch import _argmax_rows

    logits = torch.randn(12, 50, generator=torch.Generator().manual_seed(4))
    logits[3, 7] = float("nan")  # NaN counts as the maximum
    want = logits.argmax(dim=-1).tolist()
    few = _argmax_rows(logits, [3, 10])  # a small share: only those rows (a dict)
    many = _argmax_rows(logits, [0, 3, 4, 9])  # a quarter or more: the whole batch's
    every = _argmax_rows(logits, None)  # every row
    assert isinstance(few, dict) and set(few) == {3, 10}
    assert [few[i] for i in (3, 10)] == [want[3], want[10]] and want[3] == 7
    for whole in (many, every):  # an int64 array over the whole batch
        assert whole.dtype == np.int64 and whole.tolist() == want


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("tokens", [[4, 0, 9], [4, -1, 9]])
def test_forced_rows_take_their_token_alone(contiguous, tokens):
    """``_force_tokens`` (a GPU's signals): each forced row keeps only its token (-1: no
    token, every logit -inf), the other rows are untouched, for contiguous logits (by
    flat offsets) and for a strided view (by row and token)."""
    from greyelephant.control.steering_batch import _force_tokens

    base = torch.randn(6, 24 if contiguous else 40, generator=torch.Generator().manual_seed(2))
    logits = base if contiguous else base[:, 3:13]
    want = logits.clone()
    rows = [1, 3, 4]
    for i, t in zip(rows, tokens, strict=True):
        want[i] = float("-inf")
        if t >= 0:
            want[i, t] = 0.0
    v = logits.shape[1]
    r = torch.tensor(rows, dtype=torch.int64)
    at = torch.tensor([t + (i * v if contiguous else 0)
                       for i, t in zip(rows, tokens, strict=True)], dtype=torch.int64)
    _force_tokens(logits, r, at, tokens, flat=contiguous)
    assert torch.equal(logits, want)
