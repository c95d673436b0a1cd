"""Fail closed at start-up: a kernel path that cannot load stops the steering processor
(and so the engine) when it is built, never a silent per-call fallback."""

from __future__ import annotations

import sys

import pytest
import torch

import greyelephant.kernels as kernels
from greyelephant.control.logits_processor import SteeringLogitsProcessor, kernel_path


def test_the_cpu_path_loads_and_is_named(vocab_index):
    assert kernel_path("cpu") == "torch"
    proc = SteeringLogitsProcessor(None, torch.device("cpu"), False, index=vocab_index)
    assert proc.index is vocab_index


def test_a_triton_path_that_cannot_load_stops_the_processor(monkeypatch, vocab_index):
    # None in sys.modules makes the import raise ImportError
    monkeypatch.setitem(sys.modules, "greyelephant.kernels.logit_controls_triton", None)
    monkeypatch.delattr(kernels, "logit_controls_triton", raising=False)
    with pytest.raises(ImportError):
        SteeringLogitsProcessor(None, torch.device("cuda"), False, index=vocab_index)
