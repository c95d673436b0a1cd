"""Logging: text or JSON lines, request ids on request lines, no prompts or outputs unless
the operator asks (``--log-prompts``)."""

from __future__ import annotations

import json
import logging
import time

# fields a log call may pass with ``extra=`` that the JSON lines carry
FIELDS = ("request_id", "route", "status", "latency_s", "model", "prompt_tokens",
          "completion_tokens", "strategies", "rollbacks", "revisions", "prompt", "output")
LOG_PROMPTS = {"enabled": False}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{n}={getattr(record, n)}" for n in FIELDS
                 if getattr(record, n, None) is not None]
        return f"{line} {' '.join(extra)}" if extra else line


def configure_logging(level: str, fmt: str = "text", log_prompts: bool = False) -> None:
    """Root logging for the server process (uvicorn's loggers included)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    LOG_PROMPTS["enabled"] = log_prompts


def prompts_logged() -> bool:
    return LOG_PROMPTS["enabled"]
