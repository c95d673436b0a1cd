import pytest
from pydantic import ValidationError

from greyelephant.server import limits
from greyelephant.server.protocol import ChatCompletionRequest, CompletionRequest

MSG = [{"role": "user", "content": "hi"}]


def chat(**kw):
    return ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, **kw})


def test_minimal_chat_defaults():
    req = chat()
    assert req.n == 1 and req.stream is False and req.output_budget() is None
    assert req.n_logprobs() is None


def test_max_completion_tokens_wins_over_max_tokens():
    assert chat(max_tokens=5, max_completion_tokens=9).output_budget() == 9


@pytest.mark.parametrize("bad", [
    {"temperature": 3}, {"top_p": 0}, {"n": limits.MAX_N + 1}, {"max_tokens": 0},
    {"unknown_field": 1}, {"tools": [{"type": "function"}]},
    {"stop": ["x"] * (limits.MAX_STOP + 1)}, {"logit_bias": {"abc": 1}},
    {"logit_bias": {"5": 500}}, {"top_logprobs": 3},
    {"stream_options": {"include_usage": True}},
    {"response_format": {"type": "json_schema"}},
    {"messages": []}, {"messages": [{"role": "robot", "content": "x"}]},
])
def test_invalid_chat_requests_are_rejected(bad):
    body = {"model": "m", "messages": MSG, **bad}
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)


def test_content_parts_are_joined():
    req = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"},
                                                      {"type": "text", "text": "b"}]}])
    assert req.messages[0].text() == "ab"


def test_logprobs_with_top_logprobs():
    assert chat(logprobs=True, top_logprobs=3).n_logprobs() == 3
    assert chat(logprobs=True).n_logprobs() == 0


@pytest.mark.parametrize("prompt", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_completion_prompt_shapes(prompt):
    req = CompletionRequest.model_validate({"model": "m", "prompt": prompt})
    assert req.output_budget() == limits.DEFAULT_COMPLETION_MAX_TOKENS


@pytest.mark.parametrize("bad", [
    {"prompt": []}, {"prompt": ["x"] * (limits.MAX_PROMPTS + 1)}, {"suffix": "x"},
    {"best_of": 3}, {"logprobs": limits.MAX_LOGPROBS + 1},
])
def test_invalid_completion_requests(bad):
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": "x", **bad})
