"""Rollback decoding without an engine, on the real tokenizer: the processor's signal
(SteeringBatch), the tracker that finds where a form began (RollbackTracker), the start
ban of a continuation, the state a continuation rebuilds from its resumed tokens — and a
whole greedy decode of a "model" that insists on a name, rolled back instead of mangled."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from greyelephant.control.ban_automaton import CompiledSteering, SteeringCache
from greyelephant.control.choice_probe import argmax_if_in_compiled, in_sets
from greyelephant.control.detector import detector_for
from greyelephant.control.engine_args import EngineSteering
from greyelephant.control.rollback import RollbackTracker, signal_token_for
from greyelephant.control.spec import parse_steering
from greyelephant.control.flat_index import FlatIndex
from greyelephant.control.steering_batch import (
    CHOICE_PAD,
    CHOICE_PROBES,
    RequestInfo,
    SteeringBatch,
    argmax_if_in,
)

SIGNAL = 16  # <empty_output>: a special token SmolLM2's template never uses


def engine(avoid, prefer=(), **kw) -> EngineSteering:
    spec = parse_steering({"avoid": avoid, "prefer": list(prefer), "no_repeat_ngram": 0})
    es = spec.engine_steering(signal=SIGNAL)
    return es.model_copy(update=kw)


def greedy(**kw) -> RequestInfo:
    return RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, **kw)


def test_signal_token_is_a_spare_special_token(tokenizer):
    assert signal_token_for(tokenizer, 49152) == SIGNAL


def test_tracker_finds_where_the_form_began(vocab_index, tokenizer):
    es = engine([{"entity": "Coca-Cola", "aliases": ["Coke"]}, "Rome"])
    cs = CompiledSteering(vocab_index, es.avoid, es.prefer, es.prefer_bias)
    for text, before in [("I drank a Coca-Cola", "I drank a"), ("Coca-Col", ""),
                         ("a glass of (Coke", "a glass of ("), ("I like Rome", "I like"),
                         ("Romeo and Rom", "Romeo and")]:
        ids = tokenizer.encode(text)
        tr = RollbackTracker(cs)
        tr.push(ids)
        assert tr.inside_form()
        k = tr.live_start()
        assert tokenizer.decode(ids[:k]) == before, text
        assert tr.live_groups() == frozenset({1 if "Rom" in text else 0})
        tr.truncate(k)
        assert len(tr) == k and not tr.inside_form()
    tr = RollbackTracker(cs)
    tr.push(tokenizer.encode("Romeo and Juliet"))
    assert not tr.inside_form() and tr.live_start() == len(tr)


def _step(batch, outs, logits):
    batch.apply(logits)
    return logits.argmax(-1).tolist()


def test_greedy_row_heading_into_a_form_is_signalled(vocab_index, tokenizer):
    """Inside "Coca-Cola", the model's own choice (a separator: " is") is banned: the row
    is forced to the signal instead of a detour; a row outside any form whose choice is
    banned is masked as usual."""
    es = engine([{"entity": "Coca-Cola", "aliases": ["Coke"]}])
    out = tokenizer.encode(" The best is Coca-Cola")
    other = tokenizer.encode(" The best is")
    batch = SteeringBatch(vocab_index)
    batch.add(0, es.to_extra_args(), list(out), greedy())
    batch.add(1, es.to_extra_args(), list(other), greedy())
    logits = torch.zeros(2, vocab_index.vocab_size)
    is_ = tokenizer.encode(" is")[0]
    logits[:, is_] = 10.0
    top = _step(batch, None, logits)
    assert top[0] == SIGNAL and torch.isinf(logits[0]).sum() == vocab_index.vocab_size - 1
    assert top[1] == is_ and logits[1, SIGNAL] == float("-inf")


def test_sampling_row_signals_on_banned_mass(vocab_index, tokenizer):
    es = engine(["Rome"])
    mass = es.rollback_mass
    out = tokenizer.encode(" I love Rome")
    dot, o = tokenizer.encode(".")[0], tokenizer.encode("o")[0]
    for p_dot, want_signal in [(mass + 0.2, True), (mass - 0.2, False)]:
        batch = SteeringBatch(vocab_index)
        batch.add(0, es.to_extra_args(), list(out), RequestInfo(temperature=1.0))
        logits = torch.full((1, vocab_index.vocab_size), -1e4)
        logits[0, dot] = float(np.log(p_dot))
        logits[0, o] = float(np.log(1 - p_dot))
        batch.apply(logits)
        assert (int(logits.argmax()) == SIGNAL) == want_signal
        if not want_signal:
            assert logits[0, dot] == float("-inf") and logits[0, o] > -1e3  # "Romeo"


def test_continuation_rebuilds_state_and_bans_the_start(vocab_index, tokenizer):
    """A continuation resumes from prompt-tail tokens: its state is theirs, its first step
    bans every token that begins the named entity, later steps do not."""
    es = engine([{"entity": "Coca-Cola", "aliases": ["Coke"]}, "Rome"])
    accepted = tokenizer.encode(" The best cola is")
    prompt = tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n") + accepted
    cont = es.model_copy(update={"resume": len(accepted), "start_ban": (0,)})
    out: list[int] = []
    batch = SteeringBatch(vocab_index)
    batch.add(0, cont.to_extra_args(), out, greedy(prompt=prompt))
    row = batch.rows[0]
    assert row.resumed == tuple(accepted) and row.state.n_tokens == len(accepted)
    logits = torch.zeros(1, vocab_index.vocab_size)
    batch.apply(logits)
    banned = {t for t in range(vocab_index.vocab_size) if logits[0, t] == float("-inf")}
    for piece in [" C", " Co", " Coca", " Coke", " c"]:
        assert tokenizer.encode(piece)[0] in banned, piece
    for piece in [" Pepsi", " R", " the"]:
        assert tokenizer.encode(piece)[0] not in banned, piece
    out.extend(tokenizer.encode(" the"))
    logits = torch.zeros(1, vocab_index.vocab_size)
    batch.apply(logits)
    assert logits[0, tokenizer.encode(" C")[0]] == 0  # the start ban is for one position


def test_min_tokens_and_resumed_penalties(vocab_index, tokenizer):
    es = engine(["Rome"], min_tokens=2)
    accepted = tokenizer.encode(" a a b")
    a, b = tokenizer.encode(" a")[0], tokenizer.encode(" b")[0]
    cont = es.model_copy(update={"resume": len(accepted)})
    batch = SteeringBatch(vocab_index)
    info = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=1.0,
                       presence_penalty=0.5, frequency_penalty=0.25, prompt=[1, *accepted])
    batch.add(0, cont.to_extra_args(), [], info)
    logits = torch.zeros(1, vocab_index.vocab_size)
    batch.apply(logits)
    assert logits[0, 2] == float("-inf")  # EOS before min_tokens
    assert logits[0, a] == pytest.approx(-(0.5 + 2 * 0.25))
    assert logits[0, b] == pytest.approx(-(0.5 + 0.25))


def test_a_model_that_insists_on_a_name_is_rolled_back_not_mangled(vocab_index, tokenizer):
    """Greedy "model": it always wants to continue its script, "The most famous cola is
    Coca-Cola, of course.", token by token, falling back to a fixed list of words when a
    script token is banned. Without rollback the mask bends the name into a look-alike;
    with rollback (signal → tracker → continuation with a start ban) the name is dropped.
    """
    script = tokenizer.encode(" The most famous cola is Coca-Cola, of course.")
    fallback = [tokenizer.encode(w)[0] for w in [" Pepsi", ",", " of", " course", "."]]
    det = detector_for([("Coca-Cola", ("Coke",))])

    def model_logits(accepted: list[int]) -> torch.Tensor:
        logits = torch.zeros(vocab_index.vocab_size)
        pos = len(accepted)
        if pos < len(script):
            logits[script[pos]] = 30.0
        for j, t in enumerate(fallback):
            logits[t] += 10.0 - j
        # the model's second choice inside the name: a look-alike continuation
        logits[tokenizer.encode("lo")[0]] += 20.0
        logits[2] += 5.0 if pos >= len(script) else -50.0
        return logits

    def decode(rollback: bool) -> tuple[str, int]:
        es = engine([{"entity": "Coca-Cola", "aliases": ["Coke"]}])
        if not rollback:
            es = es.model_copy(update={"rollback_mass": None})
        cs = CompiledSteering(vocab_index, es.avoid, es.prefer, es.prefer_bias)
        accepted: list[int] = []
        tracker = RollbackTracker(cs)
        start_bans: dict[int, set[int]] = {}
        rollbacks = 0
        while len(accepted) < 40:
            base = len(accepted)
            args = es.model_copy(update={"resume": base,
                                         "start_ban": tuple(sorted(start_bans.get(base, ())))})
            batch = SteeringBatch(vocab_index)
            out: list[int] = []
            batch.add(0, args.to_extra_args(), out, greedy(prompt=[1, *accepted]))
            while len(accepted) + len(out) < 40:
                logits = model_logits(accepted + out)[None]
                batch.apply(logits)
                t = int(logits.argmax())
                if t == SIGNAL:
                    break
                out.append(t)
                if t == 2:
                    break
            tracker.push(out)
            accepted += out
            if t != SIGNAL:
                break
            rollbacks += 1
            k = tracker.live_start()
            start_bans.setdefault(k, set()).update(tracker.live_groups())
            del accepted[k:]
            tracker.truncate(k)
        return tokenizer.decode(accepted, skip_special_tokens=True), rollbacks

    masked, _ = decode(rollback=False)
    rolled, n = decode(rollback=True)
    assert not det.find(masked) and not det.find(rolled)
    assert "Coca" in masked  # the mask alone leaves a look-alike ("Coca-Colo…")
    assert n >= 1 and "Coca" not in rolled and "Coke" not in rolled, rolled
    assert rolled.startswith(" The most famous cola is"), rolled


def test_engine_form_limits():
    for bad in [{"signal": -1}, {"signal": 3, "rollback_mass": 0},
                {"rollback_mass": 0.5}]:  # rollback needs a signal
        with pytest.raises(ValueError):
            EngineSteering.parse({"avoid": [["x"]], **bad})
    ok = EngineSteering.parse({"avoid": ["x", ["y", "z"]], "start_ban": [1], "signal": 3,
                               "rollback_mass": 0.5})
    assert ok.avoid == (("x",), ("y", "z")) and ok.start_ban == (1,) and ok.rollback


def test_a_whole_name_in_one_token_gets_the_start_ban_at_once(vocab_index, tokenizer):
    """Greedy, at no form, the model's own choice " Nike" would write the whole name:
    the start ban a rollback would bring is applied at this step (no signal, no round
    trip), the preferred entity's nudge doubled; a choice that does not complete a form
    (" Nikelodeon"-like words, other words) changes nothing."""
    es = engine(["Nike"], prefer=["Adidas"])
    nike = tokenizer.encode(" Nike")
    assert len(nike) == 1
    out = tokenizer.encode(" The best running shoes are by")
    batch = SteeringBatch(vocab_index)
    batch.add(0, es.to_extra_args(), list(out), greedy())
    batch.add(1, es.to_extra_args(), list(out), greedy())
    logits = torch.zeros(2, vocab_index.vocab_size)
    logits[0, nike[0]] = 10.0
    logits[1, tokenizer.encode(" far")[0]] = 10.0
    plain = SteeringBatch(vocab_index)
    plain.add(0, es.to_extra_args(), list(out), greedy())
    reference = torch.zeros(1, vocab_index.vocab_size)
    plain.apply(reference)
    batch.apply(logits)
    assert batch.anticipated == 1 and batch.signals == 0
    for piece in [" Nike", " N", " Ni", " Nik"]:
        assert logits[0, tokenizer.encode(piece)[0]] == float("-inf"), piece
    assert logits[1, tokenizer.encode(" N")[0]] == 0  # the other row: nothing changed
    boosted = (reference[0] > 0).nonzero().flatten()
    assert boosted.numel() and torch.all(logits[0, boosted] > reference[0, boosted])


def test_a_row_that_cannot_be_compiled_fails_closed(vocab_index, tokenizer):
    """A steered row whose spec does not compile in the engine is never left unsteered:
    it is ended at once with its signal token (the server then fails the request)."""

    class BrokenCache:
        def get(self, *a, **kw):
            raise MemoryError("no room for the automaton")

    es = engine(["Nike"])
    batch = SteeringBatch(vocab_index, cache=BrokenCache())
    batch.add(0, es.to_extra_args(), [], greedy())
    batch.add(1, None, [], None)
    logits = torch.zeros(2, vocab_index.vocab_size)
    batch.apply(logits)
    assert int(logits[0].argmax()) == SIGNAL
    assert torch.isinf(logits[0]).sum() == vocab_index.vocab_size - 1
    assert torch.equal(logits[1], torch.zeros(vocab_index.vocab_size))  # others untouched


def test_a_failed_row_beside_steered_rows_and_after_moves(vocab_index, tokenizer):
    """A failed row ends at once wherever it sits, the steered rows beside it keep their
    masks, and a move keeps each where it went (rows past the logits are left alone)."""

    class HalfBrokenCache(SteeringCache):
        def get(self, index, avoid, *a, **kw):
            if any("rome" in str(g).lower() for g in avoid):
                raise MemoryError("no room for the automaton")
            return super().get(index, avoid, *a, **kw)

    batch = SteeringBatch(vocab_index, cache=HalfBrokenCache())
    alone = SteeringBatch(vocab_index)  # the steered row by itself: the reference
    batch.add(0, engine(["Rome"]).to_extra_args(), [], greedy())
    batch.add(1, engine(["Nike"]).to_extra_args(), [], greedy())
    batch.add(5, engine(["Nike"]).to_extra_args(), [], greedy())  # past the logits
    alone.add(0, engine(["Nike"]).to_extra_args(), [], greedy())
    want = alone.apply(torch.randn(1, vocab_index.vocab_size,
                                   generator=torch.Generator().manual_seed(0)))
    for step in range(2):
        logits = torch.randn(1, vocab_index.vocab_size,
                             generator=torch.Generator().manual_seed(0)).repeat(2, 1)
        batch.apply(logits)
        failed, steered = (0, 1) if step == 0 else (1, 0)
        assert int(logits[failed].argmax()) == SIGNAL
        assert torch.isinf(logits[failed]).sum() == vocab_index.vocab_size - 1
        assert torch.equal(logits[steered], want[0])
        batch.move(0, 1, swap=True)


def test_whole_form_mask_covers_every_token_that_writes_a_whole_form(vocab_index, tokenizer):
    """The anticipation check tests a row's argmax against this mask first: every token
    that would write a whole form at once from a state must be in it, at a word start and
    after one."""
    es = engine([{"entity": "Coca-Cola", "aliases": ["Coke"]}, "Nike", "Rome"])
    cs = CompiledSteering(vocab_index, es.avoid, es.prefer, es.prefer_bias)
    for text in ["", "I like", "I like ", "(", "Coca-"]:
        st = cs.new_row()
        cs.advance_many(st, tokenizer.encode(text) if text else [])
        cand = set(np.flatnonzero(cs.whole_form_mask()).tolist())
        writes = {t for t in range(vocab_index.vocab_size) if cs.whole_form_groups(st, t)}
        assert writes <= cand, text
        if text in ("", "I like"):
            assert tokenizer.encode(" Nike")[0] in writes


def test_anticipation_takes_the_first_maximum_on_a_partly_steered_batch(vocab_index,
                                                                        tokenizer):
    """Exactly the argmax rule: a tie between " Nike" and an earlier token goes to the
    earlier one (no anticipation); a row whose maximum is " Nike" gets the start ban; an
    unsteered row between them is untouched."""
    es = engine(["Nike"], prefer=["Adidas"])
    nike = tokenizer.encode(" Nike")[0]
    out = tokenizer.encode(" The best running shoes are by")
    batch = SteeringBatch(vocab_index)
    batch.add(0, es.to_extra_args(), list(out), greedy())
    batch.add(1, None, list(out))
    batch.add(2, es.to_extra_args(), list(out), greedy())
    logits = torch.zeros(3, vocab_index.vocab_size)
    earlier = tokenizer.encode(" far")[0]
    assert earlier < nike
    logits[0, nike] = logits[0, earlier] = 10.0  # tie: " far" is the argmax
    logits[1, nike] = 10.0
    logits[2, nike] = 10.0
    batch.apply(logits)
    assert batch.anticipated == 1
    assert logits[0, nike] == 10.0 and logits[1, nike] == 10.0
    assert logits[2, nike] == float("-inf")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_argmax_if_in_gives_every_argmax_its_set_may_hold(data):
    """argmax_if_in leaves a row out only when its argmax lies outside the row's set, and
    gives the true argmax (numpy's: first maximum, NaN first) for every row it keeps —
    NaN and infinities included, sets dense, empty, padded to the one take's width, over it,
    large or shared by several rows, logits contiguous or a view of wider rows,
    vocabularies narrower and wider than each probe, flat indices memoised or not. Its
    compiled twin (control/choice_probe.py) gives the same answer, row for row."""
    b = data.draw(st.integers(1, 12))  # undecided rows past FEW_UNDECIDED too
    v = data.draw(st.integers(1, 5 * CHOICE_PROBES[-1]))
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, v)).astype(data.draw(st.sampled_from([np.float32, np.float64])))
    if data.draw(st.booleans()):  # a view of wider rows (a padded vocabulary): a 2-D gather
        wide = np.zeros((b, v + 5), dtype=x.dtype)
        wide[:, :v] = x
        x = wide[:, :v]
    for _ in range(data.draw(st.integers(0, 6))):  # special values, some at the top
        x[rng.integers(b), rng.integers(v)] = rng.choice([np.nan, np.inf, -np.inf, 9.0, 9.0])
    rows = sorted(rng.choice(b, size=data.draw(st.integers(1, b)), replace=False).tolist())
    sets = []
    for i in rows:
        kind = data.draw(st.sampled_from(["none", "empty", "few", "argmax", "tail", "shared",
                                          "padded", "medium", "large"]))
        if kind == "none":
            sets.append(None)
            continue
        if kind == "shared":  # the same array as an earlier row's (rows of one spec)
            earlier = [a for a in sets if a is not None]
            sets.append(earlier[-1] if earlier else np.asarray([0], dtype=np.int64))
            continue
        ids = {"empty": [], "few": rng.integers(0, v, size=3).tolist(),
               "padded": rng.integers(0, v, size=CHOICE_PAD).tolist(),  # the widest padded
               "medium": rng.integers(0, v, size=CHOICE_PAD + 1).tolist(),  # one take each
               "large": rng.integers(0, v, size=CHOICE_PROBES[0] + 50).tolist(),
               "argmax": [int(x[i].argmax())], "tail": [v - 1]}[kind]
        # id lists come as int32 (a mask's banned ids) or int64 (whole-form lists)
        sets.append(np.asarray(ids, dtype=data.draw(st.sampled_from([np.int32, np.int64]))))
    # with a FlatIndex (the batch's: memoised flat indices, used twice), or without
    flat = FlatIndex() if data.draw(st.booleans()) else None
    got = argmax_if_in(x, rows, sets, flat)
    if flat is not None:
        assert argmax_if_in(x, rows, sets, flat) == got
    assert argmax_if_in_compiled(x, rows, sets, CHOICE_PROBES) == got
    for i, ids in zip(rows, sets, strict=True):
        top = int(x[i].argmax())
        if ids is None or top in set(ids.tolist()):
            assert got.get(i) == top
        else:
            assert got.get(i, top) == top


def test_a_form_forced_past_the_mask_is_flagged_and_warned_once(vocab_index, tokenizer,
                                                                caplog):
    """Tokens that write an avoided form anyway (forced past the mask, one step at a time
    or several at once) mark the row's state violated, with one warning for the batch."""
    batch = SteeringBatch(vocab_index)
    outs = [[], []]
    for i in range(2):
        batch.add(i, engine(["Nike"]).to_extra_args(), outs[i], greedy())
    forced = tokenizer.encode("I wear Nike shoes")
    with caplog.at_level(logging.WARNING, logger="greyelephant.control"):
        for t in forced:  # row 0: one token a step (the in-line advance)
            outs[0].append(t)
            batch.apply(torch.zeros(2, vocab_index.vocab_size))
        outs[1].extend(forced)  # row 1: all at once (the catch-up loop)
        batch.apply(torch.zeros(2, vocab_index.vocab_size))
    assert batch.rows[0].state.violated and batch.rows[1].state.violated
    assert [r.message for r in caplog.records].count(
        "steering: a banned form was emitted (a token was forced past the mask)") == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.lists(st.integers(0, 9), max_size=5)),
                max_size=12))
def test_in_sets_finds_the_choices_in_their_sets(rows):
    """``in_sets`` (a GPU's pooled rows' check): the positions whose choice lies in its
    own run of the concatenated sets, ascending; empty sets hold nothing."""
    choices = np.array([c for c, _ in rows], dtype=np.int64)
    sizes = np.array([len(s) for _, s in rows], dtype=np.int64)
    sets = np.array([t for _, s in rows for t in s], dtype=np.int64)
    want = [q for q, (c, s) in enumerate(rows) if c in s]
    assert in_sets(choices, sizes, sets).tolist() == want
