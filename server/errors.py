"""OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from http import HTTPStatus

import msgspec
from starlette.responses import Response

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_server_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class APIError(Exception):
    """Raised anywhere in request handling; turned into an OpenAI error response."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error"),
            "param": param,
            "code": code if code is not None else HTTPStatus(status).phrase.lower().replace(" ", "_"),
        }
    }


def error_response(status: int, message: str, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode(error_body(status, message, param, code)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def sse_error(exc: APIError) -> bytes:
    """The final event of a stream that fails after it started (OpenAI's shape)."""
    return b"data: " + msgspec.json.encode(error_body(exc.status, exc.message, exc.param,
                                                      exc.code)) + b"\n\n"


def pydantic_errors_to_message(errors: list[dict]) -> tuple[str, str | None]:
    """Summarise pydantic validation errors as one readable message and the first param path."""
    parts, first_param = [], None
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        first_param = first_param or loc or None
        msg = err.get("msg", "invalid value")
        parts.append(f"{loc}: {msg}" if loc else msg)
    if len(errors) > 5:
        parts.append(f"... and {len(errors) - 5} more")
    return "; ".join(parts), first_param
