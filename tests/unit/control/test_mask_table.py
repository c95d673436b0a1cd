"""The device mask table path equals the per-step host-mask path, bit for bit, whatever
the rows do (rollback rows, prefix-ban rows, loop guard, start bans, last steps, stop
bans, the resumed tokens' penalties), with the masks that ban few tokens sent as id lists
(the CPU's default: the rows without penalties or a table mask then take the flat path)
or all through the table, and a tiny memory budget (eviction every step) changes
nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greyelephant.control import steering_batch
from greyelephant.control.mask_table import MaskTable
from greyelephant.control.spec import parse_steering
from greyelephant.control.steering_batch import RequestInfo, SteeringBatch
from greyelephant.kernels import apply_logit_controls

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SIGNAL = 16


def specs():
    base = {"avoid": [{"entity": "Coca-Cola", "aliases": ["Coke"]}, "Rome", "Nike"],
            "prefer": ["Pepsi"]}
    on = parse_steering(base).engine_steering(signal=SIGNAL)
    off = parse_steering({**base, "max_rollbacks": 0}).engine_steering(signal=SIGNAL)
    guard = parse_steering({**base, "no_repeat_ngram": 2}).engine_steering(signal=SIGNAL)
    start = on.model_copy(update={"start_ban": (0, 2), "resume": 3})
    return [on.to_extra_args(), off.to_extra_args(), guard.to_extra_args(),
            start.to_extra_args(), None]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("budget", [256 << 20, 8 * 1536 * 4])
@pytest.mark.parametrize("id_lists", [True, False], ids=["id-lists", "table-only"])
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "row-lists"])
def test_table_path_equals_host_masks(vocab_index, tokenizer, device, budget, id_lists, flat,
                                      monkeypatch):
    text = tokenizer.encode(" I drank Coca-Cola in Rome, then a Coke, Nike Nike Nike and a Pepsi "
                            "by the Colosseum in Romeo's town, coca cola cola cola")
    rng = np.random.default_rng(0)
    outs_a = [[] for _ in range(5)]
    outs_b = [[] for _ in range(5)]
    prompt = [1, *text[:3]]
    info = [RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=40,
                        prompt=prompt) for _ in range(5)]
    # the continuation row's resumed tokens carry presence/frequency penalties
    info[3] = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=40,
                          prompt=prompt, presence_penalty=0.5, frequency_penalty=0.25)
    a = SteeringBatch(vocab_index, device, table=True, table_budget_bytes=budget)
    a.sparse_ids = id_lists and device == "cpu"
    a.flat_controls = flat  # False: every row through apply_row_controls_numpy
    flat_steps = []
    real = steering_batch.apply_flat_controls_numpy
    monkeypatch.setattr(steering_batch, "apply_flat_controls_numpy",
                        lambda *a, **kw: flat_steps.append(1) or real(*a, **kw))
    b = SteeringBatch(vocab_index, device, table=False)
    for i, args in enumerate(specs()):
        a.add(i, args, outs_a[i], info[i])
        b.add(i, args, outs_b[i], info[i])
    for step in range(40):
        logits = torch.randn(5, vocab_index.vocab_size, generator=torch.Generator().manual_seed(
            step)).to(device)
        la, lb = a.apply(logits.clone()), b.apply(logits.clone())
        assert torch.equal(la, lb), step
        for i in range(5):
            t = text[(step + 3 * i) % len(text)] if rng.random() < 0.8 else int(
                la[i].argmax())
            outs_a[i].append(t)
            outs_b[i].append(t)
    if a.sparse_ids:
        assert any(ids is not None for _, ids in a._ids.values())
        assert bool(flat_steps) == flat
    else:
        assert a._table.uploads > 0
        if budget < (1 << 20):
            assert a._table.evictions > 0


def test_mask_table_never_evicts_a_slot_of_the_current_step():
    table = MaskTable(n_words=4, budget_bytes=4 * 4 * 3)  # 3 slots: zeros + 2
    table.begin_step()
    s1 = table.slot("a", np.array([1, 0, 0, 0], dtype=np.int32))
    s2 = table.slot("b", np.array([2, 0, 0, 0], dtype=np.int32))
    with pytest.raises(RuntimeError):
        table.slot("c", np.array([3, 0, 0, 0], dtype=np.int32))
    table.begin_step()
    s3 = table.slot("c", np.array([3, 0, 0, 0], dtype=np.int32))
    assert s3 in (s1, s2) and table.evictions == 1
    assert table.table[s3, 0] == 3 and table.table[0].abs().sum() == 0


def test_mask_table_reuses_the_least_recently_used_slot():
    """Past the budget, the slot reused is the one whose last use is the oldest step (a
    hit renews it), its key forgotten; growth keeps every slot's recency."""
    table = MaskTable(n_words=2, budget_bytes=4 * 2 * 5)  # 5 slots: zeros + 4
    words = {k: np.array([n + 1, 0], dtype=np.int32) for n, k in enumerate("abcdefg")}
    table.begin_step()
    slots = {k: table.slot(k, words[k]) for k in "abcd"}  # the table grows on the way
    for k in "cab":  # one step each: d is now the least recently used, then c
        table.begin_step()
        assert table.slot(k, words[k]) == slots[k]
    table.begin_step()
    assert table.slot("e", words["e"]) == slots["d"] and table.evictions == 1
    table.begin_step()
    assert table.slot("f", words["f"]) == slots["c"]  # c: last used before a and b
    assert table.uploads == 6 and int(table.table[slots["c"], 0]) == 6
    table.begin_step()
    assert table.slot("d", words["d"]) == slots["a"]  # d comes back: a new upload
    assert table.uploads == 7 and table.evictions == 3


@pytest.mark.parametrize("in_place", [True, False], ids=["numpy-write", "index-copy"])
def test_mask_table_writes_new_masks_at_the_next_read_with_the_latest_mask_per_slot(
        monkeypatch, in_place):
    """A step's new masks are staged and written to the table together when it is next
    read; a slot reused before that read (evicted, then taken again) holds its newest
    mask, growth between staging and the read keeps every staged mask, and a short mask's
    tail is zero. Both writes: a numpy view's (the CPU's) and ``index_copy_`` (a GPU's,
    here on CPU tensors)."""
    writes = []
    flush = MaskTable._flush
    monkeypatch.setattr(MaskTable, "_flush", lambda self: (writes.append(len(self._pending)),
                                                           flush(self)))
    table = MaskTable(n_words=3, budget_bytes=4 * 3 * 3)  # 3 slots: zeros + 2
    table._write_in_place = in_place
    row = {k: np.array([n + 1, n + 10, n + 20], dtype=np.int32) for n, k in enumerate("abcd")}
    table.begin_step()
    sa, sb = table.slot("a", row["a"]), table.slot("b", row["b"])
    table.begin_step()  # (no read in between: both still staged)
    sc = table.slot("c", row["c"])  # evicts a or b before either was written
    assert writes == [] and table.evictions == 1
    got = table.table.numpy()
    assert writes == [2]  # two slots, one copy; c's mask replaced the evicted one's
    assert got[sc].tolist() == row["c"].tolist() and not got[0].any()
    kept = sb if sc == sa else sa
    assert got[kept].tolist() == row["b" if kept == sb else "a"].tolist()
    table.begin_step()
    assert table.slot("c", row["c"]) == sc and table.uploads == 3
    assert table.table.shape == (3, 3)
    assert writes == [2]  # a hit stages nothing: no copy

    grows = MaskTable(n_words=3)
    grows._write_in_place = in_place
    grows.begin_step()
    slots = [grows.slot(i, np.full(1 + i % 3, i + 1, dtype=np.int32)) for i in range(300)]
    got = grows.table.numpy()  # (the table grew from 256 slots, the staging rows past 16)
    for i, s in enumerate(slots):
        n = 1 + i % 3
        assert got[s].tolist() == [i + 1] * n + [0] * (3 - n)


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_gathers_masks_from_the_table(device):
    g = torch.Generator().manual_seed(3)
    b, v = 6, 1000
    table = torch.randint(-2**31, 2**31 - 1, (5, (v + 31) // 32), dtype=torch.int32, generator=g)
    table[0] = 0
    rows = torch.tensor([0, 3, 3, 1, 4, 2], dtype=torch.int32)
    logits = torch.randn(b, v, generator=g)
    want = apply_logit_controls(logits.clone().to(device), banned_bitmask=table[rows.long()].to(
        device))
    got = apply_logit_controls(logits.clone().to(device), mask_table=table.to(device),
                               mask_rows=rows.to(device))
    assert torch.equal(got, want)
    with pytest.raises(ValueError):
        apply_logit_controls(logits.clone(), mask_table=table)
