"""The near-miss judge of a rollback chain, without an engine: tokens of a real tokenizer
fed one engine output at a time, as ``server/rollback.py`` receives them.

A near miss is rolled back to where its own form began — not to an earlier word that
began a form and left it cleanly ("The best …" under The Beatles) — and a form the text
left is judged as soon as the word that left it is complete, so the stream is not held
back to the text start."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from vllm.sampling_params import SamplingParams

from greyelephant.control.spec import parse_steering
from greyelephant.server.rollback import _Chain
from greyelephant.server.steering import ActivePlan

SIGNAL = 16

ANSWER = ("The best theme park for a family trip with young kids is usually a Disney+ or "
          "Universal Studios Japan theme park.")


@pytest.fixture(scope="module")
def chain_for(tokenizer, vocab_index):
    def make(avoid):
        ctx = SimpleNamespace(engine=SimpleNamespace(signal_token=SIGNAL, vocab_index=vocab_index,
                                                     tokenizer=tokenizer),
                              settings=SimpleNamespace(on_violation="error"))
        spec = parse_steering({"avoid": avoid, "strategies": ["logits"]})
        run = ActivePlan._steered_run(spec, ctx)
        return _Chain(ctx, "chat", [1, 2, 3], SamplingParams(max_tokens=160, temperature=0.0),
                      "req", None, run, 0, True)
    return make


def feed(chain, tokenizer, text):
    """Feed ``text`` token by token; return the first rollback target the judge gives, with
    the held-back boundary seen after each token."""
    held = []
    for t in tokenizer.encode(text):
        chain.state.add([t], [], tokenizer.decode([t]))
        chain.tracker.push([t])
        target = chain._judge(final=False)
        held.append(chain.held_from())
        if target is not None:
            return target, held
    return chain._judge(final=True), held


def test_a_near_miss_rolls_back_to_its_own_form(chain_for, tokenizer):
    chain = chain_for([{"entity": "Disneyland", "aliases": ["Disney World"]}, "The Beatles",
                       "Amazon"])
    (k, groups), held = feed(chain, tokenizer, ANSWER)
    ids = tokenizer.encode(ANSWER)
    assert tokenizer.decode(ids[:k]).endswith("usually a")
    assert tokenizer.decode(ids[k:k + 1]) == " Disney"
    assert groups == frozenset({0})
    # "The" began The Beatles' form and left it at " best": judged at the next word, so
    # the stream was not held back at the text start for the rest of the answer
    assert held[5] > 0


def test_clean_text_is_judged_and_released_word_by_word(chain_for, tokenizer):
    chain = chain_for(["The Beatles", "Amazon"])
    text = "The best way to learn is to read a lot and ask questions."
    target, held = feed(chain, tokenizer, text)
    assert target is None
    n = len(tokenizer.encode(text))
    assert held[-1] == n  # nothing held at the end
    assert all(h >= i - 2 for i, h in enumerate(held, start=1))  # at most 2 tokens held


def test_a_near_miss_inside_one_coalesced_output_is_still_judged(chain_for, tokenizer):
    """Under load the engine's outputs carry several tokens at once: a form entered and
    left inside one output is still a candidate, judged at that output."""
    chain = chain_for([{"entity": "Disneyland", "aliases": ["Disney World"]}, "The Beatles"])
    ids = tokenizer.encode(ANSWER)
    chain.state.add(ids, [], ANSWER)
    chain.tracker.push(ids)
    k, groups = chain._judge(final=False)
    assert tokenizer.decode(ids[k:k + 1]) == " Disney" and groups == frozenset({0})


def test_a_near_miss_that_runs_into_a_new_form_is_rolled_back(chain_for, tokenizer):
    """"château de Château": the diverging word starts the entity's form again, so the
    text is inside a (new) live form when the first one is judged; the near miss spans
    both and is rolled back to the first."""
    chain = chain_for(["Château de Chambord"])
    text = "The Loire Valley château de Château d'Auxerre, built for Francis I, is old."
    (k, groups), _ = feed(chain, tokenizer, text)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids[:k]) == "The Loire Valley" and groups == frozenset({0})


def test_each_choice_of_n_samples_with_its_own_seed(chain_for):
    """The engine request of choice i of a seeded n > 1 request samples with seed + i, one
    choice per engine request; a single choice keeps its seed."""
    from greyelephant.server.rollback import _engine_params

    run = chain_for(["Coca-Cola"]).run_
    params = SamplingParams(n=3, seed=11, temperature=0.8, max_tokens=40)
    for i in range(3):
        p = _engine_params(params, run, base=0, index=i, start_ban=(), rollback_on=True)
        assert (p.n, p.seed) == (1, 11 + i)
        assert run.signal in p.stop_token_ids
    single = _engine_params(SamplingParams(seed=11, max_tokens=40), run, base=5, index=0,
                            start_ban=(), rollback_on=True)
    assert (single.seed, single.max_tokens) == (11, 35)
