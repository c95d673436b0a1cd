"""The evaluation files shipped in ``benchmarks/data/`` (the DESIGN.md eval format), found
relative to this package — in a checkout and in an installed package alike.

* ``dev_set()`` — the public dev set (30 cases), a copy of the project's shared
  ``evals/pink_elephant_dev.jsonl``; ``$GREYELEPHANT_DEV_SET`` points elsewhere;
* ``near_miss_set()`` — 163 less familiar entities (rollback / near-miss evaluation);
* ``heldout_set()`` — the adapters' held-out entities.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def dev_set() -> Path:
    return Path(os.environ.get("GREYELEPHANT_DEV_SET") or DATA / "pink_elephant_dev.jsonl")


def near_miss_set() -> Path:
    return DATA / "near_miss_entities.jsonl"


def heldout_set() -> Path:
    return DATA / "heldout_entities.jsonl"
