"""Checks for the hand-written recipe data (seeds and gold preference pairs).

* ``validate_seeds`` / ``validate_gold`` raise ``ValueError`` on schema problems.
* ``check_disjoint`` lists the entities a seeds file shares with an evaluation file
  (avoid, aliases and prefer on both sides, compared after ``normalize_entity``, the
  project's fold).
* ``mentions`` checks that chosen responses, prompts and assistant turns never name the
  avoided entity, with the project's one detector (``greyelephant.control.detector``).
* ``principle_for`` is the server's directive text (``greyelephant.control.directive``)
  for a seed: the gold pairs are judged against the principle the server states.

Command line::

    python -m greyelephant.recipe.data_check \\
        --seeds recipe/data/seeds.jsonl --eval ../shared/evals/pink_elephant_dev.jsonl

exits 0 when the data validates and no entity overlaps, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from greyelephant.control.detector import detector_for
from greyelephant.control.directive import build_directive
from greyelephant.control.normalize import fold_form
from greyelephant.control.spec import SteeringSpec

DATA_DIR = Path(__file__).resolve().parent / "data"
SEEDS_PATH = DATA_DIR / "seeds.jsonl"
GOLD_PATH = DATA_DIR / "gold_pairs.jsonl"

SEED_KEYS = ("id", "domain", "avoid", "avoid_aliases", "prefer", "prompts", "dialogue")
GOLD_KEYS = (
    "id",
    "seed_id",
    "principle",
    "messages",
    "response_a",
    "response_b",
    "label",
    "rationale",
    "labeling",
)
ROLES = ("system", "user", "assistant")


# --------------------------------------------------------------------------- loading


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file: one JSON object per non-blank line."""
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise ValueError(
                    f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}"
                )
            records.append(record)
    return records


# ------------------------------------------------------------------------- entities


def normalize_entity(s: str) -> str:
    """Canonical form for comparing entity names: the project's fold (case, accents,
    separators and apostrophes folded, see ``greyelephant.control.normalize``)."""
    return fold_form(s)


def entity_names(record: dict[str, Any]) -> list[str]:
    """The entity names of a seed or evaluation record: avoid, its aliases, prefer."""
    names: list[str] = []
    avoid = record.get("avoid")
    if isinstance(avoid, str) and avoid.strip():
        names.append(avoid)
    for alias in record.get("avoid_aliases") or []:
        if isinstance(alias, str) and alias.strip():
            names.append(alias)
    prefer = record.get("prefer")
    if isinstance(prefer, str) and prefer.strip():
        names.append(prefer)
    return names


def overlapping_entities(
    records: Iterable[dict[str, Any]], others: Iterable[dict[str, Any]]
) -> list[str]:
    """Names from ``records`` whose normalised form also names an entity in ``others``.

    Returned as spelled in ``records`` (first spelling of each normalised form),
    sorted by normalised form.
    """
    taken = {normalize_entity(n) for r in others for n in entity_names(r)}
    found: dict[str, str] = {}
    for record in records:
        for name in entity_names(record):
            key = normalize_entity(name)
            if key in taken and key not in found:
                found[key] = name
    return [found[k] for k in sorted(found)]


def check_disjoint(seeds_path: str | Path, eval_path: str | Path) -> list[str]:
    """Entity names shared by a seeds file and an evaluation file (empty when disjoint)."""
    return overlapping_entities(load_jsonl(seeds_path), load_jsonl(eval_path))


def mentions(text: str, names: Sequence[str]) -> bool:
    """True when ``text`` mentions any of ``names`` (the project's detector: case-,
    accent- and separator-insensitive, word-bounded, plurals and possessives)."""
    names = [n for n in names if n.strip()]
    return bool(names) and detector_for(names).mentions(text)


def principle_for(seed: dict[str, Any]) -> str:
    """The principle the server states for a seed's avoid / prefer (its directive)."""
    spec = SteeringSpec.model_validate({
        "avoid": [{"entity": seed["avoid"], "aliases": seed.get("avoid_aliases") or []}],
        "prefer": [seed["prefer"]]})
    return build_directive(spec)


# ----------------------------------------------------------------------- validation


def _where(kind: str, index: int, record: dict[str, Any]) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"{kind} record {index}" + (f" (id={rid!r})" if rid else "")


def _require_keys(where: str, record: dict[str, Any], keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")


def _require_text(where: str, record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} must be a non-empty string")
    return value


def _validate_messages(where: str, messages: Any, key: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: {key!r} must be a non-empty list of messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or set(msg) != {"role", "content"}:
            raise ValueError(
                f"{where}: {key}[{i}] must be an object with exactly 'role' and 'content'"
            )
        if msg["role"] not in ROLES:
            raise ValueError(f"{where}: {key}[{i}] has unknown role {msg['role']!r}")
        if not isinstance(msg["content"], str) or not msg["content"].strip():
            raise ValueError(f"{where}: {key}[{i}] has empty content")
        if msg["role"] == "system" and i != 0:
            raise ValueError(f"{where}: {key}[{i}] system message must come first")
    turns = [m["role"] for m in messages if m["role"] != "system"]
    if not turns:
        raise ValueError(f"{where}: {key!r} has no user turn")
    for prev, cur in zip(turns, turns[1:], strict=False):
        if prev == cur:
            raise ValueError(f"{where}: {key!r} must alternate user and assistant turns")
    if turns[0] != "user":
        raise ValueError(f"{where}: {key!r} must start with a user turn")
    if turns[-1] != "user":
        raise ValueError(f"{where}: {key!r} must end with a user turn")


def validate_seeds(records: Sequence[dict[str, Any]]) -> None:
    """Raise ``ValueError`` describing the first schema problem in a list of seeds."""
    if not records:
        raise ValueError("seeds: no records")
    ids: set[str] = set()
    avoids: dict[str, str] = {}
    for index, record in enumerate(records):
        where = _where("seeds", index, record)
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object")
        _require_keys(where, record, SEED_KEYS)
        rid = _require_text(where, record, "id")
        if rid in ids:
            raise ValueError(f"{where}: duplicate id {rid!r}")
        ids.add(rid)
        _require_text(where, record, "domain")
        avoid = _require_text(where, record, "avoid")
        prefer = _require_text(where, record, "prefer")
        aliases = record["avoid_aliases"]
        if not isinstance(aliases, list) or not all(
            isinstance(a, str) and a.strip() for a in aliases
        ):
            raise ValueError(f"{where}: 'avoid_aliases' must be a list of non-empty strings")
        avoid_forms = {normalize_entity(avoid)} | {normalize_entity(a) for a in aliases}
        if normalize_entity(prefer) in avoid_forms:
            raise ValueError(f"{where}: prefer {prefer!r} is the avoided entity or an alias")
        key = normalize_entity(avoid)
        if key in avoids:
            raise ValueError(f"{where}: avoided entity {avoid!r} already used by {avoids[key]!r}")
        avoids[key] = rid
        prompts = record["prompts"]
        if not isinstance(prompts, list) or not prompts:
            raise ValueError(f"{where}: 'prompts' must be a non-empty list")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{where}: prompts[{i}] is empty")
        dialogue = record["dialogue"]
        _validate_messages(where, dialogue, "dialogue")
        if len([m for m in dialogue if m["role"] != "system"]) < 3:
            raise ValueError(f"{where}: 'dialogue' needs at least user/assistant/user turns")


def validate_gold(
    records: Sequence[dict[str, Any]], seeds: Sequence[dict[str, Any]] | None = None
) -> None:
    """Raise ``ValueError`` describing the first schema problem in a list of gold pairs.

    With ``seeds``, also check that every ``seed_id`` exists and that the principle
    names that seed's avoided and preferred entities.
    """
    if not records:
        raise ValueError("gold: no records")
    by_id = {s["id"]: s for s in seeds} if seeds is not None else None
    ids: set[str] = set()
    for index, record in enumerate(records):
        where = _where("gold", index, record)
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object")
        _require_keys(where, record, GOLD_KEYS)
        rid = _require_text(where, record, "id")
        if rid in ids:
            raise ValueError(f"{where}: duplicate id {rid!r}")
        ids.add(rid)
        seed_id = _require_text(where, record, "seed_id")
        principle = _require_text(where, record, "principle")
        _validate_messages(where, record["messages"], "messages")
        a = _require_text(where, record, "response_a")
        b = _require_text(where, record, "response_b")
        if a.strip() == b.strip():
            raise ValueError(f"{where}: response_a and response_b are identical")
        label = record["label"]
        if label not in ("A", "B"):
            raise ValueError(f"{where}: label must be 'A' or 'B', got {label!r}")
        _require_text(where, record, "rationale")
        _require_text(where, record, "labeling")
        if by_id is not None:
            if seed_id not in by_id:
                raise ValueError(f"{where}: unknown seed_id {seed_id!r}")
            expected = principle_for(by_id[seed_id])
            if principle != expected:
                raise ValueError(
                    f"{where}: principle {principle!r} does not match seed "
                    f"{seed_id!r} (expected {expected!r})"
                )


# ------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m greyelephant.recipe.data_check",
        description="Validate recipe seeds/gold pairs and check the seeds share no "
        "entity with evaluation sets.",
    )
    parser.add_argument(
        "--seeds",
        type=Path,
        default=SEEDS_PATH,
        help="seeds JSONL (default: the shipped recipe/data/seeds.jsonl)",
    )
    parser.add_argument(
        "--gold",
        type=Path,
        default=None,
        help="gold pairs JSONL to validate against the seeds "
        "(default: the shipped file when checking the shipped seeds)",
    )
    parser.add_argument(
        "--eval",
        type=Path,
        action="append",
        default=[],
        required=True,
        help="evaluation JSONL the seeds must be disjoint from (repeatable)",
    )
    args = parser.parse_args(argv)

    gold_path = args.gold
    if gold_path is None and args.seeds.resolve() == SEEDS_PATH and GOLD_PATH.exists():
        gold_path = GOLD_PATH

    try:
        seeds = load_jsonl(args.seeds)
        validate_seeds(seeds)
        print(f"{args.seeds}: {len(seeds)} seeds OK")
        if gold_path is not None:
            gold = load_jsonl(gold_path)
            validate_gold(gold, seeds)
            print(f"{gold_path}: {len(gold)} gold pairs OK")
        overlaps: dict[Path, list[str]] = {}
        for eval_path in args.eval:
            overlaps[eval_path] = overlapping_entities(seeds, load_jsonl(eval_path))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    status = 0
    for eval_path, names in overlaps.items():
        if names:
            status = 1
            print(
                f"error: {args.seeds} shares {len(names)} entit"
                f"{'y' if len(names) == 1 else 'ies'} with {eval_path}: " + ", ".join(names),
                file=sys.stderr,
            )
        else:
            print(f"{args.seeds}: disjoint from {eval_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
