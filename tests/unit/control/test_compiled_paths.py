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
from hypothesis import given, settings
from hypothesis import strategies as st
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


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["plain", "special", "stop",
                                                             "masked", "past", "several"])),
                min_size=1, max_size=6, unique_by=lambda h: h[0]),
       st.booleans(), st.booleans())
def test_inline_loop_bans_equal_the_loop_bans(vocab_index, hits, narrow_mask, table):
    """``_ban_loops``' inline check of a one-token hit bans exactly what ``_loop_bans``
    would: no special or stop token, no token the mask bans already, none past the
    vocabulary, and nothing when the mask leaves a single text token (a forced stop)."""
    from greyelephant.control.steering_batch import _StepPlan
    from greyelephant.control.vocab_index import pack_bool

    batch = SteeringBatch(vocab_index, "cpu", compiled=True)
    special = batch.special
    vocab = vocab_index.vocab_size
    text_ids = np.flatnonzero(~special[:vocab])
    plain, masked = int(text_ids[100]), int(text_ids[200])
    spec_tok = int(np.flatnonzero(special)[0])
    stop = int(text_ids[300])
    ban = np.ones(vocab, dtype=bool) if narrow_mask else np.zeros(vocab, dtype=bool)
    ban[masked] = True
    if narrow_mask:  # every text token banned but ``plain``: one left
        ban[plain] = False
    words = pack_bool(ban, vocab_index.n_words)
    table_guards = batch._guards
    tokens = {"plain": plain, "special": spec_tok, "stop": stop, "masked": masked,
              "past": vocab + 5}

    class Row:
        stop_ids = frozenset({2, stop})

    followers = {plain, masked, stop}
    table_guards.followers = lambda h: followers  # (the rows' several followers)
    width = vocab + 16  # logits wider than the vocabulary (padded)
    mt = batch._mask_table(width) if table else None
    plan = _StepPlan(4, width, mt)
    push = np.array([[j, 100 + j, 0] for j in range(4)], dtype=np.int64)
    pushed = [(j, 100 + j, 0, words) for j in range(4)]
    got_hits = [[j, -1 if kind == "several" else tokens[kind]] for j, kind in hits]
    batch._ban_loops(plan, push, got_hits, pushed, [Row()] * 4, None, None, width)
    for j, kind in hits:
        loop = followers if kind == "several" else {tokens[kind]}
        want = [t for t in batch._loop_bans(words, loop, Row.stop_ids, special, width)
                if 0 <= t < width]
        assert sorted(plan.extra.get(j, [])) == sorted(want), (j, kind)
