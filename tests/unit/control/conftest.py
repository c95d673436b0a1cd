"""Fixtures for the steering core tests: the real tokenizer of the embedded model.

The model directory comes from GREYELEPHANT_MODEL_DIR (default /tmp/smol); tests that need
it are skipped only when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MODEL_DIR = Path(os.environ.get("GREYELEPHANT_MODEL_DIR", "/tmp/smol"))


@pytest.fixture(scope="session")
def tokenizer():
    if not (MODEL_DIR / "tokenizer.json").exists() and not (
        MODEL_DIR / "tokenizer_config.json"
    ).exists():
        pytest.skip(f"no tokenizer at {MODEL_DIR} (set GREYELEPHANT_MODEL_DIR)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(MODEL_DIR))


@pytest.fixture(scope="session")
def vocab_index(tokenizer):
    from greyelephant.control.vocab_index import vocab_index_for

    return vocab_index_for(tokenizer)
