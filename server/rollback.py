"""Rollback decoding: one logits-steered choice as a chain of engine requests.

The logits processor never lets a row finish an avoided form. With rollback on, it also
watches for the row *heading into* one — inside a form, the model's own choice is banned
— and then, instead of masking (which makes a small model bend the name into a look-alike
such as "Coca-Coloca"), forces the row's rollback signal, a stop token of the request.
This module is the other half: it sees that stop, rewinds the choice to the token where
the form began (:class:`greyelephant.control.rollback.RollbackTracker`), and continues
with a new engine request whose prompt is the original prompt plus the accepted token ids
(so the prefix cache serves it and the tokenization is the model's own), and whose first
step bans every token that begins a form of that entity there. After ``max_rollbacks``
rollbacks a choice continues with the mask alone.

A rollback costs the choice the steps of the rolled-back tokens, the signal's, and the
continuation's way back into the batch. So while a choice is inside a form, the
continuation its rollback would start — same prompt, same start ban, same parameters — is
*prepared*: submitted at once and buffered (:class:`_Prepared`). If the rollback comes,
the choice goes on with it, its first tokens often already there; if the text leaves the
form instead (an innocent "Romeo"), or the choice ends, it is aborted. It is used only when
it is exactly the request the rollback would submit, so the output is the same as without
it. It is prepared only while the engine has free sequence slots
(:meth:`.admission.Admission.reserve_prepared`); ``--no-prepared-rollbacks`` turns it off.

What the client sees is the shape of an unsteered response:

* text and token ids are the accepted ones: rolled-back tokens are counted in the
  steering report (``rollbacks``, ``rolled_back_tokens``), not in ``usage``;
* streaming sends only text that can no longer be rolled back: the tokens of a partly
  written form are held back until the text leaves the form (so a stream never shows a
  rolled-back token, nor a mention if the client disconnects mid-form);
* ``finish_reason``/``stop_reason`` are those of the last engine request; stop strings are
  matched by this module over the whole accepted text (vLLM's own matching would not see
  a stop string that spans a rollback boundary), with vLLM's semantics;
* logprobs are those of the accepted tokens;
* ``min_tokens`` counts accepted tokens (the processor enforces it, see
  :mod:`greyelephant.control.engine_args`), presence and frequency penalties count the
  accepted tokens (rebuilt by the processor for the resumed ones), repetition penalty
  counts prompt + accepted tokens (vLLM's, over the continuation's prompt);
* a seeded choice is reproducible: each continuation samples with the choice's seed;
* with ``n > 1`` every choice is its own chain (choice ``i`` samples with ``seed + i``, as
  vLLM's own parallel sampling does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from vllm.sampling_params import RequestOutputKind, SamplingParams

from greyelephant.control.ban_automaton import CompiledSteering
from greyelephant.control.detector import Detector
from greyelephant.control.engine_args import EngineSteering
from greyelephant.control.rollback import RollbackTracker

from .context import ServerContext
from .generation import Delta, steering_failed, stream_outputs

logger = logging.getLogger("greyelephant.server")

# A continuation is prepared once the live form is this far along (either): most words
# that begin a form leave it at their first token with one to three of its characters
# (" a" under Amazon, " Co" + "zy" under Coca-Cola), and preparing for each of them would
# add an engine request to almost every word (docs/steering.md, "Prepared continuations")
PREPARE_AFTER_TOKENS = 2
PREPARE_AFTER_CHARS = 4


@dataclass(frozen=True)
class SteeredRun:
    """How the choices of one logits-steered generation run."""

    engine: EngineSteering  # the engine form, rollback signal included when it is on
    compiled: CompiledSteering  # the same spec, compiled in this process for the tracker
    max_rollbacks: int
    detector: Detector | None = None  # near misses of the avoided entities
    group_of: dict[str, int] = field(default_factory=dict)  # entity → avoid group index

    @property
    def signal(self) -> int | None:
        return self.engine.signal


async def steered_choices(ctx: ServerContext, route: str, prompt_ids: list[int],
                          params: SamplingParams, request_id: str, lora, run: SteeredRun,
                          *, stream: bool = False) -> AsyncIterator[Delta]:
    """The deltas of every choice of ``params.n``, each run by :func:`steered_choice`,
    interleaved as they come."""
    n = params.n
    gens = [steered_choice(ctx, route, prompt_ids, params, request_id if n == 1
                           else f"{request_id}-c{i}", lora, run, index=i, stream=stream)
            for i in range(n)]
    if n == 1:
        async for d in gens[0]:
            yield d
        return
    async for d in _merge(gens):
        yield d


async def steered_choice(ctx: ServerContext, route: str, prompt_ids: list[int],
                         params: SamplingParams, request_id: str, lora, run: SteeredRun,
                         *, index: int = 0, stream: bool = False) -> AsyncIterator[Delta]:
    """One choice with rollback. Yields committed deltas (only when ``stream``) and a
    last delta with the finish reason and the choice's rollback counts."""
    chain = _Chain(ctx, route, prompt_ids, params, request_id, lora, run, index, stream)
    async for d in chain.run():
        yield d


class _Chain:
    """The engine requests of one choice: the first, then one per rollback."""

    def __init__(self, ctx, route, prompt_ids, params, request_id, lora, run, index, stream):
        self.ctx, self.route, self.prompt_ids, self.lora = ctx, route, prompt_ids, lora
        self.params, self.request_id, self.run_, self.index = params, request_id, run, index
        self.stream = stream
        self.state = _ChoiceState(run, params)
        self.tracker = RollbackTracker(run.compiled)
        self.stops = ([params.stop] if isinstance(params.stop, str)
                      else list(params.stop or []))
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.start_bans: dict[int, set[int]] = {}
        self.finish: tuple[str, int | str | None, bool] | None = None
        self.rollback_to: tuple[int, frozenset[int]] | None = None
        self.prepare = bool(getattr(ctx.settings, "prepared_rollbacks", False))
        self.prepared: _Prepared | None = None  # the live form's continuation, running
        self.adopted: _Prepared | None = None  # the continuation the next request is

    async def run(self) -> AsyncIterator[Delta]:
        try:
            async for d in self._run():
                yield d
        finally:
            self._drop_prepared()
            if self.adopted is not None:
                self.adopted.close()

    async def _run(self) -> AsyncIterator[Delta]:
        state, tracker, run = self.state, self.tracker, self.run_
        while True:
            rollback_on = state.rollbacks < run.max_rollbacks
            self.rollback_to = None
            async for d in self._request(rollback_on):
                yield d
            if self.rollback_to is None:
                if self.finish is None:
                    return  # the engine stream ended without a finish (aborted by the server)
                reason, stop_reason, signalled = self.finish
                if signalled:  # the processor saw the row heading into a form
                    self.rollback_to = (tracker.live_start(), tracker.live_groups())
                else:
                    self.rollback_to = self._judge(final=True)
                    if self.rollback_to is None:
                        yield state.finish(reason, stop_reason, self.index)
                        return
            k, groups = self.rollback_to
            if not rollback_on:
                raise steering_failed()
            if k >= len(state.tokens) or k < state.emitted_tokens:
                # A signal with nothing this process can roll back to (no live form here,
                # or one that began in text already sent). Every accepted token was masked,
                # so continue from all of them with no start ban: a row whose spec failed in
                # the engine signals again at once, spends the rollback budget and fails
                # closed above; the final text is still checked by the detector.
                logger.warning("request %s choice %d: rollback signal with no form to roll "
                               "back to here (form start %d, %d tokens, %d sent); continuing "
                               "from the accepted tokens", self.request_id, self.index, k,
                               len(state.tokens), state.emitted_tokens)
                k, groups = len(state.tokens), frozenset()
            self.start_bans.setdefault(k, set()).update(groups)
            self._adopt_prepared((k, frozenset(self.start_bans[k]),
                                  state.rollbacks + 1 < run.max_rollbacks))
            state.rollback(k, self.ctx.engine.tokenizer, self.params.skip_special_tokens)
            tracker.truncate(k)

    def _judge(self, final: bool) -> tuple[int, frozenset[int]] | None:
        """Near misses the model wrote on its own ("Schwarzeneggar" with no ban in the way):
        text that began an avoided form and left it is held back until the word that left
        it is complete, then judged by the detector's near-miss mode, each left form on its
        own; a near miss is rolled back to where its form began, like a signal. Returns
        (token, entity groups) of the first near miss, else None."""
        tracker, state, run = self.tracker, self.state, self.run_
        if run.detector is None:
            return None
        starts = tracker.take_judgeable(final)
        if not starts or state.rollbacks >= run.max_rollbacks:
            return None
        tok, skip = self.ctx.engine.tokenizer, self.params.skip_special_tokens
        # a near miss may run into the next word ("château de |Château"), so each window
        # runs to the end of the text; only the near misses that begin in the judged form
        # count: before the next form start, judged now or later (a live form's partial
        # name is not a word yet, a pending one's word is not complete)
        bounds = sorted(set(starts) | set(tracker.form_starts()) | {len(state.tokens)})
        offset = {k: state.text_offset(k, tok, skip) for k in bounds}
        for k in starts:
            nxt = offset[bounds[bounds.index(k) + 1]] if k < bounds[-1] else offset[k]
            if k < state.emitted_tokens or offset[k] >= nxt:
                continue
            near = [m for m in run.detector.near_misses(state.text[offset[k]:])
                    if offset[k] + m.start < nxt]  # the near misses that begin in this form
            groups = frozenset(run.group_of[m.entity] for m in near if m.entity in run.group_of)
            if groups:
                return k, groups
        return None

    def held_from(self) -> int:
        """Tokens before this index may be sent: no partly written form nor a left form
        still to be judged after them."""
        return min(self.tracker.live_start(), self.tracker.unjudged_start(),
                   len(self.state.tokens))

    async def _request(self, rollback_on: bool) -> AsyncIterator[Delta]:
        """One engine request from the accepted tokens on; sets ``self.finish``, or
        ``self.rollback_to`` when a near miss is judged mid-stream."""
        state, tracker, signal = self.state, self.tracker, self.run_.signal
        base = len(state.tokens)
        self.finish = None
        if self.adopted is not None:  # prepared for this very rollback: already running
            outs, self.adopted = self.adopted.outputs(), None
        else:
            outs = self._submit(base, frozenset(self.start_bans.get(base, ())), rollback_on)
        async with aclosing(outs):
            async for out in outs:
                o = out.outputs[0]
                ids, lps = list(o.token_ids), list(o.logprobs or [])
                signalled = (o.finish_reason == "stop" and signal is not None
                             and o.stop_reason == signal)
                if signalled:  # the signal token is not part of the text
                    ids, lps = ids[:-1], lps[:len(ids) - 1]
                prev = len(state.text)
                state.add(ids, lps, o.text)
                tracker.push(ids)
                stop = _find_stop(state.text, len(state.text) - prev, self.stops,
                                  self.params.include_stop_str_in_output)
                if stop is not None:
                    state.cut_text(stop[1])
                    self.finish = ("stop", stop[0], False)
                    return  # leaving the block closes the stream: vLLM aborts the request
                if o.finish_reason is not None:
                    self.finish = (o.finish_reason, o.stop_reason, signalled)
                    return
                self.rollback_to = self._judge(final=False)
                if self.rollback_to is not None:
                    return  # closing the stream aborts the engine request
                if self.prepare and rollback_on:
                    self._keep_prepared()
                if self.stream:
                    for d in state.commit(self.held_from(), self.hold, self.index):
                        yield d


    def _submit(self, base: int, start_ban: frozenset[int], rollback_on: bool
                ) -> AsyncIterator:
        """The engine request that continues the choice after its first ``base`` accepted
        tokens (its outputs; submitted when first iterated)."""
        state = self.state
        p = _engine_params(self.params, self.run_, base=base, index=self.index,
                           start_ban=start_ban, rollback_on=rollback_on)
        sub_id = self.request_id if not state.requests else f"{self.request_id}-rb{state.requests}"
        state.requests += 1
        return stream_outputs(self.ctx, self.route, self.prompt_ids + state.tokens[:base], p,
                              sub_id, self.lora)

    def _keep_prepared(self) -> None:
        """Keep the prepared continuation in step with the live form: the one a rollback
        would submit now (return to the form's start, ban the starts of its entities
        there), or none when the text is inside no form that can still be rolled back or
        the form is not far enough along yet (:data:`PREPARE_AFTER_TOKENS`,
        :data:`PREPARE_AFTER_CHARS`)."""
        tracker, state = self.tracker, self.state
        key = None
        if tracker.inside_form():
            k = tracker.live_start()
            far = (len(state.tokens) - k >= PREPARE_AFTER_TOKENS
                   or tracker.live_chars() >= PREPARE_AFTER_CHARS)
            if far and state.emitted_tokens <= k < len(state.tokens):
                ban = frozenset(self.start_bans.get(k, set()) | tracker.live_groups())
                key = (k, ban, state.rollbacks + 1 < self.run_.max_rollbacks)
        if self.prepared is not None and self.prepared.key == key:
            return
        self._drop_prepared()
        if key is None:
            return
        admission = self.ctx.admission
        if not admission.reserve_prepared(self.ctx.engine.max_num_seqs):
            return
        k, ban, rollback_on = key
        self.prepared = _Prepared(key, self._submit(k, ban, rollback_on),
                                  admission.release_prepared)

    def _drop_prepared(self) -> None:
        if self.prepared is not None:
            self.prepared.close()
            self.ctx.metrics.prepared.labels("discarded").inc()
            self.prepared = None

    def _adopt_prepared(self, key: tuple[int, frozenset[int], bool]) -> None:
        """The rollback to ``key`` (form start, start ban, rollback on) is decided: its
        prepared continuation becomes the next request when it is exactly that one."""
        if self.prepared is not None and self.prepared.key == key:
            self.adopted, self.prepared = self.prepared, None
            self.ctx.metrics.prepared.labels("used").inc()
        self._drop_prepared()


class _Prepared:
    """An engine request submitted ahead of the rollback that would start it: a task
    reads its outputs into a buffer from the start; :meth:`outputs` replays them and goes
    on live. Closing it (or its :meth:`outputs`) aborts the engine request."""

    def __init__(self, key: tuple, outs: AsyncIterator, release) -> None:
        self.key = key
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(outs))
        # a done callback runs even when the task is cancelled before it starts
        self._task.add_done_callback(lambda _: release())

    async def _pump(self, outs: AsyncIterator) -> None:
        try:
            async with aclosing(outs):
                async for out in outs:
                    self._queue.put_nowait(out)
        except Exception as exc:  # noqa: BLE001 - re-raised by outputs() if it is used
            self._queue.put_nowait(exc)
        finally:
            self._queue.put_nowait(_DONE)

    async def outputs(self) -> AsyncIterator:
        try:
            while True:
                item = await self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._task.cancel()  # cancelling the stream aborts its engine request


_DONE = object()


class _ChoiceState:
    """Accepted tokens, text and logprobs of one choice, with delta boundaries."""

    def __init__(self, run: SteeredRun, params: SamplingParams):
        self.run = run
        self.tokens: list[int] = []
        self.logprobs: list = []
        self.text = ""
        self.marks: list[tuple[int, int]] = [(0, 0)]  # (tokens, text length) per delta
        self.emitted_tokens = 0
        self.emitted_text = 0
        self.rollbacks = 0
        self.rolled_back_tokens = 0
        self.requests = 0
        self.want_logprobs = params.logprobs is not None

    def add(self, ids: list[int], lps: list, text: str) -> None:
        self.tokens += ids
        if self.want_logprobs:
            self.logprobs += lps
        self.text += text
        self.marks.append((len(self.tokens), len(self.text)))

    def cut_text(self, length: int) -> None:
        """A stop string ended the text at ``length`` characters."""
        self.text = self.text[:length]

    def commit(self, safe_tokens: int, hold: int, index: int) -> list[Delta]:
        """Deltas for the tokens up to the last delta boundary that is safe: before
        ``safe_tokens`` (no partly written form after it) and at least ``hold`` characters
        before the end (a stop string may still complete there)."""
        limit = len(self.text) - hold
        best = None
        for t, n in reversed(self.marks):
            if t <= safe_tokens and n <= limit:
                best = (t, n)
                break
        if best is None or best[0] <= self.emitted_tokens:
            return []
        return [self._delta(best[0], best[1], index)]

    def _delta(self, t: int, n: int, index: int, finish=None, stop=None) -> Delta:
        d = Delta(index=index, text=self.text[self.emitted_text:n],
                  token_ids=self.tokens[self.emitted_tokens:t],
                  logprobs=self.logprobs[self.emitted_tokens:t] if self.want_logprobs else None,
                  finish_reason=finish, stop_reason=stop)
        self.emitted_tokens, self.emitted_text = t, n
        return d

    def rollback(self, k: int, tokenizer, skip_special_tokens: bool) -> None:
        self.rollbacks += 1
        self.rolled_back_tokens += len(self.tokens) - k
        self.text = self._text_upto(k, tokenizer, skip_special_tokens)
        del self.tokens[k:]
        del self.logprobs[k:]
        self.marks = [m for m in self.marks if m[0] < k] + [(k, len(self.text))]

    def text_offset(self, k: int, tokenizer, skip_special_tokens: bool) -> int:
        """Length of the text of the first ``k`` tokens."""
        for t, n in self.marks:
            if t == k:
                return n
        return len(self._text_upto(k, tokenizer, skip_special_tokens))

    def _text_upto(self, k: int, tokenizer, skip_special_tokens: bool) -> str:
        """The text of the first ``k`` tokens: the engine's own at a delta boundary, else
        decoded (the engine coalesced several steps into one delta)."""
        for t, n in self.marks:
            if t == k:
                return self.text[:n]
        t0, n0 = max(m for m in self.marks if m[0] <= k)
        full = tokenizer.decode(self.tokens[:k], skip_special_tokens=skip_special_tokens)
        if full.startswith(self.text[:n0]):
            return full
        return self.text[:n0] + tokenizer.decode(self.tokens[t0:k],
                                                 skip_special_tokens=skip_special_tokens)

    def finish(self, reason: str, stop_reason, index: int) -> Delta:
        d = self._delta(len(self.tokens), len(self.text), index, reason, stop_reason)
        d.rollbacks = self.rollbacks
        d.rolled_back_tokens = self.rolled_back_tokens
        return d


def _engine_params(params: SamplingParams, run: SteeredRun, *, base: int, index: int,
                   start_ban: Sequence[int], rollback_on: bool) -> SamplingParams:
    """The engine request that continues a choice after ``base`` accepted tokens."""
    p = params.clone()
    p.n = 1
    p.max_tokens = (params.max_tokens or 0) - base if params.max_tokens is not None else None
    p.min_tokens = 0  # enforced by the processor (it must not swallow the signal)
    p.stop = []  # matched here, over the whole accepted text
    p.output_kind = RequestOutputKind.DELTA
    if base:
        p.prompt_logprobs = None
    if params.seed is not None and params.n > 1:
        p.seed = params.seed + index
    engine = run.engine.model_copy(update={
        "resume": base,
        "start_ban": tuple(sorted(start_ban)),
        "min_tokens": max(0, params.min_tokens - base),
        "rollback_mass": run.engine.rollback_mass if rollback_on else None,
    })
    p.extra_args = {**(params.extra_args or {}), "steering": engine.to_extra_args()}
    if run.signal is not None and run.signal not in (p.stop_token_ids or []):
        p.stop_token_ids = [*(p.stop_token_ids or []), run.signal]
        p.all_stop_token_ids.add(run.signal)  # the clone's own set (a deep copy)
    return p


def _find_stop(text: str, new_chars: int, stops: list[str], include: bool
               ) -> tuple[str, int] | None:
    """vLLM's stop-string rule over the accepted text: the stop string that completes
    earliest among the new characters; returns (stop string, text length to keep)."""
    best = None
    for s in stops:
        i = text.find(s, max(0, len(text) - new_chars - len(s) + 1))
        if i >= 0 and (best is None or i + len(s) < best[1] + len(best[0])):
            best = (s, i)
    if best is None:
        return None
    s, i = best
    return s, i + len(s) if include else i


async def _merge(gens: list[AsyncIterator[Delta]]) -> AsyncIterator[Delta]:
    """Interleave async iterators as their items come; cancels the rest on exit."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(g):
        try:
            async for item in g:
                await queue.put(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            await queue.put(exc)
        finally:
            await queue.put(done)

    tasks = [asyncio.create_task(pump(g)) for g in gens]
    try:
        left = len(tasks)
        while left:
            item = await queue.get()
            if item is done:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
