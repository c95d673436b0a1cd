"""The command line a process was started with, as a person would type it again."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def command_line(argv: list[str] | None = None) -> str:
    """``python -m greyelephant.recipe.evaluate …`` for a module run with ``-m``,
    ``greyelephant eval …`` for the console script; ``argv`` replaces ``sys.argv[1:]``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = f"python -m {spec.name}" if spec is not None and spec.name else Path(sys.argv[0]).name
    return " ".join([head, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
