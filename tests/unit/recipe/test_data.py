"""The hand-written recipe data: schema, size, disjointness from the dev set, balance."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "recipe" / "data"
SEEDS = DATA / "seeds.jsonl"
GOLD = DATA / "gold_pairs.jsonl"
DEV = Path(__file__).resolve().parents[3].parent / "shared" / "evals" / "pink_elephant_dev.jsonl"


def _load_data_check():
    try:
        return importlib.import_module("greyelephant.recipe.data_check")
    except ImportError:  # package not installed: load the file directly
        spec = importlib.util.spec_from_file_location(
            "greyelephant_recipe_data_check", REPO / "recipe" / "data_check.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


dc = _load_data_check()


@pytest.fixture(scope="module")
def seeds():
    return dc.load_jsonl(SEEDS)


@pytest.fixture(scope="module")
def gold():
    return dc.load_jsonl(GOLD)


def _write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _seed(**overrides):
    record = {
        "id": "seed-x",
        "domain": "tests",
        "avoid": "Foo Cola",
        "avoid_aliases": ["Foo"],
        "prefer": "Bar Cola",
        "prompts": ["Which cola is the most famous?"],
        "dialogue": [
            {"role": "user", "content": "I'm thirsty."},
            {"role": "assistant", "content": "A cold drink would help."},
            {"role": "user", "content": "Which cola should I buy?"},
        ],
    }
    record.update(overrides)
    return record


# ------------------------------------------------------------------ shipped data


def test_seeds_validate_and_size(seeds):
    dc.validate_seeds(seeds)
    assert len(seeds) >= 300


def test_gold_validates_against_seeds_and_size(seeds, gold):
    dc.validate_gold(gold, seeds)
    assert len(gold) >= 100


def test_avoid_entities_unique(seeds):
    keys = [dc.normalize_entity(s["avoid"]) for s in seeds]
    dupes = [k for k, n in Counter(keys).items() if n > 1]
    assert not dupes


def test_seeds_cover_many_domains(seeds):
    assert len({s["domain"] for s in seeds}) >= 100


@pytest.mark.skipif(not DEV.exists(), reason=f"dev set not found at {DEV}")
def test_seeds_disjoint_from_dev_set(seeds):
    assert dc.check_disjoint(SEEDS, DEV) == []
    dev_names = [n for r in dc.load_jsonl(DEV) for n in dc.entity_names(r)]
    # No seed entity even contains a dev entity as a word ("Google Maps" for "Google").
    containing = [n for s in seeds for n in dc.entity_names(s) if dc.mentions(n, dev_names)]
    assert containing == []


@pytest.mark.parametrize("name", ["pink_elephant_dev.jsonl", "heldout_entities.jsonl",
                                  "near_miss_entities.jsonl", "near_miss_tuning.jsonl"])
def test_seeds_disjoint_from_shipped_eval_files(seeds, name):
    """What ``make adapter`` passes to the data command (which refuses any overlap); the
    detector-level check in both directions is tests/unit/benchmarks/test_near_miss_entities.py."""
    path = REPO / "benchmarks" / "data" / name
    assert dc.check_disjoint(SEEDS, path) == []


def test_gold_labels_balanced(gold):
    share_a = sum(g["label"] == "A" for g in gold) / len(gold)
    assert 0.35 <= share_a <= 0.65


def test_gold_uses_only_seed_entities(seeds, gold):
    by_id = {s["id"]: s for s in seeds}
    for g in gold:
        assert g["principle"] == dc.principle_for(by_id[g["seed_id"]])


def test_chosen_gold_response_never_mentions_avoided_entity(seeds, gold):
    by_id = {s["id"]: s for s in seeds}
    for g in gold:
        seed = by_id[g["seed_id"]]
        chosen = g["response_a"] if g["label"] == "A" else g["response_b"]
        assert not dc.mentions(chosen, [seed["avoid"], *seed["avoid_aliases"]]), g["id"]


def test_gold_mixes_mention_and_clean_pairs(seeds, gold):
    by_id = {s["id"]: s for s in seeds}
    rejected_mentions = 0
    for g in gold:
        seed = by_id[g["seed_id"]]
        rejected = g["response_b"] if g["label"] == "A" else g["response_a"]
        rejected_mentions += dc.mentions(rejected, [seed["avoid"], *seed["avoid_aliases"]])
    # Most pairs turn on a mention, but a real share are both-clean quality judgements.
    assert 0.5 * len(gold) <= rejected_mentions <= 0.9 * len(gold)


def test_prompts_and_assistant_turns_do_not_name_avoided_entity(seeds):
    for s in seeds:
        forms = [s["avoid"], *s["avoid_aliases"]]
        texts = s["prompts"] + [m["content"] for m in s["dialogue"] if m["role"] == "assistant"]
        assert not any(dc.mentions(t, forms) for t in texts), s["id"]


# ------------------------------------------------------------------ the checker


def test_check_disjoint_catches_injected_overlap(tmp_path, seeds):
    eval_path = _write_jsonl(
        tmp_path / "eval.jsonl",
        [
            {
                "id": "t-0",
                "domain": "tests",
                "avoid": "Entity Nobody Uses",
                "avoid_aliases": ["rolex"],
                "prefer": "Another Unused Entity",
                "messages": [{"role": "user", "content": "hi"}],
            }
        ],
    )
    assert dc.check_disjoint(SEEDS, eval_path) == ["Rolex"]

    injected = [
        *seeds,
        _seed(id="seed-injected", avoid="Coca\u2013Cola", avoid_aliases=[], prefer="Tour_Eiffel"),
    ]
    seeds_path = _write_jsonl(tmp_path / "seeds.jsonl", injected)
    dev_like = _write_jsonl(
        tmp_path / "dev.jsonl",
        [
            {
                "id": "d-0",
                "avoid": "Coca-Cola",
                "avoid_aliases": ["Coke"],
                "prefer": "Pepsi",
                "messages": [{"role": "user", "content": "?"}],
            },
            {
                "id": "d-1",
                "avoid": "Eiffel Tower",
                "avoid_aliases": ["Tour Eiffel"],
                "prefer": "Louvre",
                "messages": [{"role": "user", "content": "?"}],
            },
        ],
    )
    assert dc.check_disjoint(seeds_path, dev_like) == ["Coca\u2013Cola", "Tour_Eiffel"]


def test_cli_exit_codes(tmp_path):
    eval_ok = _write_jsonl(
        tmp_path / "ok.jsonl",
        [
            {
                "id": "t",
                "avoid": "Entity Nobody Uses",
                "avoid_aliases": [],
                "prefer": "Nor This",
                "messages": [{"role": "user", "content": "?"}],
            }
        ],
    )
    eval_bad = _write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {
                "id": "t",
                "avoid": "KITKAT",
                "avoid_aliases": [],
                "prefer": "Nor This",
                "messages": [{"role": "user", "content": "?"}],
            }
        ],
    )
    if dc.__name__ == "greyelephant.recipe.data_check":
        cmd = [sys.executable, "-m", "greyelephant.recipe.data_check", "--seeds", str(SEEDS)]
    else:  # not installed: run the file as a script
        cmd = [sys.executable, str(REPO / "recipe" / "data_check.py"), "--seeds", str(SEEDS)]
    ok = subprocess.run([*cmd, "--eval", str(eval_ok)], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*cmd, "--eval", str(eval_bad)], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "KitKat" in bad.stderr


def test_normalize_entity():
    assert dc.normalize_entity("  Coca\u2011Cola ") == "coca cola"
    assert dc.normalize_entity("Tour_Eiffel") == "tour eiffel"
    assert dc.normalize_entity("McDonald\u2019s") == "mcdonald s" == dc.normalize_entity("McDonald's")
    assert dc.normalize_entity("\uff2c\uff25\uff27\uff2f") == "lego"  # fullwidth, NFKC
    assert dc.normalize_entity("Big   Ben") == "big ben"


def test_entity_names():
    assert dc.entity_names(_seed()) == ["Foo Cola", "Foo", "Bar Cola"]
    assert dc.entity_names({"avoid": "X", "prefer": "Y"}) == ["X", "Y"]


def test_mentions_surface_forms():
    names = ["Coca-Cola", "Coke"]
    assert dc.mentions("I love coca cola.", names)
    assert dc.mentions("CocaCola's new ad", names)
    assert dc.mentions("two Cokes please", names)
    assert not dc.mentions("Coca-coloa is not a word", names)
    assert not dc.mentions("coked up", names)
    assert dc.mentions("Ben and Jerry\u2019s", ["Ben and Jerry's"])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("prefer"), "missing key"),
        (lambda r: r.update(prompts=[]), "prompts"),
        (lambda r: r.update(prompts=["  "]), r"prompts\[0\] is empty"),
        (lambda r: r.update(avoid_aliases="Foo"), "avoid_aliases"),
        (lambda r: r.update(prefer="foo"), "prefer"),
        (lambda r: r["dialogue"].pop(), "end with a user turn"),
        (lambda r: r["dialogue"].insert(0, {"role": "user", "content": "hi"}), "alternate"),
        (
            lambda r: r["dialogue"].insert(0, {"role": "assistant", "content": "hi"}),
            "start with a user",
        ),
        (lambda r: r.update(dialogue=r["dialogue"][:1]), "at least"),
        (lambda r: r["dialogue"][0].update(role="robot"), "unknown role"),
    ],
)
def test_validate_seeds_rejects(mutate, message):
    record = json.loads(json.dumps(_seed()))
    mutate(record)
    with pytest.raises(ValueError, match=message):
        dc.validate_seeds([record])


def test_validate_seeds_rejects_duplicate_avoid():
    with pytest.raises(ValueError, match="already used"):
        dc.validate_seeds([_seed(id="a"), _seed(id="b", avoid="foo-cola")])


def _gold(**overrides):
    record = {
        "id": "gold-x",
        "seed_id": "seed-x",
        "principle": "Do not mention Foo Cola; where relevant, discuss Bar Cola instead.",
        "messages": [{"role": "user", "content": "Which cola?"}],
        "response_a": "Try Bar Cola.",
        "response_b": "Foo Cola, obviously.",
        "label": "A",
        "rationale": "B names Foo Cola.",
        "labeling": "hand-written",
    }
    record.update(overrides)
    return record


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"label": "C"}, "label"),
        ({"label": "a"}, "label"),
        ({"response_b": "Try Bar Cola."}, "identical"),
        ({"rationale": ""}, "rationale"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "end with a user turn",
        ),
        ({"seed_id": "seed-missing"}, "unknown seed_id"),
        ({"principle": "Do not mention Bar Cola."}, "principle"),
    ],
)
def test_validate_gold_rejects(overrides, message):
    with pytest.raises(ValueError, match=message):
        dc.validate_gold([_gold(**overrides)], [_seed()])


def test_validate_gold_rejects_missing_key():
    record = _gold()
    del record["labeling"]
    with pytest.raises(ValueError, match="missing key"):
        dc.validate_gold([record])


def test_load_jsonl_reports_bad_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": 1}\n\n{not json}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.jsonl:3"):
        dc.load_jsonl(path)
