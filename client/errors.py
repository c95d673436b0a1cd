"""Exceptions: the server's OpenAI-shaped errors as typed Python exceptions.

Every exception the client raises for a failed request derives from
:class:`GreyElephantError`. HTTP errors derive from :class:`APIStatusError`, which carries
the server's own words: ``.status`` (HTTP status), ``.message`` (the server's message,
verbatim), ``.param`` (e.g. ``"steering.max_revisions"``), ``.code``, ``.type`` and
``.request_id``. Each class is *also* the matching ``openai`` exception, so code written
against the raw SDK (``except openai.NotFoundError``) keeps working::

    try:
        client.chat("hi", model="nope")
    except greyelephant.client.NotFoundError as e:
        print(e.status, e.param, e.message)    # 404 model The model 'nope' does not exist…
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import openai

__all__ = [
    "APIConnectionError", "APIStatusError", "APITimeoutError", "AuthenticationError",
    "BadRequestError", "GreyElephantError", "InternalServerError", "NotFoundError",
    "PayloadTooLargeError", "PermissionDeniedError", "RateLimitError",
    "ServiceUnavailableError", "StreamError", "UnprocessableEntityError", "translate",
]


class GreyElephantError(openai.OpenAIError):
    """Base class of every error raised by :mod:`greyelephant.client`."""

    message: str = ""
    status: int | None = None
    param: str | None = None
    code: str | None = None
    type: str | None = None


def _error_fields(body: Any) -> tuple[str | None, str | None, str | None, str | None]:
    if isinstance(body, dict):
        get = body.get
        message = get("message")
        return (message if isinstance(message, str) else None, get("param"),
                None if get("code") is None else str(get("code")), get("type"))
    if isinstance(body, str) and body.strip():
        return body.strip(), None, None, None
    return None, None, None, None


class APIStatusError(GreyElephantError, openai.APIStatusError):
    """The server answered with an HTTP error (4xx / 5xx)."""

    def __init__(self, message: str | None = None, *, response: Any, body: object | None) -> None:
        server_message, param, code, type_ = _error_fields(body)
        server_message = server_message or message or f"HTTP {response.status_code}"
        openai.APIStatusError.__init__(self, server_message, response=response, body=body)
        self.status = self.status_code
        self.message = server_message
        self.param = param
        self.code = code
        self.type = type_
        self.args = (str(self),)

    def __str__(self) -> str:
        where = f" (param: {self.param})" if self.param else ""
        label = self.type or self.code or "error"
        return f"{self.status} {label}: {self.message}{where}"


class BadRequestError(APIStatusError, openai.BadRequestError):
    """400: invalid parameter or steering spec; ``.param`` names the field."""


class AuthenticationError(APIStatusError, openai.AuthenticationError):
    """401: missing or wrong API key."""


class PermissionDeniedError(APIStatusError, openai.PermissionDeniedError):
    """403: e.g. adapter management disabled."""


class NotFoundError(APIStatusError, openai.NotFoundError):
    """404: unknown model / adapter or route."""


class PayloadTooLargeError(APIStatusError):
    """413: request body over the server's limit."""


class UnprocessableEntityError(APIStatusError, openai.UnprocessableEntityError):
    """422."""


class RateLimitError(APIStatusError, openai.RateLimitError):
    """429."""


class InternalServerError(APIStatusError, openai.InternalServerError):
    """5xx: a server bug or failure."""


class ServiceUnavailableError(InternalServerError):
    """503: the engine is still loading (``code == "model_not_ready"``) or failed."""


class APIConnectionError(GreyElephantError, openai.APIConnectionError):
    """The server could not be reached (after the configured retries)."""

    def __init__(self, *, message: str = "Connection error.", request: Any) -> None:
        openai.APIConnectionError.__init__(self, message=message, request=request)
        self.message = message


class APITimeoutError(APIConnectionError, openai.APITimeoutError):
    """The request timed out (after the configured retries)."""

    def __init__(self, request: Any) -> None:
        APIConnectionError.__init__(self, message="Request timed out.", request=request)


class StreamError(GreyElephantError, openai.APIError):
    """The server reported an error inside an event stream."""

    def __init__(self, message: str, request: Any, *, body: object | None) -> None:
        openai.APIError.__init__(self, message, request, body=body)
        server_message, param, code, type_ = _error_fields(body)
        self.message = server_message or message
        self.param, self.code, self.type = param, code, type_


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
    404: NotFoundError, 413: PayloadTooLargeError, 422: UnprocessableEntityError,
    429: RateLimitError, 503: ServiceUnavailableError,
}


def translate(exc: BaseException) -> BaseException:
    """The :class:`GreyElephantError` for an ``openai`` exception (others unchanged)."""
    if isinstance(exc, GreyElephantError) or not isinstance(exc, openai.OpenAIError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        cls = _BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
        return cls(exc.message, response=exc.response, body=exc.body)
    if isinstance(exc, openai.APITimeoutError):
        return APITimeoutError(exc.request)
    if isinstance(exc, openai.APIConnectionError):
        return APIConnectionError(message=exc.message, request=exc.request)
    if type(exc) is openai.APIError:  # an error event inside a stream
        return StreamError(exc.message, exc.request, body=exc.body)
    return exc


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise ``openai`` errors as their :class:`GreyElephantError` (original as cause)."""
    try:
        yield
    except openai.OpenAIError as exc:
        new = translate(exc)
        if new is exc:
            raise
        raise new from exc
