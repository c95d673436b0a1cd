"""The batch's compiled per-step loops (``SteeringBatch(compiled=True)``: the loop
guards kept in one NgramTable and pushed for all rows in one call, the rollback check's
probe in one call) give the same logits, bit for bit, as the Python and numpy paths
(``compiled=False``): greedy rollback rows (their check runs every step), rows with
n-grams of 2, 3 and 4 tokens (in the table) and of 6 (a per-row guard either way), text
that loops (so the guard bans), two tokens arriving at once, a rollback continuation's
resumed tokens, rows removed, replaced and moved; and a row's table entry is released
with the row."""

from __future__ import annotations

import gc

import numpy as np
import torch
from twin_batches import move_in_both

from greyelephant.control.ngram_table import NgramTable
from greyelephant.control.spec import parse_steering
from greyelephant.control.steering_batch import RequestInfo, SteeringBatch, _TableGuard

SIGNAL = 16


def _args(n: int, **extra) -> dict:
    spec = parse_steering({"avoid": ["Rome", {"entity": "Coca-Cola", "aliases": ["Coke"]}],
                           "prefer": ["Pepsi"], "no_repeat_ngram": n, **extra})
    return spec.engine_steering(signal=SIGNAL).to_extra_args()


def test_compiled_loops_equal_the_python_paths(vocab_index, tokenizer):
    loop_text = tokenizer.encode(" the cat sat on the mat and the cat sat on the mat" * 3)
    text = tokenizer.encode(" I drank a Coke in Rome, then the cat sat on the mat again")
    info = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=200,
                       prompt=[1, *text[:4]])
    a = SteeringBatch(vocab_index, "cpu", compiled=True)
    b = SteeringBatch(vocab_index, "cpu", compiled=False)
    resumed = parse_steering({"avoid": ["Rome"], "no_repeat_ngram": 3}).engine_steering(
        signal=SIGNAL).model_copy(update={"resume": 4}).to_extra_args()
    specs = [_args(2), _args(3), _args(4), _args(6), resumed, None]
    outs_a = [[] for _ in specs]
    outs_b = [[] for _ in specs]
    for i, args in enumerate(specs):
        a.add(i, args, outs_a[i], info)
        b.add(i, args, outs_b[i], info)
    rng = np.random.default_rng(0)
    banned_steps = 0
    for step in range(60):
        if step == 20:  # row 1 replaced by a new request, row 0 removed
            for batch, outs in ((a, outs_a), (b, outs_b)):
                outs[1] = []
                batch.add(1, _args(3), outs[1], info)
                batch.remove(0)
        if step == 35:  # rows 2 and 3 swap places, row 5 moves onto row 0
            move_in_both(((a, outs_a), (b, outs_b)), 2, 3, True)
            move_in_both(((a, outs_a), (b, outs_b)), 5, 0, False)
        n = len(specs)
        logits = torch.randn(n, vocab_index.vocab_size,
                             generator=torch.Generator().manual_seed(step))
        la, lb = a.apply(logits.clone()), b.apply(logits.clone())
        assert torch.equal(la, lb), step
        banned_steps += int(torch.isinf(la).sum() > torch.isinf(logits).sum())
        for i in range(n):
            src = loop_text if i % 2 else text
            t = src[(step + i) % len(src)] if rng.random() < 0.9 else int(la[i].argmax())
            outs_a[i].append(t)
            outs_b[i].append(t)
            if step % 7 == 3:  # two tokens at once: the row catches up
                t2 = src[(step + i + 1) % len(src)]
                outs_a[i].append(t2)
                outs_b[i].append(t2)
    assert banned_steps > 0
    assert a.anticipated + a.signals > 0  # the check acted, the same way in both
    assert (a.anticipated, a.signals) == (b.anticipated, b.signals)
    # the loop guard banned, from the table
    assert any(isinstance(r.guard, _TableGuard) for r in a.rows.values())
    assert not any(isinstance(r.guard, _TableGuard) for r in b.rows.values())


def test_a_row_s_table_entry_goes_with_the_row(vocab_index):
    batch = SteeringBatch(vocab_index, "cpu", compiled=True)
    info = RequestInfo(stop_ids=frozenset({2, SIGNAL}))
    for i in range(4):
        batch.add(i, _args(4), [], info)
    batch.add(4, _args(6), [], info)  # past the table's n-grams: a per-row guard
    table: NgramTable = batch._guards
    assert table.rows == 4
    batch.remove(0)
    batch.add(1, _args(3), [], info)  # replaces the row there
    batch.move(2, 3, False)  # row 3 is dropped
    gc.collect()
    assert table.rows == 2


def test_a_vocabulary_past_the_table_s_packing_keeps_per_row_guards(vocab_index, monkeypatch):
    from greyelephant.control import steering_batch
    from greyelephant.control.loop_guard import NgramGuard

    monkeypatch.setattr(steering_batch, "NGRAM_TABLE_VOCAB", vocab_index.vocab_size - 1)
    batch = SteeringBatch(vocab_index, "cpu", compiled=True)
    batch.add(0, _args(4), [], RequestInfo(stop_ids=frozenset({2, SIGNAL})))
    assert type(batch.rows[0].guard) is NgramGuard
