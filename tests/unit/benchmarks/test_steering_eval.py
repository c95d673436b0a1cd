import json

import pytest

from greyelephant.benchmarks.steering_eval import load_cases, parse_rows, steering_for, summarise


def test_load_cases_validates_and_defaults(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps({"id": "a", "avoid": "X", "prefer": "Y",
                                "messages": [{"role": "user", "content": "q"}]}) + "\n\n")
    (case,) = load_cases(path)
    assert case["avoid_aliases"] == []
    path.write_text(json.dumps({"id": "a", "avoid": "X"}) + "\n")
    with pytest.raises(ValueError, match="missing"):
        load_cases(path)


def test_rows_and_specs():
    rows = parse_rows("none, directive+logits")
    assert rows == [("none", []), ("directive+logits", ["directive", "logits"])]
    case = {"avoid": "Nike", "avoid_aliases": ["Nikes"], "prefer": "Adidas"}
    assert steering_for(case, [], None) is None
    spec = steering_for(case, ["logits"], 1)
    assert spec == {"avoid": [{"entity": "Nike", "aliases": ["Nikes"]}], "prefer": ["Adidas"],
                    "strategies": ["logits"], "max_revisions": 1}


def test_summary_rates():
    recs = [
        {"mention": True, "near_miss": False, "prefer_named": False, "degenerate": None,
         "latency_s": 1.0, "completion_tokens": 10, "steering": None},
        {"mention": False, "near_miss": True, "prefer_named": True, "degenerate": "repetitive",
         "latency_s": 3.0, "completion_tokens": 20, "steering": {"revisions": 2, "rollbacks": 3}},
    ]
    s = summarise(recs)
    assert (s["mention_rate"], s["prefer_rate"], s["degenerate_rate"]) == (0.5, 0.5, 0.5)
    assert s["near_miss_rate"] == 0.5 and s["rollbacks_per_case"] == 1.5
    assert s["latency_p50_s"] == 2.0 and s["revisions"] == 2 and s["mean_completion_tokens"] == 15
