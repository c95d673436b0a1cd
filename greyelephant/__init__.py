"""greyelephant: an OpenAI-compatible LLM server with per-request steering."""
__version__ = "0.1.0"
