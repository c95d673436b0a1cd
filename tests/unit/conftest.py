"""Fixtures for the unit tests: the real tokenizer of the embedded model
(GREYELEPHANT_MODEL_DIR if set, else the embedded model, converted on first use)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from greyelephant.model_store import default_model_dir

    return AutoTokenizer.from_pretrained(default_model_dir())


@pytest.fixture(scope="session")
def vocab_index(tokenizer):
    from greyelephant.control.vocab_index import vocab_index_for

    return vocab_index_for(tokenizer)
