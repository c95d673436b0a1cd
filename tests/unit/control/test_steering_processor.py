"""SteeringLogitsProcessor without an engine: batch bookkeeping, placeholders, ban + bias."""

from __future__ import annotations

import pytest
import torch

vllm = pytest.importorskip("vllm")
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from greyelephant.control.engine_args import EngineSteering  # noqa: E402
from greyelephant.control.logits_processor import SteeringLogitsProcessor  # noqa: E402
from greyelephant.control.spec import parse_steering  # noqa: E402


@pytest.fixture()
def proc(vocab_index):
    return SteeringLogitsProcessor(None, torch.device("cpu"), False, index=vocab_index)


def params(steering: dict | None) -> SamplingParams:
    if steering is None:
        return SamplingParams()
    return SamplingParams(extra_args={"steering": parse_steering(steering).engine_args()})


def update(b, added=(), removed=(), moved=()):
    return BatchUpdate(batch_size=b, removed=list(removed), added=list(added), moved=list(moved))


def test_unsteered_rows_cost_nothing(proc):
    proc.update_state(update(2, added=[(0, params(None), [1], []), (1, params(None), [1], [])]))
    logits = torch.randn(2, proc.index.vocab_size)
    before = logits.clone()
    assert proc.apply(logits) is logits and torch.equal(logits, before)
    assert proc.rows == {}


def test_ban_and_bias_on_steered_rows_only(proc, tokenizer):
    out0: list[int] = []
    proc.update_state(update(3, added=[
        (0, params(None), [1], []),
        (1, params({"avoid": ["Nike"], "prefer": ["Adidas"]}), [1], out0),
        (2, params(None), [1], []),
    ]))
    v = proc.index.vocab_size
    nike = tokenizer.encode(" Nike")
    assert len(nike) == 1
    logits = torch.zeros(3, v)
    proc.apply(logits)
    assert logits[1, nike[0]] == float("-inf")
    assert torch.equal(logits[0], torch.zeros(v)) and torch.equal(logits[2], torch.zeros(v))
    boosted = (logits[1] > 0).nonzero().flatten().tolist()
    # " Ad"+"idas": no token of >= 4 characters starts Adidas, so its longest start is boosted
    assert boosted and all(tokenizer.decode([t]).strip().lower().startswith("ad") for t in boosted)
    # the live output list grows (with an async placeholder at the end): state follows
    out0.extend(tokenizer.encode(" Ni") + [-1])
    logits = torch.zeros(3, v)
    proc.apply(logits)
    ke = tokenizer.encode("ke")[0]
    assert logits[1, ke] == float("-inf") and logits[0, ke] == 0
    assert proc.rows[1].consumed == len(out0) - 1


def test_moves_swaps_and_removals(proc, tokenizer):
    a, b = [], []
    proc.update_state(update(2, added=[(0, params({"avoid": ["Nike"]}), [1], a),
                                       (1, params({"avoid": ["Tesla"]}), [1], b)]))
    proc.update_state(update(2, moved=[(0, 1, MoveDirectionality.SWAP)]))
    v = proc.index.vocab_size
    logits = torch.zeros(2, v)
    proc.apply(logits)
    nike, tesla = tokenizer.encode(" Nike")[0], tokenizer.encode(" Tesla")[0]
    assert logits[1, nike] == float("-inf") and logits[0, tesla] == float("-inf")
    assert logits[0, nike] == 0 and logits[1, tesla] == 0
    proc.update_state(update(1, removed=[0], moved=[(1, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    assert set(proc.rows) == {0}
    logits = torch.zeros(1, v)
    proc.apply(logits)
    assert logits[0, nike] == float("-inf")
    # a request re-added (e.g. after preemption) replays its existing output tokens
    done = tokenizer.encode(" the Ni")
    proc.update_state(update(1, added=[(0, params({"avoid": ["Nike"]}), [1], done)]))
    logits = torch.zeros(1, v)
    proc.apply(logits)
    assert logits[0, tokenizer.encode("ke")[0]] == float("-inf")


def test_validate_params():
    SteeringLogitsProcessor.validate_params(params({"avoid": ["Nike"]}))
    SteeringLogitsProcessor.validate_params(SamplingParams())
    for bad in [[], {"avoid": "x"}, {"avoid": [1]}, {"avoid": [], "prefer_bias": 99},
                {"v": 1}, {"nope": 1}, {"prefer_bias": float("nan")},
                {"avoid": [["x"]], "start_ban": [1]}, {"no_repeat_ngram": 1}]:
        with pytest.raises(ValueError):
            EngineSteering.parse(bad)
