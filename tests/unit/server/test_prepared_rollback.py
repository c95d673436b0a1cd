"""Prepared rollback continuations (``server/rollback.py``), against a scripted engine.

While a logits-steered choice is inside an avoided form, the continuation its rollback
would start is submitted ahead of time. These tests drive a real :class:`_Chain` (real
tokenizer, real ban automaton and tracker) against a fake engine whose requests write
scripted token lists, one per simulated step, so that the order of submissions, aborts
and outputs can be checked: the prepared continuation is used when the rollback comes
and the answer is the same as without it; it is aborted when the text leaves the form;
it is never prepared without a free engine slot; its reservation is always released.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from types import SimpleNamespace

import pytest
from vllm.sampling_params import SamplingParams

from greyelephant.control.spec import parse_steering
from greyelephant.server.admission import Admission
from greyelephant.server.metrics import Metrics
from greyelephant.server.rollback import _Chain
from greyelephant.server.steering import ActivePlan

SIGNAL = 16
PROMPT = [1, 2, 3]
STEP_S = 0.002  # one simulated engine step


class ScriptedEngine:
    """``generate`` writes, for a prompt tail (the accepted tokens a request resumes from)
    and a start ban, the token list ``script`` gives, one output per step; a list ending
    with the signal finishes as the processor's rollback signal does. ``events`` records
    submissions (request id, tail length, start ban), outputs and aborts, in order."""

    def __init__(self, script, lag_steps: int = 0):
        self.script = script
        self.lag_steps = lag_steps  # steps before a request's first output
        self.events: list[tuple] = []

    async def generate(self, prompt, params, request_id, lora_request=None):
        tail = list(prompt["prompt_token_ids"][len(PROMPT):])
        ban = tuple(params.extra_args["steering"].get("start_ban") or ())
        self.events.append(("submit", request_id, len(tail), ban))
        tokens = self.script(tail, ban)
        finished = False
        try:
            await asyncio.sleep(self.lag_steps * STEP_S)
            for j, t in enumerate(tokens):
                await asyncio.sleep(STEP_S)
                last = j == len(tokens) - 1
                signalled = last and t == SIGNAL
                self.events.append(("output", request_id, t))
                finished = last  # closing the stream after its last output aborts nothing
                yield SimpleNamespace(outputs=[SimpleNamespace(
                    token_ids=[t], logprobs=None, text="" if t == SIGNAL else self.decode(t),
                    finish_reason=("stop" if signalled else "length") if last else None,
                    stop_reason=SIGNAL if signalled else None)])
        except (asyncio.CancelledError, GeneratorExit):
            if not finished:
                self.events.append(("abort", request_id))
            raise

    def submitted(self) -> list[tuple]:
        return [e for e in self.events if e[0] == "submit"]

    def aborted(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "abort"]


def make_chain(tokenizer, vocab_index, script, *, avoid=("Coca-Cola",), prepare=True,
               max_num_seqs=8, admitted=1, lag_steps=0):
    """A greedy, streamed choice avoiding ``avoid`` with rollback, on a scripted engine."""
    engine = ScriptedEngine(script, lag_steps)
    engine.decode = lambda t: tokenizer.decode([t])
    metrics = Metrics()
    admission = Admission(None, metrics, admitted=admitted)
    ctx = SimpleNamespace(
        engine=SimpleNamespace(signal_token=SIGNAL, vocab_index=vocab_index,
                               tokenizer=tokenizer, engine=engine, max_num_seqs=max_num_seqs),
        settings=SimpleNamespace(on_violation="error", prepared_rollbacks=prepare),
        metrics=metrics, admission=admission)
    spec = parse_steering({"avoid": list(avoid), "strategies": ["logits"]})
    run = ActivePlan._steered_run(spec, ctx)
    chain = _Chain(ctx, "chat", list(PROMPT), SamplingParams(max_tokens=40, temperature=0.0),
                   "req", None, run, 0, True)
    return chain, engine, admission


def run_chain(tokenizer, vocab_index, script, **kw):
    chain, engine, admission = make_chain(tokenizer, vocab_index, script, **kw)
    used = chain.ctx.metrics.prepared.labels("used")

    async def collect():
        return [d async for d in chain.run()]

    before = used._value.get()
    deltas = asyncio.run(collect())
    return SimpleNamespace(text="".join(d.text for d in deltas), engine=engine,
                           admission=admission, used=used._value.get() - before,
                           rollbacks=deltas[-1].rollbacks)


@pytest.fixture(scope="module")
def cola_script(tokenizer):
    """The model heads into "Coca-Cola" (the processor signals at "Cola"); after the
    rollback to " Coca", with its start banned, it writes " Pepsi" instead."""
    ids = tokenizer.encode("My favourite drink is Coca-Cola, always.")
    k = next(i for i, t in enumerate(ids) if tokenizer.decode([t]) == " Coca")
    done = next(i for i in range(len(ids)) if "Coca-Cola" in tokenizer.decode(ids[:i + 1]))
    after = tokenizer.encode(" Pepsi, always.")

    def script(tail, ban):
        if not tail and not ban:
            return ids[:done] + [SIGNAL]
        assert tail == ids[:k] and ban == (0,), (tail, ban)
        return after
    return script, tokenizer.decode(ids[:k] + after)


def test_the_prepared_continuation_is_used_and_the_answer_is_unchanged(
        tokenizer, vocab_index, cola_script):
    script, expected = cola_script
    on = run_chain(tokenizer, vocab_index, script)
    off = run_chain(tokenizer, vocab_index, script, prepare=False)
    assert on.text == off.text == expected
    assert on.rollbacks == off.rollbacks == 1
    assert on.used == 1 and off.used == 0
    # with it, the continuation was submitted before the first request's signal came out
    signal_at = on.engine.events.index(("output", "req", SIGNAL))
    cont = on.engine.submitted()[1]
    assert cont[2:] == (4, (0,)) and on.engine.events.index(cont) < signal_at
    # without it, only after
    cont_off = off.engine.submitted()[1]
    assert off.engine.events.index(cont_off) > off.engine.events.index(("output", "req", SIGNAL))
    assert len(on.engine.submitted()) == len(off.engine.submitted()) == 2
    assert on.engine.aborted() == [] and on.admission.prepared == 0


def test_a_form_the_text_leaves_aborts_its_prepared_continuation(tokenizer, vocab_index):
    ids = tokenizer.encode("My favourite drink is Coca tea, hot.")

    def script(tail, ban):
        # the first request; a continuation (prepared, never used) would write filler
        return ids if not tail and not ban else tokenizer.encode(" Pepsi" * 20)

    res = run_chain(tokenizer, vocab_index, script, lag_steps=1)
    assert res.text == tokenizer.decode(ids) and res.rollbacks == 0
    submitted = res.engine.submitted()
    assert len(submitted) == 2 and submitted[1][2:] == (4, (0,))  # prepared at " Coca"
    assert res.engine.aborted() == [submitted[1][1]]  # and aborted when " tea" left the form
    assert res.used == 0 and res.admission.prepared == 0


def test_a_word_that_only_starts_like_a_form_prepares_nothing(tokenizer, vocab_index):
    """" Co" begins Coca-Cola's form and "zy" leaves it: too short a start to prepare for
    (most words that begin a form are like it)."""
    ids = tokenizer.encode("A Cozy room, a Cozy bed.")
    assert tokenizer.decode(ids[1:2]) == " Co"

    def script(tail, ban):
        assert not tail and not ban, "only the first request is expected"
        return ids

    res = run_chain(tokenizer, vocab_index, script)
    assert res.text == tokenizer.decode(ids) and res.rollbacks == 0
    assert len(res.engine.submitted()) == 1 and res.used == 0


def test_nothing_is_prepared_without_a_free_engine_slot(tokenizer, vocab_index, cola_script):
    script, expected = cola_script
    full = run_chain(tokenizer, vocab_index, script, max_num_seqs=1, admitted=1)
    unknown = run_chain(tokenizer, vocab_index, script, max_num_seqs=None)
    for res in (full, unknown):
        assert res.text == expected and res.rollbacks == 1 and res.used == 0
        assert len(res.engine.submitted()) == 2 and res.admission.prepared == 0


def test_a_client_that_leaves_mid_form_aborts_both_requests(tokenizer, vocab_index,
                                                            cola_script):
    script, _ = cola_script
    chain, engine, admission = make_chain(tokenizer, vocab_index, script)

    async def leave_mid_form():
        async def consume():
            async with aclosing(chain.run()) as gen:
                async for _ in gen:
                    pass

        task = asyncio.create_task(consume())
        for _ in range(1000):  # until the continuation is prepared
            if len(engine.submitted()) == 2:
                break
            await asyncio.sleep(STEP_S / 4)
        task.cancel()  # the client went away while the text was inside the form
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(2 * STEP_S)  # the prepared request's task sees its cancel

    asyncio.run(asyncio.wait_for(leave_mid_form(), 30))
    assert len(engine.submitted()) == 2
    assert sorted(engine.aborted()) == ["req", "req-rb1"]
    assert admission.prepared == 0
