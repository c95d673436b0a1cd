"""What every handler needs: the engine, adapters, settings, and model resolution."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from .adapters import AdapterRegistry
from .admission import Admission
from .engine import EngineHandle
from .errors import APIError
from .metrics import Metrics


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    admin_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    steering_defaults: dict[str, Any] = field(default_factory=dict)
    adapter_steering_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    # what a steered final text with a violation becomes: "error" (500 steering_violation,
    # the default: fail closed) or "report" (returned, counted in the report)
    on_violation: str = "error"
    request_timeout: float | None = None  # seconds; None: no limit
    max_queued_requests: int | None = None  # beyond the engine's max_num_seqs; None: none
    drain_timeout: float = 30.0
    adapter_roots: tuple[str, ...] = ()  # directories adapters may be loaded from
    # submit a rollback's continuation while the choice is inside a form (server/rollback.py)
    prepared_rollbacks: bool = True


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_request_id(prefix: str, header_value: str | None) -> str:
    """Use the client's X-Request-Id when it is safe, else a random one."""
    if header_value and _REQUEST_ID.match(header_value):
        return header_value
    return f"{prefix}-{secrets.token_hex(12)}"


@dataclass
class ServerContext:
    settings: ServerSettings
    engine: EngineHandle
    adapters: AdapterRegistry
    metrics: Metrics
    admission: Admission = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.admission is None:
            self.admission = Admission(None, self.metrics)

    def engine_ready(self) -> None:
        """The admission limit: the engine's max_num_seqs + --max-queued-requests."""
        queued = self.settings.max_queued_requests
        if queued is not None and self.engine.max_num_seqs:
            self.admission.limit = self.engine.max_num_seqs + queued
            self.metrics.admission_limit.set(self.admission.limit)

    def require_ready(self) -> None:
        if self.engine.state == "starting":
            raise APIError(503, "the model is still loading; retry shortly", code="model_not_ready")
        if self.engine.state != "ready":
            raise APIError(503, f"the engine is not available ({self.engine.error or self.engine.state})",
                           code="engine_unavailable")

    def resolve_model(self, name: str):
        """Request `model` → (served name, LoRARequest or None). Unknown → 404."""
        if name == self.engine.served_model_name:
            return name, None
        adapter = self.adapters.get(name)
        if adapter is None:
            raise APIError(404, f"The model '{name}' does not exist. Available: "
                                f"{', '.join(self.model_names())}", "model", "model_not_found")
        return name, adapter.lora_request(self.engine.served_model_name)

    def model_names(self) -> list[str]:
        return [self.engine.served_model_name, *(a.name for a in self.adapters)]

    def check_budget(self, prompt_len: int, max_tokens: int | None, param: str) -> int:
        """The output budget for a prompt: validated against the model's context length."""
        limit = self.engine.info.max_model_len
        if prompt_len >= limit:
            raise APIError(400, f"This model's maximum context length is {limit} tokens; the prompt "
                                f"has {prompt_len} tokens.", "messages" if param != "prompt" else param,
                           "context_length_exceeded")
        if max_tokens is None:
            return limit - prompt_len
        if prompt_len + max_tokens > limit:
            raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you "
                                f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the prompt, "
                                f"{max_tokens} for the completion).", param, "context_length_exceeded")
        return max_tokens
