"""The runner-V2 adapter against fakes of vLLM's V2 interface (slots, device token
history, per-step layout), on the CPU: it steers exactly as the V1 adapter does, with
rows reordered every step, a rollback continuation's resumed prompt tail, and a request
resumed after preemption."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm")
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor.interface import (  # noqa: E402
    LogitsContext,
    LogitsProcRequestState,
)

from greyelephant.control import steering_batch  # noqa: E402
from greyelephant.control.logits_processor import SteeringLogitsProcessor  # noqa: E402
from greyelephant.control.logits_processor_v2 import (  # noqa: E402
    SteeringLogitsProcessorV2,
    steered_output,
)
from greyelephant.control.spec import parse_steering  # noqa: E402
from greyelephant.control.step_upload import StepUpload  # noqa: E402

SIGNAL = 16
MAX_LEN = 256


@dataclass
class Uva:
    np: np.ndarray


@dataclass
class Gpu:
    gpu: torch.Tensor


@dataclass
class ReqStates:
    device: torch.device
    max_num_reqs: int
    vocab_size: int
    all_token_ids: Gpu
    prompt_len: Uva
    prefill_len: Uva
    total_len: Gpu


@dataclass
class Ctx:
    idx_mapping_np: np.ndarray
    input_ids: torch.Tensor
    pos: torch.Tensor
    # per batch row: its fed token's position + 1 (vLLM's, exact without speculative
    # decoding); None: a context without it (the adapter then reads the positions back)
    seq_lens_upper_bound_np: np.ndarray | None = None


def params(steering: dict | None, **kw) -> SamplingParams:
    extra = None
    if steering is not None:
        es = parse_steering(steering).engine_steering(signal=SIGNAL)
        extra = {"steering": es.model_copy(update=kw).to_extra_args()}
    p = SamplingParams(temperature=0.0, max_tokens=200, stop_token_ids=[SIGNAL],
                       extra_args=extra)
    p._all_stop_token_ids.update({2, SIGNAL})
    return p


@pytest.fixture(params=[None, 1], ids=["lanes-default", "lanes-from-1-row"])
def lanes_from(request):
    """The batches' lane_min_rows: the default (from 64 rows: off in these small
    batches), or 1, so that the V2 adapter feeds the lanes their inputs (FedRows)."""
    return request.param


def _lanes_from(n, *adapters) -> None:
    if n is not None:
        for a in adapters:
            a.batch.lane_min_rows = n


# how the fake runner feeds the V2 adapter each step: "sync", positions on the device only
# (the adapter reads them back after a wait); "staged", as vLLM's runner V2 does: the
# previous step's tokens committed to the history and total_len (its post_update), then
# apply_staged_writes (the adapter's read before the forward pass), then apply with the
# host's positions; "stale", "unstaged": as "staged", but every third step the commit is
# missing (the read disagrees with the positions) or apply_staged_writes is not called
# (a dummy run's step): those steps fall back to the read after the wait
FEEDS = ("sync", "staged", "stale", "unstaged")


def _commit(states, slot: int, history: list[int]) -> None:
    """The fake runner's post_update: a slot's committed history and total_len."""
    states.all_token_ids.gpu[slot, :len(history)] = torch.tensor(history)
    states.total_len.gpu[slot] = len(history)


@pytest.mark.parametrize("device_form", [False, True], ids=["cpu-path", "device-form"])
@pytest.mark.parametrize("feed", FEEDS)
def test_v2_steers_like_v1(vocab_index, tokenizer, lanes_from, feed, device_form,
                           monkeypatch):
    """V2's adapter steers as V1's, however it learns its fed tokens (``FEEDS``); in the
    device form (a GPU's host path on the CPU: no id lists, one packed upload), the
    staged steps send the plan before the rollback check, as V1 does."""
    slots = 4
    # the history's and total_len's dtypes: vLLM's (int32) with "staged", mixed with
    # "stale", int64 otherwise
    history_dtype = torch.int32 if feed in ("staged", "stale") else torch.int64
    # "staged": vLLM's own dataclasses for the request states and the step's context (their
    # buffers faked: vLLM's need a GPU), so that the fields the adapter reads are theirs
    states_class = LogitsProcRequestState if feed == "staged" else ReqStates
    states = states_class(torch.device("cpu"), slots, vocab_index.vocab_size,
                       Gpu(torch.zeros(slots, MAX_LEN, dtype=history_dtype)),
                       Uva(np.zeros(slots, dtype=np.int32)), Uva(np.zeros(slots, dtype=np.int32)),
                       Gpu(torch.zeros(slots, dtype=torch.int32 if feed == "staged"
                                       else torch.int64)))
    v2 = SteeringLogitsProcessorV2(None, states, index=vocab_index)
    v1 = SteeringLogitsProcessor(None, torch.device("cpu"), False, index=vocab_index)
    _lanes_from(lanes_from, v1, v2)
    if device_form:  # (and numpy "cannot read" the logits, as on a GPU)
        v2.batch.sparse_ids = False
        v2.batch._upload = StepUpload("cpu", pack=True)
        monkeypatch.setattr(steering_batch, "_numpy_view", lambda t: None)
    # (until a read staged before the forward pass serves a step, V2's adapter reads its
    # fed tokens back after a wait: no plan before the check)
    assert v1.batch.early_upload and not v2.batch.early_upload
    steer = {"avoid": [{"entity": "Coca-Cola", "aliases": ["Coke"]}, "Nike"],
             "prefer": ["Pepsi"]}
    resumed = tokenizer.encode(" The best drink is")
    prompts = {0: tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n"),
               2: tokenizer.encode("<|im_start|>user\nshoes<|im_end|>\n") + resumed,
               3: tokenizer.encode("<|im_start|>user\nx<|im_end|>\n")}
    reqs = {0: params(steer), 2: params(steer, resume=len(resumed), start_ban=(0,)),
            3: params(None)}
    # a request resumed after preemption: slot 1 already has two output tokens
    early = tokenizer.encode(" Coke")
    prompts[1] = tokenizer.encode("<|im_start|>user\ncola<|im_end|>\n")
    reqs[1] = params(steer)
    v1_outs = {}
    for slot, prompt in prompts.items():
        history = prompt + (early if slot == 1 else [])
        _commit(states, slot, history)
        states.prompt_len.np[slot] = len(prompt)
        states.prefill_len.np[slot] = len(history)
        assert v2.add_request(slot, reqs[slot]) == (reqs[slot].extra_args is not None)
        v1_outs[slot] = list(early) if slot == 1 else []
    v2.apply_staged_writes()
    assert steered_output(v2, 1) == early
    # V1 rows in slot order, live output lists; V2 sees the rows reordered every step
    v1.update_state(BatchUpdate(batch_size=slots, removed=[], moved=[], added=[
        (slot, reqs[slot], prompts[slot], v1_outs[slot]) for slot in range(slots)]))
    text = tokenizer.encode(" Coca-Cola and Nike, a Coke, then Pepsi and the Louvre")
    coca, whole = tokenizer.encode(" Coca")[0], tokenizer.encode(" Coke")[0]
    rng = np.random.default_rng(0)
    staged = []  # the steps a staged read served
    for step in range(len(text)):
        order = rng.permutation(slots)
        fed = [v1_outs[int(s)][-1] if v1_outs[int(s)] else prompts[int(s)][-1] for s in order]
        pos = [len(prompts[int(s)]) + len(v1_outs[int(s)]) - 1 for s in order]
        odd = step % 3 == 2  # (this step's commit is missing, or its staging)
        if feed != "sync" and step and not (odd and feed == "stale"):
            for slot in range(slots):
                _commit(states, slot, prompts[slot] + v1_outs[slot])
        if step and feed != "sync" and not (odd and feed == "unstaged"):
            v2.apply_staged_writes()
        seq_lens = None if feed == "sync" else np.array(pos, dtype=np.int32) + 1
        logits = torch.randn(slots, vocab_index.vocab_size,
                             generator=torch.Generator().manual_seed(step))
        if step >= len(text) // 2:  # (the first half: the rows on their lanes)
            logits[0, coca] += 3.0  # slot 0's model heads into the name: checks, a signal
            if step % 3 == 1:  # slot 2's: a whole form in one token (anticipated bans)
                logits[2, whole] += 6.0
        before = v2.staged_steps
        if feed == "staged":
            slot_rows = torch.as_tensor(order, dtype=torch.int32)
            ctx = LogitsContext(expanded_idx_mapping=slot_rows, idx_mapping=slot_rows,
                                idx_mapping_np=order.astype(np.int32),
                                expanded_local_pos=torch.zeros(slots, dtype=torch.int32),
                                input_ids=torch.tensor(fed, dtype=torch.int32),
                                pos=torch.tensor(pos, dtype=torch.int64),
                                seq_lens_upper_bound_np=seq_lens)
        else:
            ctx = Ctx(order.astype(np.int64), torch.tensor(fed), torch.tensor(pos), seq_lens)
        a = v2.apply(logits[torch.as_tensor(order)].clone(), ctx)
        b = v1.apply(logits.clone())
        assert torch.equal(a, b[torch.as_tensor(order)]), step
        if v2.staged_steps > before:
            staged.append(step)
        assert v2.batch.early_upload == (v2.staged_steps > before)
        for slot in range(slots):
            v1_outs[slot].append(text[(step + slot) % len(text)])
    for slot in (0, 1, 2):
        assert steered_output(v2, slot) == v1_outs[slot][:-1]  # the last one was not fed yet
    # every step but the odd ones (with "sync": none) planned before the check's wait
    expect = {"sync": [], "staged": list(range(len(text)))}.get(
        feed, [s for s in range(len(text)) if s % 3 != 2])
    assert staged == expect
    assert v2.batch.signals > 0 and v2.batch.anticipated > 0
    if lanes_from is not None:  # the lanes ran on what the adapter fed them
        assert v2.batch.fast_rows > 0 and v2.batch.fast_rows == v1.batch.fast_rows
    # the counters /metrics reads (memory only here): both adapters' steps as they ran
    published, v1_published = v2.stats.as_dict(), v1.stats.as_dict()
    assert published["steps"] == len(text) == v1_published["steps"]
    assert published["row_steps"] == len(text) * 3 == v1_published["row_steps"]
    assert published["rollback_signals"] == v2.batch.signals == v1_published["rollback_signals"]
    assert published["fast_row_steps"] == v1_published["fast_row_steps"]
    assert published["v2_staged_steps"] == len(staged)
    assert published["v2_read_back_steps"] == len(text) - len(staged)
    assert v1_published["v2_staged_steps"] == v1_published["v2_read_back_steps"] == 0



def _v2_with_slots(vocab_index, tokenizer, slots: int, steer: dict):
    """A V2 adapter (and a V1 one) with ``slots`` steered requests, none decoded yet."""
    states = ReqStates(torch.device("cpu"), slots, vocab_index.vocab_size,
                       Gpu(torch.zeros(slots, MAX_LEN, dtype=torch.int64)),
                       Uva(np.zeros(slots, dtype=np.int64)), Uva(np.zeros(slots, dtype=np.int64)),
                       Gpu(torch.zeros(slots, dtype=torch.int64)))
    v2 = SteeringLogitsProcessorV2(None, states, index=vocab_index)
    v1 = SteeringLogitsProcessor(None, torch.device("cpu"), False, index=vocab_index)
    prompts = {s: tokenizer.encode(f"<|im_start|>user\nq{s}<|im_end|>\n") for s in range(slots)}
    reqs = {s: params(steer) for s in range(slots)}
    v1_outs: dict[int, list[int]] = {s: [] for s in range(slots)}
    for slot, prompt in prompts.items():
        states.all_token_ids.gpu[slot, :len(prompt)] = torch.tensor(prompt)
        states.prompt_len.np[slot] = len(prompt)
        states.prefill_len.np[slot] = len(prompt)
        assert v2.add_request(slot, reqs[slot])
    v2.apply_staged_writes()
    v1.update_state(BatchUpdate(batch_size=slots, removed=[], moved=[], added=[
        (slot, reqs[slot], prompts[slot], v1_outs[slot]) for slot in range(slots)]))
    return v2, v1, prompts, v1_outs


def test_v2_with_every_row_steered_reads_the_fed_tokens_in_place(vocab_index, tokenizer,
                                                                 lanes_from):
    """Every row steered (the rows' tokens sliced, not gathered, from input buffers longer
    than the batch), rows reordered every step, loop guards on: the logits stay V1's."""
    steer = {"avoid": [{"entity": "Coca-Cola", "aliases": ["Coke"]}, "Nike"],
             "prefer": ["Pepsi"], "no_repeat_ngram": 3}
    slots = 3
    v2, v1, prompts, v1_outs = _v2_with_slots(vocab_index, tokenizer, slots, steer)
    _lanes_from(lanes_from, v1, v2)
    text = tokenizer.encode(" Coca-Cola and Nike, the cat sat on the mat, the cat sat on the"
                            " mat, a Coke")
    rng = np.random.default_rng(1)
    for step in range(len(text)):
        order = rng.permutation(slots)
        fed = [v1_outs[s][-1] if v1_outs[s] else prompts[s][-1] for s in order.tolist()]
        pos = [len(prompts[s]) + len(v1_outs[s]) - 1 for s in order.tolist()]
        logits = torch.randn(slots, vocab_index.vocab_size,
                             generator=torch.Generator().manual_seed(step))
        a = v2.apply(logits[torch.as_tensor(order)].clone(),
                     Ctx(order.astype(np.int64), torch.tensor(fed + [7, 7]),
                         torch.tensor(pos + [0, 0])))
        b = v1.apply(logits.clone())
        assert torch.equal(a, b[torch.as_tensor(order)]), step
        for slot in range(slots):
            v1_outs[slot].append(text[(step + 2 * slot) % len(text)])
    for slot in range(slots):
        assert steered_output(v2, slot) == v1_outs[slot][:-1]
    if lanes_from is not None:
        assert v2.batch.fast_rows > 0 and v2.batch.fast_rows == v1.batch.fast_rows


def test_v2_appends_only_the_rows_whose_position_moved_on(vocab_index, tokenizer):
    """A step where one row's fed token is its output's next and another's is not (a
    token it already has, fed again): only the first output grows."""
    v2, _, prompts, _ = _v2_with_slots(vocab_index, tokenizer, 2, {"avoid": ["Nike"]})
    logits = torch.zeros(2, vocab_index.vocab_size)
    start = [len(prompts[s]) for s in (0, 1)]
    v2.apply(logits.clone(), Ctx(np.array([0, 1]), torch.tensor([11, 12]),
                                 torch.tensor([start[0], start[1]])))
    assert steered_output(v2, 0) == [11] and steered_output(v2, 1) == [12]
    v2.apply(logits.clone(), Ctx(np.array([1, 0]), torch.tensor([13, 11]),
                                 torch.tensor([start[1] + 1, start[0]])))
    assert steered_output(v2, 0) == [11] and steered_output(v2, 1) == [12, 13]


def test_v2_reads_after_the_wait_once_the_staged_read_fails(vocab_index, tokenizer, caplog):
    """A staged read that raises (e.g. no page-locked memory) is logged once and given up:
    every step then reads its fed tokens back after the wait, and steers as before."""
    v2, _, prompts, _ = _v2_with_slots(vocab_index, tokenizer, 2, {"avoid": ["Nike"]})

    def broken(*args):
        raise RuntimeError("no pinned memory")

    v2._reader.start = broken
    start = [len(prompts[s]) for s in (0, 1)]
    with caplog.at_level("WARNING", logger="greyelephant.control"):
        for step in range(3):
            v2.apply_staged_writes()
            seq_lens = np.array([start[0] + step, start[1] + step], dtype=np.int32)
            v2.apply(torch.zeros(2, vocab_index.vocab_size),
                     Ctx(np.array([0, 1]), torch.tensor([11 + step, 21 + step]),
                         torch.tensor([start[0] + step - 1, start[1] + step - 1]), seq_lens))
    assert v2._reader is None and v2.staged_steps == 0
    assert sum("cannot be read before the forward pass" in r.message
               for r in caplog.records) == 1
    assert steered_output(v2, 0) == [12, 13] and steered_output(v2, 1) == [22, 23]
