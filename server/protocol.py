"""Request bodies of the OpenAI API this server speaks, plus the `steering` extension.

Unknown top-level fields are rejected (400) rather than silently ignored: a typo in a
sampling parameter should not quietly change nothing. Fields OpenAI defines but this
server does not implement (tools, audio, …) are rejected with a message that says so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from greyelephant.control.spec import SteeringSpec

from . import limits


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class JSONSchemaFormat(_Strict):
    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self):
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format.type 'json_schema' requires json_schema.schema")
        return self


class SamplingFields(_Strict):
    """Sampling parameters shared by chat and completions (OpenAI + common vLLM extensions)."""

    model: str = Field(max_length=256)
    n: int = Field(default=1, ge=1, le=limits.MAX_N)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = Field(default=None, max_length=limits.MAX_STOP)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)
    skip_special_tokens: bool = True
    user: str | None = Field(default=None, max_length=256)
    steering: SteeringSpec | None = None

    @field_validator("stop")
    @classmethod
    def _stop_limits(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > limits.MAX_STOP:
            raise ValueError(f"at most {limits.MAX_STOP} stop sequences")
        if any(len(s) > limits.MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop sequences are limited to {limits.MAX_STOP_CHARS} characters")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v):
        if v is None:
            return v
        if len(v) > limits.MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias accepts at most {limits.MAX_LOGIT_BIAS} entries")
        for key, bias in v.items():
            if not key.lstrip("-").isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"logit_bias values must be in [-100, 100], got {bias}")
        return v

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self


class ContentPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=64)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=limits.MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=limits.MAX_LOGPROBS)
    response_format: ResponseFormat | None = None
    # Accepted for compatibility and ignored: they do not change generation here.
    metadata: dict[str, str] | None = None
    store: bool | None = None
    parallel_tool_calls: bool | None = None
    add_generation_prompt: bool = True
    # Rejected with a clear message: not implemented by this server.
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    audio: Any = None
    modalities: Any = None

    @model_validator(mode="after")
    def _unsupported(self):
        for name in ("tools", "tool_choice", "functions", "audio", "modalities"):
            if getattr(self, name) is not None:
                raise ValueError(f"'{name}' is not supported by this server")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs: true")
        return self

    def output_budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def n_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(...)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=limits.MAX_LOGPROBS)
    suffix: str | None = None
    best_of: int | None = None
    response_format: ResponseFormat | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_limits(cls, v):
        if isinstance(v, list):
            if len(v) == 0:
                raise ValueError("prompt must not be empty")
            if isinstance(v[0], list | str) and len(v) > limits.MAX_PROMPTS:
                raise ValueError(f"at most {limits.MAX_PROMPTS} prompts per request")
        return v

    @model_validator(mode="after")
    def _unsupported(self):
        if self.suffix is not None:
            raise ValueError("'suffix' is not supported by this server")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("'best_of' different from n is not supported")
        return self

    def output_budget(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else limits.DEFAULT_COMPLETION_MAX_TOKENS

    def n_logprobs(self) -> int | None:
        return self.logprobs


class LoadAdapterRequest(_Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    path: str = Field(min_length=1, max_length=4096)


class UnloadAdapterRequest(_Strict):
    name: str = Field(min_length=1, max_length=128)
