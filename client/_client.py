"""`Client` and `AsyncClient`: the official `openai` SDK plus typed steering."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload
from urllib.parse import urlsplit, urlunsplit

import openai

from .errors import translated
from .streaming import AsyncChatStream, AsyncCompletionStream, ChatStream, CompletionStream
from .types import (
    STEERING_KEYWORDS,
    ChatResponse,
    CompletionResponse,
    ModelInfo,
    Steering,
    chat_response_from_openai,
    completion_response_from_openai,
    steering_body,
)

__all__ = ["DEFAULT_BASE_URL", "AsyncClient", "Client", "resolve_base_url"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
BASE_URL_ENV = "GREYELEPHANT_BASE_URL"
API_KEY_ENV = "GREYELEPHANT_API_KEY"
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 2

# Per-request options of the SDK (not part of the JSON body).
_REQUEST_OPTIONS = ("extra_headers", "extra_query", "timeout")

Messages = str | Sequence[Mapping[str, Any]]


def resolve_base_url(base_url: str | None = None) -> str:
    """``base_url`` or ``$GREYELEPHANT_BASE_URL`` or the default; a bare host gets ``/v1``."""
    url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip()
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1")
    return urlunsplit(parts).rstrip("/")


def _api_key(api_key: str | None) -> str:
    # The SDK insists on a key; a server started without --api-key ignores it.
    return api_key or os.environ.get(API_KEY_ENV) or "unused"


def _messages(messages: Messages, system: str | None) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        out: list[dict[str, Any]] = [{"role": "user", "content": messages}]
    elif isinstance(messages, Sequence):
        out = [dict(m) for m in messages]
    else:
        raise TypeError("messages is a string or a list of {'role', 'content'} mappings")
    if system is not None:
        out.insert(0, {"role": "system", "content": system})
    return out


def _split(sampling: dict[str, Any], steering: dict[str, Any] | None,
           stream: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON body extras, SDK request options) from the user's keyword arguments."""
    options = {k: sampling.pop(k) for k in _REQUEST_OPTIONS if k in sampling}
    body = dict(sampling.pop("extra_body", None) or {})
    body.update(sampling)
    if steering is not None:
        body["steering"] = steering
    if stream:
        # Ask for usage by default, so that stream.usage is there at the end.
        body.setdefault("stream_options", {"include_usage": True})
    return body, options


def build_request(
    kind: Literal["chat", "completion"],
    payload: Any,
    *,
    model: str,
    stream: bool = False,
    steering: Steering | Mapping[str, Any] | None = None,
    system: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The keyword arguments for the SDK's ``create`` (pure: unit-tested without a server).

    ``fields``: the steering keywords (:data:`STEERING_KEYWORDS`: ``avoid``, ``prefer``,
    ``strategies``, …, overriding ``steering`` one by one) and any request field. Every
    request field travels in ``extra_body`` so that the server's extensions (``top_k``,
    ``min_p``, ``repetition_penalty``, ``steering``, …) and OpenAI's own fields are sent
    alike, exactly as given.
    """
    overrides = {k: fields.pop(k) for k in STEERING_KEYWORDS if k in fields}
    spec = steering_body(steering, **overrides)
    body, options = _split(fields, spec, stream)
    if kind == "chat":
        first: dict[str, Any] = {"messages": _messages(payload, system)}
    else:
        if system is not None:
            raise TypeError("system= is for chat(); put it in the prompt for complete()")
        first = {"prompt": payload}
    kwargs: dict[str, Any] = {**first, "model": model, "stream": stream, **options}
    if body:
        kwargs["extra_body"] = body
    return kwargs


def _pick_model(model: str | None, adapter: str | None) -> str | None:
    if model is not None and adapter is not None and model != adapter:
        raise ValueError("give model= or adapter= (a LoRA adapter is served as a model name)")
    return adapter if adapter is not None else model


class _Base:
    _default_model: str | None

    def _sdk_args(self, base_url: str | None, api_key: str | None, timeout: Any,
                  max_retries: int, default_headers: Mapping[str, str] | None) -> dict[str, Any]:
        self.base_url = resolve_base_url(base_url)
        self._default_model = None
        return {"base_url": self.base_url, "api_key": _api_key(api_key),
                "timeout": DEFAULT_TIMEOUT if timeout is None else timeout,
                "max_retries": max_retries, "default_headers": default_headers}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"


class Client(_Base):
    """Synchronous client.

    ``Client(base_url=None, api_key=None, timeout=600, max_retries=2)``: ``base_url``
    defaults to ``$GREYELEPHANT_BASE_URL`` or ``http://127.0.0.1:8000/v1``, ``api_key`` to
    ``$GREYELEPHANT_API_KEY``. Retries (connection errors, 429, 5xx, with backoff) and
    timeouts are the ``openai`` SDK's; ``client.openai`` is that SDK client, for anything
    not wrapped here.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | Any | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 *, default_headers: Mapping[str, str] | None = None,
                 http_client: Any | None = None) -> None:
        args = self._sdk_args(base_url, api_key, timeout, max_retries, default_headers)
        if http_client is not None:
            args["http_client"] = http_client
        self.openai = openai.OpenAI(**args)

    # -- models ---------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        """``GET /v1/models``: the base model first, then loaded LoRA adapters."""
        with translated():
            page = self.openai.models.list()
        return [ModelInfo.model_validate(m.model_dump()) for m in page.data]

    def default_model(self) -> str:
        """The first model the server lists (asked once, then cached)."""
        if self._default_model is None:
            models = self.models()
            if not models:
                raise RuntimeError(f"the server at {self.base_url} lists no models")
            self._default_model = models[0].id
        return self._default_model

    # -- chat and completions -------------------------------------------------------
    @overload
    def chat(self, messages: Messages, *, stream: Literal[False] = False,
             **options: Any) -> ChatResponse: ...

    @overload
    def chat(self, messages: Messages, *, stream: Literal[True], **options: Any) -> ChatStream: ...

    def chat(self, messages: Messages, *, model: str | None = None, adapter: str | None = None,
             stream: bool = False, **options: Any) -> ChatResponse | ChatStream:
        """``POST /v1/chat/completions``.

        ``messages``: a string (one user message) or OpenAI-style message dicts;
        ``system=`` prepends a system message. Steering: ``avoid`` / ``prefer`` /
        ``strategies`` / ``max_revisions`` / ``prefer_bias`` / ``no_repeat_ngram`` /
        ``revision_style`` / ``max_rollbacks``, or a whole ``steering`` (:class:`Steering`
        or mapping) that those keywords override. ``model`` (or ``adapter``, a LoRA
        adapter's name) defaults to the server's first model. Any other keyword is a
        request field (``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``seed``,
        ``stop``, ``n``, ``logprobs``, ``response_format``, …) or one of the SDK's
        ``timeout`` / ``extra_headers`` / ``extra_query`` / ``extra_body``. Returns a
        :class:`ChatResponse`, or with ``stream=True`` a :class:`ChatStream`.
        """
        kwargs = build_request("chat", messages, stream=stream,
                               model=_pick_model(model, adapter) or self.default_model(),
                               **options)
        with translated():
            result = self.openai.chat.completions.create(**kwargs)
        return ChatStream(result) if stream else chat_response_from_openai(result)

    @overload
    def complete(self, prompt: Any, *, stream: Literal[False] = False,
                 **options: Any) -> CompletionResponse: ...

    @overload
    def complete(self, prompt: Any, *, stream: Literal[True],
                 **options: Any) -> CompletionStream: ...

    def complete(self, prompt: str | list[str] | list[int] | list[list[int]], *,
                 model: str | None = None, adapter: str | None = None, stream: bool = False,
                 **options: Any) -> CompletionResponse | CompletionStream:
        """``POST /v1/completions``: the keywords of :meth:`chat` (but ``system``), with a
        ``prompt`` (a string, a list of strings, token ids or lists of token ids)."""
        kwargs = build_request("completion", prompt, stream=stream,
                               model=_pick_model(model, adapter) or self.default_model(),
                               **options)
        with translated():
            result = self.openai.completions.create(**kwargs)
        return CompletionStream(result) if stream else completion_response_from_openai(result)

    # -- lifecycle ------------------------------------------------------------------
    def close(self) -> None:
        self.openai.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class AsyncClient(_Base):
    """Asynchronous client: the same API as :class:`Client`, with ``await``.

    ``await client.chat(..., stream=True)`` returns an :class:`AsyncChatStream`
    (``async for delta in stream``); errors before the first token (404, 400, …) are
    raised by the ``await`` itself.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | Any | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 *, default_headers: Mapping[str, str] | None = None,
                 http_client: Any | None = None) -> None:
        args = self._sdk_args(base_url, api_key, timeout, max_retries, default_headers)
        if http_client is not None:
            args["http_client"] = http_client
        self.openai = openai.AsyncOpenAI(**args)

    async def models(self) -> list[ModelInfo]:
        """``GET /v1/models``: the base model first, then loaded LoRA adapters."""
        with translated():
            page = await self.openai.models.list()
        return [ModelInfo.model_validate(m.model_dump()) for m in page.data]

    async def default_model(self) -> str:
        """The first model the server lists (asked once, then cached)."""
        if self._default_model is None:
            models = await self.models()
            if not models:
                raise RuntimeError(f"the server at {self.base_url} lists no models")
            self._default_model = models[0].id
        return self._default_model

    @overload
    async def chat(self, messages: Messages, *, stream: Literal[False] = False,
                   **options: Any) -> ChatResponse: ...

    @overload
    async def chat(self, messages: Messages, *, stream: Literal[True],
                   **options: Any) -> AsyncChatStream: ...

    async def chat(self, messages: Messages, *, model: str | None = None,
                   adapter: str | None = None, stream: bool = False,
                   **options: Any) -> ChatResponse | AsyncChatStream:
        """``POST /v1/chat/completions``; see :meth:`Client.chat`."""
        kwargs = build_request("chat", messages, stream=stream,
                               model=_pick_model(model, adapter) or await self.default_model(),
                               **options)
        with translated():
            result = await self.openai.chat.completions.create(**kwargs)
        return AsyncChatStream(result) if stream else chat_response_from_openai(result)

    @overload
    async def complete(self, prompt: Any, *, stream: Literal[False] = False,
                       **options: Any) -> CompletionResponse: ...

    @overload
    async def complete(self, prompt: Any, *, stream: Literal[True],
                       **options: Any) -> AsyncCompletionStream: ...

    async def complete(self, prompt: str | list[str] | list[int] | list[list[int]], *,
                       model: str | None = None, adapter: str | None = None,
                       stream: bool = False,
                       **options: Any) -> CompletionResponse | AsyncCompletionStream:
        """``POST /v1/completions``; see :meth:`Client.complete`."""
        kwargs = build_request("completion", prompt, stream=stream,
                               model=_pick_model(model, adapter) or await self.default_model(),
                               **options)
        with translated():
            result = await self.openai.completions.create(**kwargs)
        return AsyncCompletionStream(result) if stream else completion_response_from_openai(result)

    async def chat_json(self, messages: Messages, *, model: str | None = None,
                        **fields: Any) -> dict[str, Any]:
        """``POST /v1/chat/completions`` with any request fields (``steering`` as a plain
        dict included), returning the response as a dict: for tools that want every field
        the server sends (the recipe, the eval)."""
        kwargs = build_request("chat", messages, model=model or await self.default_model(),
                               **fields)
        with translated():
            result = await self.openai.chat.completions.create(**kwargs)
        return result.model_dump()

    async def close(self) -> None:
        await self.openai.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
