"""Streams: iterate text deltas (or raw chunks); the steering report and usage come after.

::

    with client.chat("Tell me about elephants", avoid="pink elephant", stream=True) as stream:
        for delta in stream:                 # TextDelta: a str with .index (the choice)
            print(delta, end="", flush=True)
    print(stream.steering.violations, stream.usage.completion_tokens)

``stream.chunks()`` yields the SDK's chunk objects instead (``ChatCompletionChunk`` /
``Completion``), the steering report arriving as ``chunk.model_extra["steering"]``.
Either way a stream is read once; ``stream.final()`` reads it (if nobody has) and returns
the assembled :class:`~greyelephant.client.ChatResponse` /
:class:`~greyelephant.client.CompletionResponse`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, Literal, TypeVar

from .errors import translate
from .types import ChatResponse, CompletionResponse, SteeringReport, Usage, _Accumulator

__all__ = ["AsyncChatStream", "AsyncCompletionStream", "ChatStream", "CompletionStream",
           "TextDelta"]

R = TypeVar("R", ChatResponse, CompletionResponse)


class TextDelta(str):
    """A piece of generated text (a ``str``), with the choice it belongs to (``.index``)."""

    index: int

    def __new__(cls, text: str, index: int = 0) -> TextDelta:
        obj = super().__new__(cls, text)
        obj.index = index
        return obj

    def __repr__(self) -> str:
        return f"TextDelta({str.__repr__(self)}, index={self.index})"


class _StreamState(Generic[R]):
    _kind: Literal["chat", "completion"]

    def _init(self) -> None:
        self._acc = _Accumulator(self._kind)
        self._last: list[tuple[int, str]] = []
        self._started = False

    @property
    def done(self) -> bool:
        """True once the server closed the stream."""
        return self._acc.done

    @property
    def steering(self) -> SteeringReport | None:
        """The steering report; the server sends it after the text, so None until the end."""
        return self._acc.steering

    @property
    def usage(self) -> Usage | None:
        """Token usage (the client asks for it); None until the end."""
        return self._acc.usage

    @property
    def text(self) -> str:
        """The first choice's text received so far."""
        return "".join(self._acc.texts.get(0, []))

    @property
    def response(self) -> R:
        """The response assembled from what was received so far."""
        return self._acc.response()  # type: ignore[return-value]

    def _claim(self) -> None:
        if self._started:
            raise RuntimeError("a stream can be iterated only once")
        self._started = True


class _SyncStream(_StreamState[R]):
    def __init__(self, sdk_stream: Any) -> None:
        self._sdk = sdk_stream
        self._init()

    def chunks(self) -> Iterator[Any]:
        """The SDK chunk objects, in order (recorded for ``steering`` / ``usage`` / ``final``)."""
        self._claim()
        return self._chunks()

    def _chunks(self) -> Iterator[Any]:
        try:
            for chunk in self._sdk:
                self._last = self._acc.add(chunk)
                yield chunk
            self._acc.done = True
        except Exception as exc:
            new = translate(exc)
            if new is exc:
                raise
            raise new from exc
        finally:
            if not self._acc.done:
                self.close()

    def __iter__(self) -> Iterator[TextDelta]:
        self._claim()
        for _chunk in self._chunks():
            for index, text in self._last:
                yield TextDelta(text, index)

    def final(self) -> R:
        """Consume the stream (if not iterated yet) and return the assembled response.

        After a loop that stopped early (``break``), the stream is closed and this returns
        what was received."""
        if not self._started:
            for _ in self.chunks():
                pass
        return self.response

    def close(self) -> None:
        self._sdk.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _AsyncStream(_StreamState[R]):
    def __init__(self, sdk_stream: Any) -> None:
        self._sdk = sdk_stream
        self._init()

    def chunks(self) -> AsyncIterator[Any]:
        """The SDK chunk objects, in order (recorded for ``steering`` / ``usage`` / ``final``)."""
        self._claim()
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Any]:
        try:
            async for chunk in self._sdk:
                self._last = self._acc.add(chunk)
                yield chunk
            self._acc.done = True
        except Exception as exc:
            new = translate(exc)
            if new is exc:
                raise
            raise new from exc
        finally:
            if not self._acc.done:
                await self.close()

    async def __aiter__(self) -> AsyncIterator[TextDelta]:
        self._claim()
        async for _chunk in self._chunks():
            for index, text in self._last:
                yield TextDelta(text, index)

    async def final(self) -> R:
        """Consume the stream (if not iterated yet) and return the assembled response.

        After a loop that stopped early (``break``), the stream is closed and this returns
        what was received."""
        if not self._started:
            async for _ in self.chunks():
                pass
        return self.response

    async def close(self) -> None:
        await self._sdk.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


class ChatStream(_SyncStream[ChatResponse]):
    """Streaming chat completion (sync). Iterate for :class:`TextDelta`."""

    _kind = "chat"


class CompletionStream(_SyncStream[CompletionResponse]):
    """Streaming text completion (sync). Iterate for :class:`TextDelta`."""

    _kind = "completion"


class AsyncChatStream(_AsyncStream[ChatResponse]):
    """Streaming chat completion (async). ``async for`` gives :class:`TextDelta`."""

    _kind = "chat"


class AsyncCompletionStream(_AsyncStream[CompletionResponse]):
    """Streaming text completion (async). ``async for`` gives :class:`TextDelta`."""

    _kind = "completion"
