"""Steering through the real server: the report, the guarantee on live generations,
streaming, n > 1, completions, critique-revise and validation."""

import json

import pytest

pytestmark = pytest.mark.engine

PARIS = [{"role": "user", "content": "What's the one landmark I absolutely must see on my "
                                     "first trip to Paris?"}]
SPEC = {"avoid": [{"entity": "Eiffel Tower", "aliases": ["Tour Eiffel"]}], "prefer": ["Louvre"]}


def stream_chat(http, body):
    """POST a streaming chat request; return (JSON events, concatenated content)."""
    events = []
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    return events, text


def chat(http, server, steering, messages=PARIS, **kw):
    body = {"model": server["model"], "messages": messages, "max_tokens": 60, "temperature": 0,
            "steering": steering, **kw}
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_unsteered_baseline_names_the_entity(http, server):
    """The dev prompt really does elicit the entity; otherwise the tests below prove nothing."""
    body = http.post("/v1/chat/completions", json={
        "model": server["model"], "messages": PARIS, "max_tokens": 60, "temperature": 0}).json()
    assert "eiffel tower" in body["choices"][0]["message"]["content"].lower()
    assert "steering" not in body


@pytest.mark.parametrize("strategies", [["logits"], ["directive", "logits"]])
def test_logits_strategy_removes_the_mention(http, server, strategies):
    body = chat(http, server, {**SPEC, "strategies": strategies})
    text = body["choices"][0]["message"]["content"]
    assert "eiffel tower" not in text.lower() and "tour eiffel" not in text.lower()
    report = body["steering"]
    assert report["strategies"] == strategies
    assert report["violations"] == 0 and report["revisions"] == 0


def test_metrics_count_the_engine_processes_steering_steps(http, server):
    """The processor runs in vLLM's engine process; its step counters reach /metrics."""
    from greyelephant.benchmarks.lanes_engine_check import steering_counters

    before = steering_counters(http.get("/metrics").text)
    body = chat(http, server, {**SPEC, "strategies": ["logits"]}, max_tokens=24)
    after = steering_counters(http.get("/metrics").text)
    steps = after["steps"] - before["steps"]
    # each generated token but the last was sampled from steered logits (a rollback's
    # continuation is steered too, so there may be more)
    assert steps >= body["usage"]["completion_tokens"] - 1 > 0
    assert after["row_steps"] - before["row_steps"] >= steps
    pids = {line.split('pid="', 1)[1].split('"', 1)[0]
            for line in http.get("/metrics").text.splitlines()
            if line.startswith("greyelephant_steering_steps_total{")}
    assert pids and str(server["pid"]) not in pids  # (the engine's, not the server's)


def test_directive_alone_is_reported_honestly(http, server):
    body = chat(http, server, {**SPEC, "strategies": ["directive"]})
    text = body["choices"][0]["message"]["content"].lower()
    mentioned = text.count("eiffel tower") + text.count("tour eiffel")
    assert body["steering"]["violations"] >= mentioned > 0 or \
        body["steering"]["violations"] == mentioned == 0


def test_critique_revise_revises_a_dirty_draft(http, server):
    body = chat(http, server, {**SPEC, "strategies": ["critique_revise"], "max_revisions": 1})
    report = body["steering"]
    assert report["draft_violations"] > 0  # the unsteered draft names it (see baseline test)
    assert report["revisions"] == 1
    assert report["violations"] == 0  # revisions run with the ban active
    assert "eiffel tower" not in body["choices"][0]["message"]["content"].lower()


def test_critique_revise_in_context_style(http, server):
    body = chat(http, server, {**SPEC, "strategies": ["critique_revise"], "max_revisions": 1,
                               "revision_style": "in_context"})
    report = body["steering"]
    assert report["revision_style"] == "in_context"
    assert report["draft_violations"] > 0 and report["revisions"] == 1
    assert report["violations"] == 0
    assert "eiffel tower" not in body["choices"][0]["message"]["content"].lower()


def test_critique_revise_leaves_clean_drafts_alone(http, server):
    body = chat(http, server, {**SPEC, "strategies": ["directive", "logits", "critique_revise"]})
    assert body["steering"]["draft_violations"] == 0 and body["steering"]["revisions"] == 0


def test_n_choices_each_reported(http, server):
    body = chat(http, server, {**SPEC, "strategies": ["logits"]}, n=3, temperature=0.9, seed=5)
    report = body["steering"]
    assert [c["index"] for c in report["choices"]] == [0, 1, 2]
    for choice in body["choices"]:
        assert "eiffel tower" not in choice["message"]["content"].lower()


def test_streaming_carries_the_report(http, server):
    body = {"model": server["model"], "messages": PARIS, "max_tokens": 40, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True},
            "steering": {**SPEC, "strategies": ["directive", "logits"]}}
    events, text = stream_chat(http, body)
    reports = [e["steering"] for e in events if "steering" in e]
    assert len(reports) == 1 and reports[0]["violations"] == 0
    assert "eiffel tower" not in text.lower()
    assert "usage" in events[-1]


def test_streaming_with_critique_revise_sends_settled_text(http, server):
    body = {"model": server["model"], "messages": PARIS, "max_tokens": 40, "temperature": 0,
            "stream": True, "steering": {**SPEC, "strategies": ["critique_revise"]}}
    events, text = stream_chat(http, body)
    report = next(e["steering"] for e in events if "steering" in e)
    assert report["revisions"] >= 1 and report["violations"] == 0
    assert "eiffel tower" not in text.lower()


def test_completions_endpoint_steering(http, server):
    body = http.post("/v1/completions", json={
        "model": server["model"], "prompt": "The most famous landmark in Paris is the",
        "max_tokens": 12, "temperature": 0,
        "steering": {"avoid": ["Eiffel Tower"], "strategies": ["logits"]}}).json()
    assert "eiffel tower" not in body["choices"][0]["text"].lower()
    assert body["steering"]["violations"] == 0


@pytest.mark.parametrize("steering,param", [
    ({"avoid": []}, "steering"),
    ({"avoid": ["x"], "strategies": ["telepathy"]}, "steering.strategies"),
    ({"avoid": ["x"], "max_revisions": 99}, "steering.max_revisions"),
    ({"avoid": ["x"], "colour": "grey"}, "steering.colour"),
    ({"avoid": ["x"], "revision_style": "poem"}, "steering.revision_style"),
    ({"avoid": "pink elephant"}, "steering.avoid"),
    ({"avoid": [{"entity": "x", "aliases": "y"}]}, "steering.avoid.0.aliases"),
])
def test_invalid_steering_is_400(http, server, steering, param):
    resp = http.post("/v1/chat/completions", json={
        "model": server["model"], "messages": PARIS, "steering": steering})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"].startswith(param.split(".")[0])
