"""Checks for the shipped eval sets of entities that no training data names:
benchmarks/data/near_miss_entities.jsonl (the near-miss report file: less familiar entities
the embedded model half-knows), benchmarks/data/near_miss_tuning.jsonl (its tuning file:
rollback / near-miss settings are tuned on it, so the report file is only ever reported)
and benchmarks/data/heldout_entities.jsonl (the adapters' held-out entities: reported once
per shipped adapter, never tuned on). Checks 1-4 run for every file.

Every comparison of names goes through the project's one mention detector
(``greyelephant.control.detector``): case-, accent- and plural-insensitive, word-bounded.

1. No entity is shared with the recipe seeds, the gold pairs, the dev set or the other
   eval files of this list: no name/alias of ours mentions one of theirs, nor the other
   way round.
2. Within the file no two cases share an avoided entity; a case's prefer neither names its
   avoid (or an alias) nor is named by it.
3. The messages name neither the case's avoided entity (any alias) nor its prefer.
4. At least 120 cases in the report file, 60 in the tuning file and 100 in the held-out
   file, unique ids, at least 8 domains, every name at most 128 characters.

The dev set is the copy in benchmarks/data (``$GREYELEPHANT_DEV_SET`` overrides it,
greyelephant.benchmarks.datasets). If it cannot be
found the dev-set check fails (it never skips).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from greyelephant.benchmarks.datasets import dev_set

from greyelephant.benchmarks.steering_eval import load_cases
from greyelephant.control.detector import detector_for, find_mentions

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "benchmarks" / "data" / "near_miss_entities.jsonl"
TUNING = REPO / "benchmarks" / "data" / "near_miss_tuning.jsonl"
SEEDS = REPO / "recipe" / "data" / "seeds.jsonl"
GOLD = REPO / "recipe" / "data" / "gold_pairs.jsonl"
HELDOUT = REPO / "benchmarks" / "data" / "heldout_entities.jsonl"
# The principle is the server's directive for the gold pair's seed (recipe/data_check.py
# principle_for, control/directive.py): 'Do not mention "X" (also called "A" or "B") in
# your reply, …. Where relevant, discuss "Y" instead.'
PRINCIPLE = re.compile(r'^Do not mention "(?P<avoid>[^"]+)"(?: \(also called (?P<aliases>.+?)\))? '
                       r'in your reply, under any name, spelling or form\. Where relevant, '
                       r'discuss "(?P<prefer>[^"]+)" instead\.$')
QUOTED = re.compile(r'"([^"]+)"')

EVAL_FILES = {"report": DATA, "tuning": TUNING, "heldout": HELDOUT}
MIN_CASES = {DATA: 120, TUNING: 60, HELDOUT: 100}
MIN_DOMAINS = 8
MAX_NAME_CHARS = 128
ROLES = {"system", "user", "assistant"}

Entity = tuple[str, tuple[str, ...]]  # (name, aliases): one entity and its alternative names


def dev_set_path() -> Path:
    path = dev_set()
    if not path.is_file():
        pytest.fail(f"dev set not found: {path}")
    return path


def read_jsonl(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert rows, f"{path} has no records"
    return rows


def case_entities(record: dict) -> list[Entity]:
    """The avoided entity (with its aliases) and the preferred one, as two entities."""
    return [(record["avoid"], tuple(record.get("avoid_aliases") or ())),
            (record["prefer"], ())]


def gold_entities(record: dict) -> list[Entity]:
    m = PRINCIPLE.match(record["principle"])
    assert m, f"gold pair {record['id']}: principle not in the recipe template: {record['principle']!r}"
    aliases = tuple(QUOTED.findall(m["aliases"] or ""))
    return [(m["avoid"], aliases), (m["prefer"], ())]


def names_of(entities: Sequence[Entity]) -> list[str]:
    return [s for name, aliases in entities for s in (name, *aliases)]


def overlaps(ours: Sequence[Entity], theirs: Sequence[Entity]) -> list[str]:
    """Pairs (our entity, their name) or (their entity, our name) where the entity's
    detector finds a mention in the name. One detector per side finds whether any
    entity of that side is mentioned; the offending pairs are then named one by one."""
    problems = []
    for side_a, side_b, label in ((ours, theirs, "ours {} mentioned in theirs {!r}"),
                                  (theirs, ours, "theirs {} mentioned in ours {!r}")):
        combined = detector_for(side_a)
        for text in sorted(set(names_of(side_b))):
            if not combined.find(text):
                continue
            for name, aliases in side_a:
                if find_mentions(text, name, aliases):
                    problems.append(label.format(name, text))
    return problems


@pytest.fixture(scope="module", params=list(EVAL_FILES.values()), ids=list(EVAL_FILES))
def data_path(request) -> Path:
    return request.param


@pytest.fixture(scope="module")
def cases(data_path) -> list[dict]:
    return load_cases(data_path)


@pytest.fixture(scope="module")
def ours(cases) -> list[Entity]:
    return [e for c in cases for e in case_entities(c)]


def test_shape_and_counts(data_path, cases):
    assert len(cases) >= MIN_CASES[data_path], len(cases)
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "duplicate ids"
    domains = {c["domain"] for c in cases}
    assert len(domains) >= MIN_DOMAINS, sorted(domains)
    for c in cases:
        assert isinstance(c["domain"], str) and c["domain"].strip(), c["id"]
        assert isinstance(c["avoid_aliases"], list), c["id"]
        for name in [c["avoid"], c["prefer"], *c["avoid_aliases"]]:
            assert isinstance(name, str) and name.strip(), (c["id"], name)
            assert len(name) <= MAX_NAME_CHARS, (c["id"], name)
        msgs = c["messages"]
        assert isinstance(msgs, list) and msgs, c["id"]
        for m in msgs:
            assert m["role"] in ROLES and isinstance(m["content"], str) and m["content"].strip()
        assert msgs[-1]["role"] == "user", c["id"]


# Every (eval file, other repo set) pair except a file with itself, which
# test_avoided_entities_distinct covers.
REPO_SET_PAIRS = [
    pytest.param(mine, other, id=f"{mine_id}-vs-{other_id}")
    for mine_id, mine in EVAL_FILES.items()
    for other_id, other in {"seeds": SEEDS, **EVAL_FILES}.items()
    if other != mine
]


@pytest.mark.parametrize(("mine", "other"), REPO_SET_PAIRS)
def test_no_entity_shared_with_repo_sets(mine, other):
    ours = [e for r in load_cases(mine) for e in case_entities(r)]
    theirs = [e for r in read_jsonl(other) for e in case_entities(r)]
    assert overlaps(ours, theirs) == []


def test_no_entity_shared_with_gold_pairs(ours):
    theirs = [e for r in read_jsonl(GOLD) for e in gold_entities(r)]
    assert overlaps(ours, theirs) == []


def test_no_entity_shared_with_dev_set(ours):
    theirs = [e for r in load_cases(dev_set_path()) for e in case_entities(r)]
    assert overlaps(ours, theirs) == []


def test_avoided_entities_distinct(cases):
    problems = []
    for i, a in enumerate(cases):
        for b in cases[i + 1:]:
            for x, y in ((a, b), (b, a)):
                for text in (y["avoid"], *y["avoid_aliases"]):
                    if find_mentions(text, x["avoid"], x["avoid_aliases"]):
                        problems.append(f"{x['id']} avoid {x['avoid']!r} in {y['id']}: {text!r}")
    assert problems == []


def test_prefer_apart_from_avoid(cases):
    problems = []
    for c in cases:
        if find_mentions(c["prefer"], c["avoid"], c["avoid_aliases"]):
            problems.append(f"{c['id']}: prefer {c['prefer']!r} names the avoided entity")
        for text in (c["avoid"], *c["avoid_aliases"]):
            if find_mentions(text, c["prefer"]):
                problems.append(f"{c['id']}: avoid name {text!r} names prefer {c['prefer']!r}")
    assert problems == []


def test_messages_name_neither_avoid_nor_prefer(cases):
    problems = []
    for c in cases:
        for m in c["messages"]:
            for span in find_mentions(m["content"], c["avoid"], c["avoid_aliases"]):
                problems.append(f"{c['id']}: avoided {span.text!r} in a {m['role']} message")
            for span in find_mentions(m["content"], c["prefer"]):
                problems.append(f"{c['id']}: prefer {span.text!r} in a {m['role']} message")
    assert problems == []
