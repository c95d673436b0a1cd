"""The judge's vote is earned on held-out gold: the exact binomial test, the lower
confidence bound behind the vote weight, the gate, the choice between the zero-shot and
the STaR judge, the weighted combination policy, and a labels run where the judge has no
vote (no server needed) — pure logic with fakes."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from greyelephant.recipe import judge, labels
from greyelephant.recipe.common import load_jsonl, split_gold

REPO = Path(__file__).resolve().parents[3]
SEEDS = REPO / "recipe" / "data" / "seeds.jsonl"
GOLD = REPO / "recipe" / "data" / "gold_pairs.jsonl"


# ------------------------------------------------------------------ binomial test


def _tail_exact(k, n, p):
    p = Fraction(p)
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.parametrize("k, n", [(0, 5), (1, 1), (6, 9), (9, 9), (1, 7), (15, 20), (58, 58),
                                  (40, 77), (10, 0), (3, 2)])
def test_binomial_tail_is_exact_at_one_half(k, n):
    expected = _tail_exact(k, n, Fraction(1, 2)) if 0 < k <= n else (1 if k <= 0 else 0)
    assert judge.binomial_tail(k, n) == pytest.approx(float(expected), rel=1e-12, abs=0)


def test_binomial_tail_known_values():
    assert judge.binomial_tail(6, 9) == 130 / 512  # the 135M judge's 6 of 9: p = 0.254
    assert judge.binomial_tail(9, 9) == 1 / 512
    assert judge.binomial_tail(0, 9) == 1.0 and judge.binomial_tail(10, 9) == 0.0
    assert judge.binomial_tail(3, 10, 0.3) == pytest.approx(float(_tail_exact(3, 10, Fraction(3, 10))))


def test_lower_bound_solves_the_tail_equation():
    for k, n in [(58, 58), (15, 20), (30, 40), (1, 3)]:
        lb = judge.accuracy_lower_bound(k, n, 0.05)
        assert 0 < lb < k / n
        assert judge.binomial_tail(k, n, lb) == pytest.approx(0.05, abs=1e-6)
    assert judge.accuracy_lower_bound(58, 58) == pytest.approx(0.05 ** (1 / 58), abs=1e-9)
    assert judge.accuracy_lower_bound(0, 10) == 0.0 and judge.accuracy_lower_bound(0, 0) == 0.0


def test_weight_is_positive_exactly_when_the_test_rejects_chance():
    for n in range(0, 41):
        for k in range(0, n + 1):
            p = judge.binomial_tail(k, n)
            w = judge.vote_weight(k, n)
            assert (w > 0) == (p < 0.05), (k, n, p, w)
    # more evidence at the same accuracy weighs more; better accuracy weighs more
    assert judge.vote_weight(40, 50) > judge.vote_weight(16, 20) > 0
    assert judge.vote_weight(19, 20) > judge.vote_weight(16, 20)


# ------------------------------------------------------------------------- gate


def test_gate_of_a_position_biased_judge_gives_no_vote():
    g = judge.judge_gate({"pairs": 77, "decided": 9, "decided_correct": 6})
    assert g["decided_rate"] == round(9 / 77, 4) and g["accuracy_when_decided"] == 0.6667
    assert g["p_value"] == pytest.approx(0.2539, abs=1e-4)
    assert g["passes"] is False and g["weight"] == 0.0


def test_gate_of_the_rule_gives_a_vote():
    g = judge.judge_gate({"pairs": 77, "decided": 58, "decided_correct": 58})
    assert g["passes"] and g["p_value"] < 1e-15
    lb = 0.05 ** (1 / 58)
    assert g["weight"] == pytest.approx(math.log(lb / (1 - lb)), abs=1e-3)


def test_gate_unmeasured_and_legacy_metrics():
    assert judge.judge_gate(None)["weight"] == 0.0
    assert judge.judge_gate(None)["measured"] is False
    legacy = {"pairs": 77, "decided": 20, "accuracy_when_decided": 0.95}  # no decided_correct
    assert judge.judge_gate(legacy)["decided_correct"] == 19


def test_accuracy_records_decided_correct():
    js = [judge.Judgement("A", ("A", "B"), ("", "")), judge.Judgement(None, ("A", "A"), ("", "")),
          judge.Judgement("B", ("B", "A"), ("", ""))]
    m = judge.accuracy(js, ["A", "B", "A"])
    assert m["decided"] == 2 and m["decided_correct"] == 1


def test_better_judge_needs_to_beat_the_zero_shot_one():
    weak = {"pairs": 77, "decided": 9, "decided_correct": 6}
    strong = {"pairs": 77, "decided": 40, "decided_correct": 36}
    assert judge.better_judge(weak, strong) == "star"
    assert judge.better_judge(strong, weak) == "zero_shot"
    assert judge.better_judge(weak, weak) == "zero_shot"  # a tie is no win
    assert judge.better_judge(weak, None) == "zero_shot"
    # both without a vote: a trained judge that does not beat chance beats nobody
    assert judge.better_judge({"pairs": 77, "decided": 7, "decided_correct": 1},
                              {"pairs": 77, "decided": 10, "decided_correct": 6}) == "zero_shot"
    # both with a vote: the stronger evidence wins
    assert judge.better_judge({"pairs": 77, "decided": 30, "decided_correct": 24},
                              strong) == "star"


# ------------------------------------------------------------ weighted combination

RULE_W = judge.vote_weight(58, 58)  # ≈ 2.94


@pytest.mark.parametrize("rule, judge_vote, w_judge, expected", [
    ("A", "B", 0.0, ("A", "rule_only")),          # no vote, no veto
    ("A", None, 0.0, ("A", "rule_only")),
    ("A", "A", 0.0, ("A", "rule_only")),          # its agreement counts for nothing either
    ("A", "A", 0.5, ("A", "agree")),
    ("A", "B", 0.5, ("A", "outweighed")),         # a weak judge cannot veto a strong rule
    ("A", "B", 2.0, (None, "conflict")),          # a judge that earned it vetoes
    ("A", "B", RULE_W, (None, "conflict")),       # a tie is no label
    (None, "B", 0.5, (None, "low_confidence")),   # a weak judge alone labels nothing
    (None, "B", 3.0, ("B", "judge_only")),
    (None, "B", 0.0, (None, "undecided")),
    (None, None, 3.0, (None, "undecided")),
])
def test_weighted_combination(rule, judge_vote, w_judge, expected):
    weights = {"rule": RULE_W, "judge": w_judge}
    assert labels.combine(rule, judge_vote, None, weights=weights) == expected


def test_weighted_combination_gold_settles_and_rule_without_vote():
    weights = {"rule": RULE_W, "judge": 3.0}
    assert labels.combine("A", "A", "B", weights=weights) == ("B", "gold")
    assert labels.combine("A", None, None, weights={"rule": 0.0, "judge": 0.0}) == \
        (None, "undecided")
    assert labels.combine("A", None, None, require_agreement=True, weights=weights) == \
        (None, "single_source")


def _cand(i, a, b, gold=None):
    return {"id": f"p{i}", "source": "gold" if gold else "dpf", "seed_id": "s", "avoid": "Vans",
            "avoid_aliases": [], "prompt_messages": [], "response_a": a, "response_b": b,
            "gold": gold, "construction": None if gold else "A"}


def test_label_all_counts_what_each_source_decided():
    cands = [_cand(1, "Try Converse.", "Try Vans."), _cand(2, "Vans!", "Converse!"),
             _cand(3, "Vague.", "Converse, helpful.", gold="B")]
    js = [judge.Judgement("B", ("B", "A"), ("", "")), judge.Judgement(None, ("A", "A"), ("", "")),
          None]
    examples, decisions, _, src = labels.label_all(
        cands, js, False, weights={"rule": RULE_W, "judge": 0.0})
    assert [e["label"] for e in examples] == ["A", "B", "B"]
    assert decisions["dpf:rule_only"] == 2 and decisions["gold:gold"] == 1
    assert src["judge"] == {"asked": 2, "decided": 1, "counted": 0, "kept": 1,
                            "agrees_with_label": 0}
    assert src["rule"]["decided"] == 2 and src["rule"]["counted"] == 2
    assert src["gold"]["decided"] == 1 and src["gold"]["kept"] == 1
    assert examples[0]["weights"] == {"rule": RULE_W, "judge": 0.0}


def test_rule_is_measured_on_held_out_gold():
    seeds = {s["id"]: s for s in load_jsonl(SEEDS)}
    _, held = split_gold(load_jsonl(GOLD))
    m = labels.rule_held_out(held, seeds)
    assert m["pairs"] == len(held) and 0 < m["decided"] <= len(held)
    assert judge.judge_gate(m)["weight"] > 0  # the detector rule earns its vote


# --------------------------------------------------------- choosing the judge


def _stats(tmp_path, zero, star):
    path = tmp_path / "judge.stats.json"
    path.write_text(json.dumps({"zero_shot_held_out": zero, "star_held_out": star,
                                "adapter": str(tmp_path / "adapter")}))
    return path


def test_choose_judge_uses_the_star_adapter_only_when_it_wins(tmp_path):
    weak = {"pairs": 77, "decided": 9, "decided_correct": 6}
    strong = {"pairs": 77, "decided": 40, "decided_correct": 36}
    args = labels.build_parser().parse_args(["--judge-stats", str(_stats(tmp_path, weak, strong))])
    c = labels.choose_judge(args)
    assert c["kind"] == "star" and c["model"] == "judge-star"
    assert c["adapter"] == f"judge-star={tmp_path / 'adapter'}" and c["measured"] == strong
    args = labels.build_parser().parse_args(["--judge-stats", str(_stats(tmp_path, strong, weak))])
    c = labels.choose_judge(args)
    assert c["kind"] == "base" and c["adapter"] is None and c["measured"] == strong
    assert "does not beat" in c["why"]
    args = labels.build_parser().parse_args(["--judge-base-url", "http://judge:1/v1",
                                             "--judge-model", "big"])
    c = labels.choose_judge(args)
    assert c["kind"] == "endpoint" and c["model"] == "big" and c["measured"] is None


def test_labels_without_a_judge_vote_need_no_server(tmp_path):
    """judge_star measured a judge that does not beat chance: labels gives it no vote, does
    not ask it, starts no server (the base URL below answers nothing), labels by rule +
    gold, and records the gates."""
    seed = load_jsonl(SEEDS)[0]
    pair = {"id": "dpf-x", "seed_id": seed["id"], "avoid": seed["avoid"],
            "avoid_aliases": seed["avoid_aliases"], "prefer": seed["prefer"],
            "principle": "P", "messages": [{"role": "user", "content": "q"}],
            "prompt_messages": [{"role": "system", "content": "P"},
                                {"role": "user", "content": "q"}],
            "chosen": f"Try {seed['prefer']}.", "rejected": f"Try {seed['avoid']}."}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(pair) + "\n")
    stats = _stats(tmp_path, {"pairs": 77, "decided": 7, "decided_correct": 1},
                   {"pairs": 77, "decided": 10, "decided_correct": 3})
    out = tmp_path / "labels.jsonl"
    rc = labels.main(["--pairs", str(pairs), "--out", str(out), "--judge-stats", str(stats),
                      "--base-url", "http://127.0.0.1:9/v1"])
    assert rc == 0
    s = json.loads(out.with_suffix(".stats.json").read_text())
    assert s["weights"]["judge"] == 0.0 and s["weights"]["rule"] > 0
    assert s["gates"]["judge"]["passes"] is False and s["judge"]["asked"] is False
    assert s["judge"]["kind"] == "base"  # the STaR judge beats nobody without a vote
    assert s["decisions"]["dpf:rule_only"] == 1 and s["sources"]["judge"]["asked"] == 0
    rows = load_jsonl(out)
    assert rows[0]["chosen"] == pair["chosen"] and len(rows) == 1 + s["gold_train"]
