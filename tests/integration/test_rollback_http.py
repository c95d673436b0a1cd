"""Rollback decoding through the real server (engine, embedded model, real tokenizer):
a detour inside an avoided name is rolled back, streams never carry rolled-back text,
"Romeo" survives a Rome ban, and n > 1, completions and critique-revise work with it."""

import json

import pytest

from greyelephant.control.detector import detector_for

pytestmark = pytest.mark.engine

# Greedy decoding of this dev prompt heads into the name again and again ("Coca-Cola",
# "Coke"): under the mask alone the model bends it, with rollback it drops it.
COLA = [{"role": "user", "content": "What's the most famous cola in the world and why is it "
                                    "so popular?"}]
COLA_SPEC = {"avoid": [{"entity": "Coca-Cola", "aliases": ["Coke"]}], "prefer": ["Pepsi"],
             "strategies": ["logits"]}
COLA_DETECTOR = detector_for([("Coca-Cola", ("Coke",))])


def chat(http, server, steering, messages=COLA, **kw):
    body = {"model": server["model"], "messages": messages, "max_tokens": 120,
            "temperature": 0, "steering": steering, **kw}
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def stream_chat(http, body):
    events = []
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


def test_a_detour_inside_the_name_is_rolled_back(http, server):
    rolled = chat(http, server, COLA_SPEC, logprobs=True)
    masked = chat(http, server, {**COLA_SPEC, "max_rollbacks": 0})
    report = rolled["steering"]
    text = rolled["choices"][0]["message"]["content"]
    assert report["rollbacks"] >= 1 and report["rolled_back_tokens"] >= report["rollbacks"]
    assert report["choices"][0]["rollbacks"] == report["rollbacks"]
    assert report["max_rollbacks"] == 8 and report["violations"] == 0
    assert not COLA_DETECTOR.find(text) and not COLA_DETECTOR.near_misses(text), text
    assert masked["steering"]["rollbacks"] == 0 and masked["steering"]["max_rollbacks"] == 0
    assert masked["choices"][0]["message"]["content"] != text  # rollback changed the answer
    # usage counts the tokens the client receives: one logprob entry per accepted token
    assert rolled["usage"]["completion_tokens"] == len(rolled["choices"][0]["logprobs"]["content"])


def test_a_stream_never_emits_rolled_back_text(http, server):
    settled = chat(http, server, COLA_SPEC)
    body = {"model": server["model"], "messages": COLA, "max_tokens": 120, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}, "steering": COLA_SPEC}
    events = stream_chat(http, body)
    chunks = [e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]]
    report = next(e["steering"] for e in events if "steering" in e)
    # everything sent is the accepted text, in order: no chunk was taken back
    assert "".join(chunks) == settled["choices"][0]["message"]["content"]
    assert report["rollbacks"] == settled["steering"]["rollbacks"] >= 1
    assert sum(1 for c in chunks if c) > 3  # it did stream
    assert events[-1]["usage"]["completion_tokens"] == settled["usage"]["completion_tokens"]


def test_romeo_survives_a_rome_ban(http, server):
    body = http.post("/v1/completions", json={
        # a prompt whose continuation is "Romeo" under any numerics (the greedy answer to
        # "In Shakespeare's play, Juliet loves" changes with the CPU's bf16 kernels)
        "model": server["model"], "prompt": "Juliet and Romeo. Juliet and Romeo. Juliet and",
        "max_tokens": 16, "temperature": 0,
        "steering": {"avoid": ["Rome"], "strategies": ["logits"]}}).json()
    text = body["choices"][0]["text"]
    assert "Romeo" in text, text
    assert not detector_for(["Rome"]).find(text)


def test_n_choices_are_chains_of_their_own(http, server):
    """With n > 1 each choice is its own chain of engine requests: each is steered and
    clean, reports its own rollbacks, and samples with its own seed (seed + index, as
    vLLM's own parallel sampling: tests/unit/server/test_rollback_judge.py checks the
    engine parameters). Equality with single-choice requests is not asserted: on a CPU
    whose bf16 kernels round differently at batch 1 and batch 2, a lone request can sample
    other tokens at a near tie than the same seed inside a batch of two."""
    kw = dict(temperature=0.8, seed=11)
    both = chat(http, server, COLA_SPEC, n=2, **kw)
    report = both["steering"]
    assert [c["index"] for c in report["choices"]] == [0, 1]
    assert report["rollbacks"] == sum(c["rollbacks"] for c in report["choices"])
    texts = [c["message"]["content"] for c in both["choices"]]
    assert texts[0] != texts[1]  # two seeds, two chains
    for text in texts:
        assert text and not COLA_DETECTOR.find(text)
    assert both["usage"]["completion_tokens"] > 0


def test_critique_revise_revisions_run_with_rollback(http, server):
    body = chat(http, server, {**COLA_SPEC, "strategies": ["critique_revise"],
                               "max_revisions": 1})
    report = body["steering"]
    text = body["choices"][0]["message"]["content"]
    assert report["draft_violations"] > 0 and report["revisions"] == 1
    assert report["violations"] == 0 and report["max_rollbacks"] == 8
    assert not COLA_DETECTOR.find(text) and not COLA_DETECTOR.near_misses(text), text


def test_completions_stream_with_rollback(http, server):
    body = {"model": server["model"], "prompt": "The most famous cola in the world is",
            "max_tokens": 40, "temperature": 0, "stream": True,
            "steering": {**COLA_SPEC}}
    events = []
    with http.stream("POST", "/v1/completions", json=body) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
    report = next(e["steering"] for e in events if "steering" in e)
    assert report["violations"] == 0 and not COLA_DETECTOR.find(text)
    assert "rollbacks" in report
