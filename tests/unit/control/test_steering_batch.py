"""SteeringBatch (the engine-independent core of the logits processor), on every device
torch sees: masks and biases land on the right rows, exactly as a per-row reference."""

from __future__ import annotations

import pytest
import torch

from greyelephant.control.ban_automaton import compile_steering
from greyelephant.control.detector import detector_for
from greyelephant.control.spec import parse_steering
from greyelephant.control.steering_batch import SteeringBatch
from greyelephant.control.vocab_index import unpack_words

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def args(**kw):
    return parse_steering(kw).engine_args()


def expected(vocab_index, logits, steering, outs):
    """Per-row reference on the CPU: x += bias (float32, rounded to dtype), banned -> -inf."""
    ref = logits.detach().cpu().clone()
    for i, st in enumerate(steering):
        if st is None:
            continue
        cs = compile_steering(vocab_index, st["avoid"], st["prefer"], st["prefer_bias"])
        row = cs.new_row()
        cs.advance_many(row, [t for t in outs[i] if t >= 0])
        ids, vals = cs.bias(row)
        ids_t = torch.as_tensor(ids, dtype=torch.long)
        ref[i, ids_t] = (ref[i, ids_t].float() + torch.as_tensor(vals)).to(ref.dtype)
        # rows without rollback get the prefix ban
        ban = torch.as_tensor(unpack_words(cs.prefix_words(row), vocab_index.vocab_size))
        ref[i, : ban.numel()][ban[: ref.shape[1]]] = float("-inf")
    return ref


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["all", "some", "none"])
def test_batch_apply_matches_per_row_reference(vocab_index, tokenizer, device, dtype, layout):
    steering = {
        "all": [args(avoid=["Nike"], prefer=["Adidas"]), args(avoid=["Tesla"]),
                args(avoid=["Eiffel Tower"], prefer=["Louvre"])],
        "some": [None, args(avoid=["Nike"], prefer=["Adidas"]), None,
                 args(avoid=["Coca-Cola"], prefer=["Pepsi"]), None],
        "none": [None, None],
    }[layout]
    outs = [tokenizer.encode(t) for t in [" I like Ni", " the Eiffel", " Coca", " Tes", "x"]]
    outs = [o + [-1] if i % 2 else o for i, o in enumerate(outs)][: len(steering)]
    batch = SteeringBatch(vocab_index, device)
    for i, st in enumerate(steering):
        batch.add(i, st, outs[i])
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(len(steering), vocab_index.vocab_size, generator=g).to(dtype).to(device)
    want = expected(vocab_index, logits, steering, outs)
    got = batch.apply(logits)
    assert got.device.type == torch.device(device).type
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_adversarial_decode_on_device(vocab_index, tokenizer, device):
    """Logits that push hard toward spelling the avoided names — the planned token first,
    then every other token whose bytes continue the plan (longer ones higher): argmax after
    the batch update never spells them, on any device."""
    spec = args(avoid=[{"entity": "Eiffel Tower", "aliases": ["Tour Eiffel"]}, "Nike",
                       {"entity": "Coca-Cola", "aliases": ["Coke"]}, "Zürich"])
    targets = [" the EIFFEL tower", " NIKE", " coca-cola", " Zürich", "\nEiffel-Tower",
               " Tour  eiffel", "(Coke)", " zu\u0308rich"]
    by_bytes: dict[bytes, int] = {}
    for tid, b in enumerate(vocab_index.token_bytes):
        if b:
            by_bytes.setdefault(b, tid)
    outs: list[list[int]] = [[] for _ in targets]
    done = [0] * len(targets)  # bytes of the target emitted so far
    batch = SteeringBatch(vocab_index, device)
    for i in range(len(targets)):
        batch.add(i, spec, outs[i])
    for _ in range(24):
        logits = torch.zeros(len(targets), vocab_index.vocab_size, device=device)
        for i, target in enumerate(targets):
            rest = target.encode()[done[i]:]
            for k in range(1, min(16, len(rest)) + 1):
                tid = by_bytes.get(rest[:k])
                if tid is not None:
                    logits[i, tid] = 50.0 + k
            if not rest:
                logits[i, tokenizer.eos_token_id] = 100.0
        batch.apply(logits)
        for i, t in enumerate(logits.argmax(-1).tolist()):
            outs[i].append(t)
            b = vocab_index.token_bytes[t] or b""
            rest = targets[i].encode()[done[i]:]
            done[i] += len(b) if rest.startswith(b) and b else 0
    det = detector_for([("Eiffel Tower", ("Tour Eiffel",)), "Nike", ("Coca-Cola", ("Coke",)),
                        "Zürich"])
    for i, o in enumerate(outs):
        text = tokenizer.decode(o, skip_special_tokens=True)
        assert not det.mentions(text), text
        assert 0 < done[i] < len(targets[i].encode())  # got close, never through


def test_row_kinds_stay_distinct_after_the_kind_memo_is_cleared(vocab_index, tokenizer,
                                                                monkeypatch):
    """Rows of different specs share no plain-step masks, also once the bounded memo of
    row kinds has been cleared (a kind id is never handed out twice): every row gets its
    own spec's ban, as the per-row reference."""
    from greyelephant.control import steering_batch as sb

    monkeypatch.setattr(sb, "MAX_STEP_MEMO", 2)
    steering = [args(avoid=[name]) for name in ("Nike", "Tesla", "Coca-Cola", "Eiffel Tower")]
    outs = [tokenizer.encode(t) for t in (" I like Ni", " the Tes", " Coca", " the Eiffel")]
    batch = SteeringBatch(vocab_index, "cpu")
    for i, st in enumerate(steering):
        batch.add(i, st, outs[i])
    assert len({batch.rows[i].kind for i in range(len(steering))}) == len(steering)
    logits = torch.randn(len(steering), vocab_index.vocab_size,
                         generator=torch.Generator().manual_seed(1))
    want = expected(vocab_index, logits, steering, outs)
    got = batch.apply(logits)
    assert torch.equal(torch.isneginf(got), torch.isneginf(want))
    assert torch.equal(got[~torch.isneginf(got)], want[~torch.isneginf(want)])
