"""The loop guard (no_repeat_ngram): incremental n-gram bans equal HF's semantics, and the
batch applies them to the steered rows only, never to EOS / special / stop tokens, and
never so that nothing is left."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from greyelephant.control.loop_guard import (
    TOKEN_LIMIT,
    NgramGuard,
    banned_ngram_tokens,
    check_ngram_size,
)
from greyelephant.control.spec import parse_steering
from greyelephant.control.engine_args import EngineSteering
from greyelephant.control.steering_batch import RequestInfo, SteeringBatch
from greyelephant.control.vocab_index import VocabIndex

# -- pure logic ---------------------------------------------------------------------------


def hf_banned(tokens: list[int], n: int) -> set[int]:
    """Transcription of transformers' NoRepeatNGramLogitsProcessor for one row."""
    cur_len = len(tokens)
    if cur_len + 1 < n:
        return set()
    ngrams: dict[tuple[int, ...], list[int]] = {}
    for ng in zip(*[tokens[i:] for i in range(n)], strict=False):
        ngrams.setdefault(tuple(ng[:-1]), []).append(ng[-1])
    return set(ngrams.get(tuple(tokens[cur_len + 1 - n:cur_len]), []))


def test_loop_is_cut_at_the_nth_token():
    g = NgramGuard(4)
    loop = [10, 11, 12, 13, 14]
    g.extend(loop)
    assert g.banned() == set()
    g.extend([10, 11])
    assert g.banned() == set()  # (14, 10, 11) was never followed
    g.extend([99, 10, 11, 12])  # "... 10 11 12" again
    assert g.banned() == {13}  # 10 11 12 13 would repeat
    g.push(55)
    g.extend([10, 11, 12])
    assert g.banned() == {13, 55}  # every follower of (10, 11, 12)


def test_stutter_stops_at_n():
    g = NgramGuard(4)
    g.extend([7, 7, 7])
    assert g.banned() == set()
    g.push(7)  # 4 in a row is fine ...
    assert g.banned() == {7}  # ... a 5th would repeat (7, 7, 7, 7)


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_incremental_equals_hf_on_random_streams(n):
    rng = random.Random(n)
    for _ in range(50):
        vocab = rng.choice([3, 5, 20])
        toks = [rng.randrange(vocab) for _ in range(rng.randrange(0, 60))]
        g = NgramGuard(n)
        for i, t in enumerate(toks):
            assert g.banned() == hf_banned(toks[:i], n) == banned_ngram_tokens(toks[:i], n)
            g.push(t)
        assert g.banned() == hf_banned(toks, n)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_push_banned_is_push_then_banned(n):
    rng = random.Random(100 + n)
    for _ in range(50):
        toks = [rng.randrange(rng.choice([3, 5, 20])) for _ in range(rng.randrange(0, 60))]
        one, two = NgramGuard(n), NgramGuard(n)
        for i, t in enumerate(toks):
            two.push(t)
            assert one.push_banned(t) == two.banned() == hf_banned(toks[:i + 1], n)
        assert (one.context, one.followers) == (two.context, two.followers)


def test_reset_and_validation():
    g = NgramGuard(2)
    g.extend([1, 2, 1])
    assert g.banned() == {2}
    g.reset()
    assert g.banned() == set() and not g.followers
    with pytest.raises(ValueError):
        NgramGuard(1)
    assert check_ngram_size(0) == 0 and check_ngram_size(32) == 32
    for bad in (1, 33, -1, True, 4.0, "4", None):
        with pytest.raises(ValueError):
            check_ngram_size(bad)


def test_token_ids_are_packed_without_overlap_and_checked():
    """Ids at the packing's edges stay distinct (a context of 0s is not one of 2**32-1s);
    an id the packing cannot hold is refused, never folded into another."""
    top = TOKEN_LIMIT - 1
    toks = [0, top, 0, top, 0, 0, top, 1 << 31, top, 0, top]
    for n in (2, 3, 4):
        g = NgramGuard(n)
        for i, t in enumerate(toks):
            assert g.push_banned(t) == hf_banned(toks[:i + 1], n)
    g = NgramGuard(3)
    for bad in (-1, TOKEN_LIMIT):
        with pytest.raises(ValueError, match="token id"):
            g.push(bad)


def test_engine_args_field():
    base = {"avoid": ["nike"]}
    assert EngineSteering.parse(base).no_repeat_ngram == 0  # absent: off
    assert EngineSteering.parse({**base, "no_repeat_ngram": 4}).no_repeat_ngram == 4
    for bad in (1, 99, "4", 2.5, True):
        with pytest.raises(ValueError, match="no_repeat_ngram"):
            EngineSteering.parse({**base, "no_repeat_ngram": bad})


# -- through SteeringBatch, with a toy vocabulary ---------------------------------------------

TOY = [None, None] + [f" w{i}".encode() for i in range(2, 70)]  # 0, 1: special (EOS = 1)


@pytest.fixture()
def toy_index():
    return VocabIndex.from_token_bytes(TOY)


def guard_only(n=4, **kw):
    return {"v": 2, "avoid": [], "prefer": [], "prefer_bias": 0.0, "no_repeat_ngram": n, **kw}


def test_batch_bans_loop_tokens_on_the_steered_row_only(toy_index):
    b = SteeringBatch(toy_index)
    out_loop = [5, 6, 7, 8, 9, 5, 6, 7]
    b.add(0, None, list(out_loop))
    b.add(1, guard_only(), out_loop + [-1])  # async placeholder at the end is skipped
    b.add(2, guard_only(0), list(out_loop))  # guard off and nothing else: unsteered
    assert set(b.rows) == {1}
    v = len(TOY)
    logits = torch.zeros(3, v)
    b.apply(logits)
    assert logits[1, 8] == float("-inf")
    assert torch.isfinite(logits[1, np.r_[0:8, 9:v]]).all()
    assert torch.equal(logits[0], torch.zeros(v)) and torch.equal(logits[2], torch.zeros(v))


def test_batch_never_bans_eos_special_or_stop_tokens(toy_index):
    b = SteeringBatch(toy_index)
    out = [1, 1, 1, 1, 4, 4, 4, 4]  # special token 1 (no text) and a stop token 4 looping
    b.add(0, guard_only(), out, RequestInfo(stop_ids=frozenset([4])))
    logits = torch.zeros(1, len(TOY))
    b.apply(logits)
    assert torch.isfinite(logits).all()
    b.add(0, guard_only(), list(out))  # without the stop id: 4 is banned
    logits = torch.zeros(1, len(TOY))
    b.apply(logits)
    assert logits[0, 4] == float("-inf") and torch.isfinite(logits[0, :4]).all()


def test_batch_drops_the_guard_when_nothing_would_be_left():
    tb = [None] + [f" t{i}".encode() for i in range(1, 40)]
    index = VocabIndex.from_token_bytes(tb)
    b = SteeringBatch(index)
    # every text token except 3 is banned by the string-level ban
    avoid = [f"t{i}" for i in range(1, 40) if i != 3]
    out = [3, 3, 3, 3]  # the guard wants to ban 3, the only text token left
    b.add(0, guard_only(avoid=avoid), out)
    logits = torch.zeros(1, len(tb))
    b.apply(logits)
    # only the special (EOS-like) token 0 would be left, a forced stop: the guard is
    # dropped for this step, token 3 stays allowed; the string-level ban still holds
    assert logits[0, 3] == 0.0 and logits[0, 0] == 0.0
    assert torch.isinf(logits[0, 1:3]).all() and torch.isinf(logits[0, 4:]).all()
    # with one more text token free, the guard applies again
    b.add(0, guard_only(avoid=avoid[1:]), list(out))  # t1 is allowed now
    logits = torch.zeros(1, len(tb))
    b.apply(logits)
    assert logits[0, 3] == float("-inf") and logits[0, 1] == 0.0


def test_replay_after_shrink_resets_the_guard(toy_index):
    b = SteeringBatch(toy_index)
    out = [5, 6, 7, 8, 5, 6, 7]
    b.add(0, guard_only(), out)
    logits = torch.zeros(1, len(TOY))
    b.apply(logits)
    assert logits[0, 8] == float("-inf")
    del out[3:]  # tokens discarded (e.g. preemption): replay from scratch
    out.extend([9])
    logits = torch.zeros(1, len(TOY))
    b.apply(logits)
    assert torch.isfinite(logits).all()


# -- through the vLLM logits processor, with the real tokenizer ----------------------------


def test_processor_applies_the_loop_guard(vocab_index, tokenizer):
    pytest.importorskip("vllm")
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from greyelephant.control.logits_processor import SteeringLogitsProcessor

    proc = SteeringLogitsProcessor(None, torch.device("cpu"), False, index=vocab_index)
    spec = parse_steering({"avoid": ["Nike"], "prefer": ["Adidas"]}).with_defaults()
    assert spec.engine_args()["no_repeat_ngram"] == 4
    text = " It is a great shoe. It is a great"
    out = tokenizer.encode(text)
    shoe = tokenizer.encode(" shoe")[0]
    assert shoe in out
    params = SamplingParams(extra_args={"steering": spec.engine_args()})
    unsteered: list[int] = list(out)
    proc.update_state(BatchUpdate(batch_size=2, removed=[], moved=[], added=[
        (0, SamplingParams(), [1], unsteered), (1, params, [1], out)]))
    v = proc.index.vocab_size
    logits = torch.zeros(2, v)
    proc.apply(logits)
    assert logits[1, shoe] == float("-inf")  # " It is a great shoe" would repeat
    assert logits[1, tokenizer.encode(" Nike")[0]] == float("-inf")  # the ban still holds
    assert logits[1, tokenizer.eos_token_id] == 0.0
    assert torch.equal(logits[0], torch.zeros(v))
    # the loop guard alone costs a handful of tokens; everything else stays allowed
    off = SamplingParams(extra_args={"steering": {**spec.engine_args(), "no_repeat_ngram": 0}})
    proc.update_state(BatchUpdate(batch_size=2, removed=[1], moved=[], added=[(1, params, [1], out)]))
    proc.update_state(BatchUpdate(batch_size=2, removed=[1], moved=[], added=[(1, off, [1], out)]))
    logits = torch.zeros(2, v)
    proc.apply(logits)
    assert logits[1, shoe] == 0.0
