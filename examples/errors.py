"""Errors: the server's messages as typed exceptions.

    GREYELEPHANT_BASE_URL=http://127.0.0.1:8000/v1 python examples/errors.py

Each exception carries .status, .message (the server's words), .param and .code, and is
also the matching `openai` exception. Exits non-zero if an error is not raised as expected.
"""

import sys

import openai

from greyelephant.client import BadRequestError, Client, GreyElephantError, NotFoundError


def main() -> int:
    client = Client(max_retries=0)
    try:
        client.chat("hi", model="no-such-model", max_tokens=4)
        return 1
    except NotFoundError as exc:
        print(f"404: param={exc.param} message={exc.message!r}")
    try:
        client.chat("hi", avoid="pink elephant", strategies=["telepathy"], max_tokens=4)
        return 1
    except BadRequestError as exc:
        assert isinstance(exc, openai.BadRequestError)   # the SDK's class too
        print(f"400: param={exc.param} message={exc.message!r}")
    try:
        client.chat("hi", prefer="elephant", avoid="elephant", max_tokens=4)
        return 1
    except GreyElephantError as exc:                       # the base class of them all
        print(f"{exc.status}: {exc.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
