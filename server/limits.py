"""Explicit request limits (documented in docs/api.md). Anything past them gets a 400
(or 413 for the body size) in OpenAI's error shape."""

MAX_BODY_BYTES = 4 * 1024 * 1024  # whole request body; override with --max-body-bytes
MAX_N = 16  # choices per request
MAX_PROMPTS = 64  # prompts in one /v1/completions batch
MAX_MESSAGES = 512  # chat messages per request
MAX_STOP = 16  # stop strings (and stop_token_ids)
MAX_STOP_CHARS = 256
MAX_LOGIT_BIAS = 1024  # logit_bias entries
MAX_LOGPROBS = 20  # top_logprobs / completions logprobs
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
