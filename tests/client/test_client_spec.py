"""Pure unit tests (no server): typed steering spec → request body, response parsing,
error mapping, base URL resolution, and the client's light import footprint."""

import json
import subprocess
import sys

import openai
import pytest

try:  # the HTTP library the SDK is built on (httpx2 in recent SDKs, httpx before)
    import httpx2 as sdk_http
except ImportError:  # pragma: no cover
    import httpx as sdk_http

from greyelephant.client import (
    BadRequestError,
    ChatResponse,
    Entity,
    GreyElephantError,
    NotFoundError,
    ServiceUnavailableError,
    Steering,
    SteeringReport,
    build_request,
    resolve_base_url,
    steering_body,
)
from greyelephant.client.errors import translate
from greyelephant.client.streaming import TextDelta
from greyelephant.client.types import _Accumulator

# -- spec ---------------------------------------------------------------------------------


def test_entity_forms():
    assert Entity("pink elephant").to_json() == "pink elephant"
    assert Entity("Eiffel Tower", ["Tour Eiffel"]).to_json() == {
        "entity": "Eiffel Tower", "aliases": ["Tour Eiffel"]}
    assert Entity("x", "y").aliases == ("y",)
    assert Entity.coerce({"entity": "x", "aliases": ["y", "z"]}) == Entity("x", ("y", "z"))
    assert Entity.coerce("x") == Entity("x")
    with pytest.raises(TypeError):
        Entity.coerce({"name": "x"})
    with pytest.raises(TypeError):
        Entity.coerce(3)
    with pytest.raises(TypeError):
        Entity(["x"])


def test_steering_to_dict_full():
    spec = Steering(avoid=["pink elephant", Entity("Eiffel Tower", ["Tour Eiffel"])],
                    prefer="grey elephant", strategies="directive, logits,critique_revise",
                    max_revisions=1, prefer_bias=3, no_repeat_ngram=3,
                    revision_style="in_context")
    assert spec.to_dict() == {
        "avoid": ["pink elephant", {"entity": "Eiffel Tower", "aliases": ["Tour Eiffel"]}],
        "prefer": ["grey elephant"],
        "strategies": ["directive", "logits", "critique_revise"],
        "max_revisions": 1,
        "prefer_bias": 3.0,
        "no_repeat_ngram": 3,
        "revision_style": "in_context",
    }
    # round trip through a mapping
    assert Steering.coerce(spec.to_dict()) == spec


def test_steering_omits_server_defaults():
    assert Steering(avoid=["x"]).to_dict() == {"avoid": ["x"]}
    assert Steering(prefer=("y",)).to_dict() == {"prefer": ["y"]}


def test_steering_types_checked_but_limits_left_to_server():
    # The server is the authority on limits: out-of-range values are sent as they are.
    assert Steering(avoid=["x"], max_revisions=99).to_dict()["max_revisions"] == 99
    assert Steering(avoid=["x"], strategies=["telepathy"]).to_dict()["strategies"] == ["telepathy"]
    with pytest.raises(TypeError):
        Steering(avoid=["x"], max_revisions="2")
    with pytest.raises(TypeError):
        Steering(avoid=["x"], max_revisions=True)
    with pytest.raises(TypeError):
        Steering(avoid=["x"], prefer_bias="high")
    with pytest.raises(TypeError):
        Steering(avoid=["x"], no_repeat_ngram=2.5)
    # fields this client does not know travel in `extra`, for the server to judge
    newer = Steering.coerce({"avoid": ["x"], "colour": "grey"})
    assert newer.extra == {"colour": "grey"}
    assert newer.to_dict() == {"avoid": ["x"], "colour": "grey"}


def test_steering_body_keywords_and_overrides():
    assert steering_body() is None
    assert steering_body(avoid="pink elephant") == {"avoid": ["pink elephant"]}
    base = Steering(avoid=["a"], prefer=["b"], strategies=["logits"])
    assert steering_body(base, strategies="directive") == {
        "avoid": ["a"], "prefer": ["b"], "strategies": ["directive"]}
    assert steering_body(base, avoid=["c"]) == {
        "avoid": ["c"], "prefer": ["b"], "strategies": ["logits"]}
    assert steering_body(base, prefer=[]) == {"avoid": ["a"], "prefer": [], "strategies": ["logits"]}
    # a raw mapping is passed through untouched (even fields this client does not know)
    raw = {"avoid": ["x"], "future_field": 1}
    assert steering_body(raw) == raw
    assert steering_body(raw, max_revisions=0) == {**raw, "max_revisions": 0}
    with pytest.raises(TypeError):
        steering_body("pink elephant")


# -- request body -------------------------------------------------------------------------


def test_build_chat_request():
    kw = build_request("chat", "Tell me about elephants.", model="m",
                       avoid="pink elephant", prefer="grey elephant",
                       strategies=["directive", "logits"], max_tokens=20, temperature=0,
                       top_k=5, system="Be brief.")
    assert kw == {
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Tell me about elephants."}],
        "model": "m",
        "stream": False,
        "extra_body": {"max_tokens": 20, "temperature": 0, "top_k": 5,
                       "steering": {"avoid": ["pink elephant"], "prefer": ["grey elephant"],
                                    "strategies": ["directive", "logits"]}},
    }


def test_build_request_without_steering_sends_no_steering():
    kw = build_request("chat", [{"role": "user", "content": "hi"}], model="m")
    assert kw == {"messages": [{"role": "user", "content": "hi"}], "model": "m", "stream": False}


def test_build_stream_request_asks_for_usage_and_keeps_sdk_options():
    kw = build_request("completion", "Once", model="m", stream=True, timeout=5,
                       extra_headers={"X-Request-Id": "abc"}, extra_body={"min_p": 0.1},
                       steering={"avoid": ["x"]})
    assert kw["prompt"] == "Once" and kw["stream"] is True
    assert kw["timeout"] == 5 and kw["extra_headers"] == {"X-Request-Id": "abc"}
    assert kw["extra_body"] == {"min_p": 0.1, "steering": {"avoid": ["x"]},
                                "stream_options": {"include_usage": True}}
    explicit = build_request("chat", "x", model="m", stream=True,
                             stream_options={"include_usage": False})
    assert explicit["extra_body"]["stream_options"] == {"include_usage": False}


def test_request_body_is_what_the_server_parses():
    """The JSON the SDK would send validates against the server's own request model."""
    protocol = pytest.importorskip("greyelephant.server.protocol")
    kw = build_request("chat", "hi", model="m", avoid=Entity("Eiffel Tower", ["Tour Eiffel"]),
                       prefer="Louvre", strategies="directive,logits,critique_revise",
                       max_revisions=1, prefer_bias=2.5, no_repeat_ngram=3, max_tokens=8,
                       stream=True, seed=1)
    body = {k: v for k, v in kw.items() if k != "extra_body"} | kw["extra_body"]
    req = protocol.ChatCompletionRequest.model_validate(json.loads(json.dumps(body)))
    assert req.steering.max_revisions == 1 and req.steering.prefer_bias == 2.5
    if "no_repeat_ngram" in type(req.steering).model_fields:
        assert req.steering.no_repeat_ngram == 3
    assert [e.entity for e in req.steering.avoid] == ["Eiffel Tower"]
    assert req.stream_options.include_usage


def test_messages_must_be_str_or_list():
    with pytest.raises(TypeError):
        build_request("chat", 42, model="m")


# -- base URL -----------------------------------------------------------------------------


def test_resolve_base_url(monkeypatch):
    monkeypatch.delenv("GREYELEPHANT_BASE_URL", raising=False)
    assert resolve_base_url() == "http://127.0.0.1:8000/v1"
    assert resolve_base_url("http://h:1") == "http://h:1/v1"
    assert resolve_base_url("http://h:1/") == "http://h:1/v1"
    assert resolve_base_url("http://h:1/v1/") == "http://h:1/v1"
    assert resolve_base_url("https://h/proxy/v1") == "https://h/proxy/v1"
    monkeypatch.setenv("GREYELEPHANT_BASE_URL", "http://env:2")
    assert resolve_base_url() == "http://env:2/v1"
    assert resolve_base_url("http://arg:3/v1") == "http://arg:3/v1"


# -- responses ----------------------------------------------------------------------------

REPORT = {"strategies": ["directive", "logits"], "avoid": ["pink elephant"],
          "prefer": ["grey elephant"], "max_revisions": 2, "revisions": 0,
          "draft_violations": 0, "violations": 0, "prefer_mentions": 1,
          "choices": [{"index": 0, "revisions": 0, "draft_violations": 0, "violations": 0,
                       "prefer_mentions": 1}], "spec_hash": "abc"}


def test_chat_response_from_sdk_object():
    from openai.types.chat import ChatCompletion

    from greyelephant.client.types import chat_response_from_openai

    raw = ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Grey!"},
                     "finish_reason": "stop", "stop_reason": None}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "steering": REPORT})
    r = chat_response_from_openai(raw)
    assert isinstance(r, ChatResponse) and r.text == "Grey!" and r.finish_reason == "stop"
    assert r.usage.total_tokens == 5 and r.raw is raw
    assert r.steering.clean and r.steering.prefer_mentions == 1
    assert r.steering.choices[0].prefer_mentions == 1
    dumped = r.to_json()
    assert "raw" not in dumped and dumped["steering"]["strategies"] == ["directive", "logits"]
    json.dumps(dumped)


def test_report_keeps_unknown_fields_and_sums_prompts():
    r = SteeringReport.parse({**REPORT, "new_field": 7})
    assert r.model_extra["new_field"] == 7
    assert "violations=0" in r.summary()
    multi = SteeringReport.parse({"prompts": [{**REPORT, "violations": 1},
                                              {**REPORT, "revisions": 2}]})
    assert multi.violations == 1 and multi.revisions == 2 and not multi.clean
    assert multi.strategies == ["directive", "logits"] and len(multi.prompts) == 2
    assert SteeringReport.parse(None) is None


def test_stream_accumulator():
    from openai.types.chat import ChatCompletionChunk

    def chunk(choices, **extra):
        return ChatCompletionChunk.model_validate({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": choices, **extra})

    acc = _Accumulator("chat")
    assert acc.add(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])) == []
    assert acc.add(chunk([{"index": 0, "delta": {"content": "Grey "}}])) == [(0, "Grey ")]
    assert acc.add(chunk([{"index": 0, "delta": {"content": "elephants"},
                           "finish_reason": "length"}])) == [(0, "elephants")]
    acc.add(chunk([], steering=REPORT))
    acc.add(chunk([], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}))
    r = acc.response()
    assert r.text == "Grey elephants" and r.finish_reason == "length"
    assert r.steering.prefer_mentions == 1 and r.usage.completion_tokens == 2


def test_text_delta_is_a_str():
    d = TextDelta("hi", 2)
    assert d == "hi" and d.index == 2 and isinstance(d, str) and "index=2" in repr(d)


# -- errors -------------------------------------------------------------------------------


def _status_error(status, body):
    request = sdk_http.Request("POST", "http://x/v1/chat/completions")
    response = sdk_http.Response(status, request=request, json={"error": body},
                              headers={"x-request-id": "req-1"})
    return openai.OpenAI(base_url="http://x/v1", api_key="k")._make_status_error(
        "Error code", body={"error": body}, response=response)


def test_translate_status_errors():
    body = {"message": "steering.max_revisions: too many", "type": "invalid_request_error",
            "param": "steering.max_revisions", "code": "bad_request"}
    err = translate(_status_error(400, body))
    assert isinstance(err, BadRequestError) and isinstance(err, openai.BadRequestError)
    assert isinstance(err, GreyElephantError)
    assert err.status == 400 and err.message == body["message"]
    assert err.param == "steering.max_revisions" and err.code == "bad_request"
    assert err.request_id == "req-1"
    assert "steering.max_revisions: too many" in str(err)
    nf = translate(_status_error(404, {"message": "no such model", "param": "model"}))
    assert isinstance(nf, NotFoundError) and isinstance(nf, openai.NotFoundError)
    busy = translate(_status_error(503, {"message": "loading", "code": "model_not_ready"}))
    assert isinstance(busy, ServiceUnavailableError) and busy.code == "model_not_ready"
    assert isinstance(busy, openai.InternalServerError)


def test_translate_leaves_other_errors_alone():
    e = ValueError("x")
    assert translate(e) is e


# -- footprint ----------------------------------------------------------------------------

HEAVY = ("vllm", "torch", "transformers", "triton", "numpy")


def test_client_import_is_light():
    code = ("import sys, greyelephant.client, greyelephant.client.cli, greyelephant.cli; "
            "greyelephant.cli.build_parser(); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_cli_help_at_every_level_is_light():
    for argv in ([], ["chat"], ["complete"], ["models"], ["prepare-model"]):
        code = ("import sys, contextlib, io\n"
                "from greyelephant.cli import main\n"
                "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
                "    try:\n"
                f"        main({argv + ['--help']!r})\n"
                "    except SystemExit as e:\n"
                "        assert e.code == 0, e.code\n"
                "assert 'usage: greyelephant' in out.getvalue(), out.getvalue()\n"
                f"print([m for m in {HEAVY!r} if m in sys.modules])")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]", argv
