"""greyelephant Python client: the official ``openai`` SDK plus typed steering.

::

    from greyelephant.client import Client

    client = Client()                      # $GREYELEPHANT_BASE_URL or http://127.0.0.1:8000/v1
    r = client.chat("Tell me about elephants.", avoid="pink elephant", prefer="grey elephant",
                    strategies=["directive", "logits"], max_tokens=60)
    print(r.text)
    print(r.steering.violations, r.steering.prefer_mentions)

Light on purpose: importing this package pulls in ``openai``, ``httpx`` and ``pydantic``
only — never vLLM, torch or transformers (a test checks). Reference: docs/client.md.
"""

from ._client import DEFAULT_BASE_URL, AsyncClient, Client, build_request, resolve_base_url
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    GreyElephantError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    StreamError,
    UnprocessableEntityError,
)
from .streaming import (
    AsyncChatStream,
    AsyncCompletionStream,
    ChatStream,
    CompletionStream,
    TextDelta,
)
from .types import (
    STEERING_KEYWORDS,
    STRATEGIES,
    ChatResponse,
    Choice,
    ChoiceReport,
    CompletionResponse,
    Entity,
    ModelInfo,
    Steering,
    SteeringReport,
    Usage,
    steering_body,
)

__all__ = [
    "DEFAULT_BASE_URL", "STEERING_KEYWORDS", "STRATEGIES",
    "APIConnectionError", "APIStatusError", "APITimeoutError", "AsyncChatStream", "AsyncClient",
    "AsyncCompletionStream", "AuthenticationError", "BadRequestError", "ChatResponse",
    "ChatStream", "Choice", "ChoiceReport", "Client", "CompletionResponse", "CompletionStream",
    "Entity", "GreyElephantError", "InternalServerError", "ModelInfo", "NotFoundError",
    "PayloadTooLargeError", "PermissionDeniedError", "RateLimitError",
    "ServiceUnavailableError", "Steering", "SteeringReport", "StreamError", "TextDelta",
    "UnprocessableEntityError", "Usage", "build_request", "resolve_base_url", "steering_body",
]
