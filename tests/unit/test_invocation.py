"""The recorded command line reads as it was typed: console script or ``python -m``."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from greyelephant.invocation import command_line


def test_console_script(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/greyelephant", "eval", "--data", "a b.jsonl"])
    monkeypatch.setitem(sys.modules, "__main__", SimpleNamespace(__spec__=None))
    assert command_line() == "greyelephant eval --data 'a b.jsonl'"


def test_module_run_with_dash_m_and_explicit_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/repo/recipe/evaluate.py", "--x"])
    main = SimpleNamespace(__spec__=SimpleNamespace(name="greyelephant.recipe.evaluate"))
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert command_line() == "python -m greyelephant.recipe.evaluate --x"
    assert command_line(["--out", "dir"]) == "python -m greyelephant.recipe.evaluate --out dir"
