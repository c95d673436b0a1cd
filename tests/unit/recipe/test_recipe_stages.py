"""The recipe's pure logic: DPF item selection and revision cleanup, the label sources and
the combination policy, the judge's order-swap rule and accuracy, the gold split, the STaR
letter swap, the DPO rows, the eval acceptance check; and that the data command refuses a
seeds file that overlaps an eval file (before any server starts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greyelephant.recipe import dpf_data, judge, judge_star, labels
from greyelephant.recipe.common import load_jsonl, split_gold, unit_hash
from greyelephant.recipe.dpo import to_dataset_rows
from greyelephant.recipe.evaluate import acceptance

REPO = Path(__file__).resolve().parents[3]
SEEDS = REPO / "recipe" / "data" / "seeds.jsonl"
GOLD = REPO / "recipe" / "data" / "gold_pairs.jsonl"
DEV = REPO.parent / "shared" / "evals" / "pink_elephant_dev.jsonl"


# ----------------------------------------------------------------------------- data


def test_seed_items_cover_prompts_and_dialogues():
    seeds = load_jsonl(SEEDS)
    items = dpf_data.seed_items(seeds)
    assert len(items) == sum(len(s["prompts"]) + 1 for s in seeds)
    assert len({it["key"] for it in items}) == len(items)
    assert {it["kind"] for it in items} == {"prompt", "dialogue"}
    assert all(it["messages"][-1]["role"] == "user" for it in items)


def test_select_items_is_deterministic_per_seed():
    items = dpf_data.seed_items(load_jsonl(SEEDS))
    a = [it["key"] for it in dpf_data.select_items(items, 20, seed=0)]
    b = [it["key"] for it in dpf_data.select_items(items, 20, seed=0)]
    c = [it["key"] for it in dpf_data.select_items(items, 20, seed=1)]
    assert a == b and a != c and len(a) == 20
    assert len(dpf_data.select_items(items, None, 0)) == len(items)


@pytest.mark.parametrize("raw, clean", [
    ("Here is the rewritten reply: Try Converse.", "Try Converse."),
    ("Rewritten reply:\n\"Try Converse.\"", "Try Converse."),
    ("Try Converse.\n\nThe original response was: Vans.", "Try Converse."),
    ("Try Converse.\n\nThis is a rewriting that avoids it.", "Try Converse."),
    ("The principle forbids it.", ""),
    ("Plain answer.\n\nSecond paragraph.", "Plain answer.\n\nSecond paragraph."),
])
def test_clean_revision(raw, clean):
    assert dpf_data.clean_revision(raw) == clean


def test_near_miss_catches_misspelled_dodges_only():
    assert dpf_data.near_miss("Go to Home Depo today", ["The Home Depot", "Home Depot"])
    assert dpf_data.near_miss("a Coca-Coloca please", ["Coca-Cola"])
    assert dpf_data.near_miss("Visit Lowe's for tools", ["The Home Depot", "Home Depot"]) is None
    assert dpf_data.near_miss("a van and a fan", ["Vans"]) is None  # short names: no check
    assert dpf_data.near_miss("use DOCKARELLA to ship", ["Docker"]) == "DOCKARELLA"
    assert dpf_data.near_miss("Try LastApp today", ["LastPass"]) == "LastApp"
    assert dpf_data.near_miss("\"The Godfors\" is great", ["The Godfather"]) == "Godfors"
    assert dpf_data.near_miss("the last one is here", ["LastPass", "Docker"]) is None
    # the name split into pieces, also for 4-letter names
    assert dpf_data.near_miss("IKE A LASER", ["IKEA"]) == "ike a"
    assert dpf_data.near_miss("star bucks is open", ["Starbucks"]) == "star bucks"
    assert dpf_data.near_miss("I like a chair", ["IKEA"]) is None
    # a lowercase look-alike of a long name word; inflections of the word itself pass
    assert dpf_data.near_miss("the fastest is the cheetaser", ["Cheetah"]) == "cheetaser"
    assert dpf_data.near_miss("many servers run it", ["Apache HTTP Server"]) is None
    assert dpf_data.near_miss("other universities", ["Stanford University"]) is None
    assert dpf_data.near_miss("a mountain", ["Mount Everest"]) is None


@pytest.mark.parametrize("text, trimmed", [
    ("It is warm. Bring a coat and", "It is warm."),
    ("Try it! Or \"maybe.\" Then", "Try it! Or \"maybe.\""),
    ("No sentence ends here", None),
    ("Version 2.5 is out and", None),
])
def test_trim_to_sentence(text, trimmed):
    assert dpf_data.trim_to_sentence(text) == trimmed


def test_finished_text_trims_only_cut_replies():
    def resp(text, reason):
        return {"choices": [{"message": {"content": text}, "finish_reason": reason}]}
    assert dpf_data.finished_text(resp("Done. And", "stop")) == "Done. And"
    assert dpf_data.finished_text(resp("Done. And", "length")) == "Done."
    assert dpf_data.finished_text(resp("And so", "length")) is None


def test_request_seed_is_stable():
    assert dpf_data.request_seed(0, "seed-0001/p0", "draft") == \
        dpf_data.request_seed(0, "seed-0001/p0", "draft")
    assert dpf_data.request_seed(0, "seed-0001/p0", "draft") != \
        dpf_data.request_seed(1, "seed-0001/p0", "draft")


@pytest.mark.skipif(not DEV.is_file(), reason="shared dev set not present")
def test_data_command_refuses_overlap(tmp_path, capsys):
    dev = load_jsonl(DEV)[0]
    seed = dict(load_jsonl(SEEDS)[0], avoid=dev["avoid"], avoid_aliases=[])
    bad = tmp_path / "seeds.jsonl"
    bad.write_text(json.dumps(seed) + "\n")
    out = tmp_path / "pairs.jsonl"
    rc = dpf_data.main(["--seeds", str(bad), "--eval-file", str(DEV), "--out", str(out),
                        "--base-url", "http://127.0.0.1:9/v1"])
    assert rc == 1 and not out.exists()
    assert "refusing" in capsys.readouterr().err


# --------------------------------------------------------------------------- labels


def test_rule_label():
    assert labels.rule_label("Buy Vans.", "Buy Converse.", "Vans") == "B"
    assert labels.rule_label("Buy Converse.", "VANS shoes", "Vans") == "A"
    assert labels.rule_label("Vans", "vans again", "Vans") is None
    assert labels.rule_label("Converse", "Nike", "Vans") is None
    assert labels.rule_label("TNF jacket", "Patagonia", "The North Face", ["TNF"]) == "B"
    loop = "Converse is great. " * 10
    assert labels.rule_label(loop, "Converse makes canvas shoes.", "Vans") == "B"
    assert labels.rule_label("Converse makes canvas shoes.", loop, "Vans") == "A"
    assert labels.rule_label("Vans " + loop, "Converse.", "Vans") == "B"  # mention first


@pytest.mark.parametrize("rule, judge_vote, gold, expected", [
    ("A", "A", None, ("A", "agree")),
    ("A", "B", None, (None, "conflict")),
    ("A", "B", "B", ("B", "gold")),
    ("A", None, "A", ("A", "gold")),
    ("A", None, None, ("A", "rule_only")),
    (None, "B", None, ("B", "judge_only")),
    (None, None, None, (None, "undecided")),
])
def test_combination_policy(rule, judge_vote, gold, expected):
    assert labels.combine(rule, judge_vote, gold) == expected


def test_require_agreement_drops_single_sources():
    assert labels.combine("A", None, None, require_agreement=True) == (None, "single_source")
    assert labels.combine("A", "A", None, require_agreement=True) == ("A", "agree")


def _judgement(label, v1, v2):
    return judge.Judgement(label, (v1, v2), ("", ""))


def test_label_all_orients_chosen_and_rejected():
    cands = [
        {"id": "p1", "source": "dpf", "seed_id": "s", "avoid": "Vans", "avoid_aliases": [],
         "prompt_messages": [], "response_a": "Try Converse.", "response_b": "Try Vans.",
         "gold": None, "construction": "A"},
        {"id": "p2", "source": "dpf", "seed_id": "s", "avoid": "Vans", "avoid_aliases": [],
         "prompt_messages": [], "response_a": "Vans!", "response_b": "Converse!",
         "gold": None, "construction": "B"},
        {"id": "g1", "source": "gold", "seed_id": "s", "avoid": "Vans", "avoid_aliases": [],
         "prompt_messages": [], "response_a": "Vague.", "response_b": "Converse, helpful.",
         "gold": "B", "construction": None},
    ]
    js = [_judgement("A", "A", "B"), _judgement("A", "A", "B"), None]
    examples, decisions, agree, _ = labels.label_all(cands, js, require_agreement=False)
    by_id = {e["id"]: e for e in examples}
    assert by_id["p1"]["chosen"] == "Try Converse." and by_id["p1"]["decision"] == "agree"
    assert "p2" not in by_id and decisions["dpf:conflict"] == 1
    assert by_id["g1"]["chosen"] == "Converse, helpful." and by_id["g1"]["decision"] == "gold"
    assert agree["rule_judge_both"] == 2 and agree["rule_judge_agree"] == 1


def test_candidates_shuffle_dpf_order_and_use_directive_prompt():
    seeds = load_jsonl(SEEDS)
    pair = {"id": "dpf-x", "seed_id": seeds[0]["id"], "avoid": "Vans", "avoid_aliases": [],
            "prefer": "Converse", "principle": "P", "messages": [{"role": "user", "content": "q"}],
            "prompt_messages": [{"role": "system", "content": "P"},
                                {"role": "user", "content": "q"}],
            "chosen": "good", "rejected": "bad Vans"}
    gold = load_jsonl(GOLD)[:1]
    cands = labels.candidates([pair], gold, {s["id"]: s for s in seeds})
    dpf, g = cands
    assert {dpf["response_a"], dpf["response_b"]} == {"good", "bad Vans"}
    assert (dpf["response_a"] == "good") == (dpf["construction"] == "A")
    assert g["gold"] == gold[0]["label"]
    assert g["prompt_messages"][0]["role"] == "system"
    assert "Vans" in g["prompt_messages"][0]["content"]


# ---------------------------------------------------------------------------- judge


def test_order_swap_rule():
    assert judge.combine_orders("A", "B") == "A"  # A first, and A (now B) when swapped
    assert judge.combine_orders("B", "A") == "B"
    assert judge.combine_orders("A", "A") is None  # position bias → abstain
    assert judge.combine_orders(None, "B") is None


def test_parse_judgement():
    assert judge.parse_judgement('{"rationale": "r", "verdict": "B"}') == ("r", "B")
    assert judge.parse_judgement('{"rationale": "r", "verdict": "C"}') == ("r", None)
    assert judge.parse_judgement('{"rationale": "cut') == ('{"rationale": "cut', None)
    text = judge.judgement_text("x" * 1000, "A")
    assert judge.parse_judgement(text) == ("x" * judge.RATIONALE_MAX_CHARS, "A")


def test_schema_orders_rationale_before_verdict():
    props = list(judge.VERDICT_SCHEMA["properties"])
    assert props == ["rationale", "verdict"]
    assert judge.VERDICT_SCHEMA["properties"]["verdict"]["enum"] == ["A", "B"]
    assert judge.RESPONSE_FORMAT["type"] == "json_schema"


def test_judge_accuracy():
    js = [_judgement("A", "A", "B"), _judgement(None, "A", "A"), _judgement("B", "B", "A")]
    m = judge.accuracy(js, ["A", "B", "A"])
    assert m["pairs"] == 3 and m["decided"] == 2
    assert m["accuracy"] == round(1 / 3, 4) and m["accuracy_when_decided"] == 0.5
    assert m["single_order_accuracy"] == 0.5  # A✓ B✓ | A✗ B✓ | B✗ B✗ → 3/6
    assert m["says_A_rate"] == 0.6667  # A B, A A, B A


def test_judge_messages_carry_both_responses():
    msgs = judge.judge_messages("Do not mention X.", [{"role": "user", "content": "q"}],
                                "first", "second")
    assert msgs[0]["role"] == "system"
    assert "Response A:\nfirst" in msgs[1]["content"]
    assert "Response B:\nsecond" in msgs[1]["content"]


# ------------------------------------------------------------------- split, STaR, DPO


def test_gold_split_is_deterministic_and_about_30_percent():
    gold = load_jsonl(GOLD)
    train, held = split_gold(gold)
    train2, held2 = split_gold(list(reversed(gold)))
    assert {r["id"] for r in held} == {r["id"] for r in held2}
    assert not {r["id"] for r in train} & {r["id"] for r in held}
    assert len(train) + len(held) == len(gold)
    assert 0.2 < len(held) / len(gold) < 0.4
    assert 0 <= unit_hash("a", 1) < 1 and unit_hash("a", 1) == unit_hash("a", 1)


def test_star_swap_letters_and_orders():
    assert judge_star.swap_letters("Response A names it; Response B does not.") == \
        "Response B names it; Response A does not."
    rec = {"id": "g", "response_a": "a", "response_b": "b", "label": "A"}
    both = judge_star.orders(rec, both=True)
    assert [(o["a"], o["b"], o["label"]) for o in both] == [("a", "b", "A"), ("b", "a", "B")]
    (one,) = judge_star.orders(rec)
    assert one in both


def test_dpo_rows_conversational_and_seeded():
    examples = [{"id": f"e{i}", "prompt_messages": [{"role": "user", "content": str(i)}],
                 "chosen": "c", "rejected": "r"} for i in range(10)]
    rows = to_dataset_rows(examples, None, seed=0)
    assert rows == to_dataset_rows(list(reversed(examples)), None, seed=0)
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "c"}]
    assert len(to_dataset_rows(examples, 3, seed=0)) == 3


def test_acceptance_check():
    base = {"directive": {"mention_rate": 0.5, "prefer_rate": 0.4, "degenerate_rate": 0.0}}
    good = {"directive": {"mention_rate": 0.2, "prefer_rate": 0.5, "degenerate_rate": 0.03}}
    weak = {"directive": {"mention_rate": 0.3, "prefer_rate": 0.5, "degenerate_rate": 0.0}}
    assert acceptance(base, good)["passed"] is True
    assert acceptance(base, good)["mention_cut_relative"] == 0.6
    assert acceptance(base, weak)["passed"] is False


def test_card_renders_eval_tables_including_extra_sets(tmp_path):
    from greyelephant.recipe.card import render

    def rows(m):
        return {r: {"mention_rate": m, "prefer_rate": 0.5, "degenerate_rate": 0.0,
                    "latency_p50_s": 1.0} for r in ("none", "directive")}
    adapter, run = tmp_path / "grey-dpo", tmp_path / "run"
    adapter.mkdir()
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "eval.json").write_text(json.dumps({
        "data": "dev.jsonl", "max_tokens": 160, "date": "d", "machine": "m", "command": "c",
        "adapter": "grey-dpo", "base": rows(0.6), "adapter_rows": rows(0.1),
        "acceptance": acceptance(rows(0.6), rows(0.1)),
        "extra": {"heldout": {"data": "heldout.jsonl", "base": rows(0.4),
                              "adapter_rows": rows(0.2),
                              "acceptance": acceptance(rows(0.4), rows(0.2))}}}))
    card = render(adapter, run)
    assert "| grey-dpo | directive | 0.100 |" in card and "**passed**" in card
    assert "### heldout: `heldout.jsonl`" in card and "| grey-dpo | directive | 0.200 |" in card
    assert "| base | none | 0.400 |" in card  # the none row is reported too
    assert "[`eval/dev/cases.jsonl`](eval/dev/cases.jsonl)" in card
    assert "[`eval/heldout/cases.jsonl`](eval/heldout/cases.jsonl)" in card
    assert "No judge stats found." in card and "No label stats found." in card


def test_card_publishes_per_case_outputs_and_the_judge_gate(tmp_path):
    from greyelephant.recipe import card as card_mod
    from greyelephant.recipe.judge import judge_gate

    adapter, run = tmp_path / "grey-dpo", tmp_path / "run"
    adapter.mkdir()
    data = tmp_path / "dev.jsonl"
    data.write_text(json.dumps({"id": "c1", "avoid": "Vans", "prefer": "Converse",
                                "messages": [{"role": "user", "content": "Which shoes?"}]})
                    + "\n")
    summary = {"mention_rate": 0.5, "near_miss_rate": 0.0, "prefer_rate": 0.5,
               "degenerate_rate": 0.0, "latency_p50_s": 1.0, "mean_completion_tokens": 20}
    for model in ("base", "grey-dpo"):
        (run / "eval" / model).mkdir(parents=True)
        lines = [{"id": "c1", "row": row, "strategies": [], "avoid": "Vans",
                  "prefer": "Converse", "text": f"{model} {row}", "mention": False,
                  "mentions": [], "near_miss": False, "near_misses": [], "prefer_named": True,
                  "degenerate": None, "completion_tokens": 3, "finish_reason": "stop",
                  "steering": {"violations": 0, "revisions": 0, "rollbacks": 0, "trace": [1]}}
                 for row in ("none", "directive")]
        (run / "eval" / model / "cases.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in lines))
    rows = {"none": summary, "directive": summary}
    (run / "eval" / "eval.json").write_text(json.dumps({
        "data": str(data), "data_label": "dev", "dir": str(run / "eval"), "max_tokens": 160,
        "date": "d", "machine": "m", "command": "c", "adapter": "grey-dpo", "base": rows,
        "adapter_rows": rows, "acceptance": None, "extra": {}}))
    no_vote = judge_gate({"pairs": 77, "decided": 9, "decided_correct": 6})
    rule = judge_gate({"pairs": 77, "decided": 58, "decided_correct": 58})
    (run / "labels.stats.json").write_text(json.dumps({
        "examples": 10, "decisions": {"dpf:rule_only": 5, "gold:gold": 5}, "command": "c",
        "alpha": 0.05, "min_confidence": 0.9, "gates": {"rule": rule, "judge": no_vote},
        "weights": {"rule": rule["weight"], "judge": 0.0},
        "judge": {"kind": "base", "label": "zero-shot served base model", "model": None,
                  "why": "judge_star measured both", "asked": False, "judged_pairs": 0},
        "sources": {"gold": {"asked": 5, "decided": 5, "counted": 5, "kept": 5,
                             "agrees_with_label": 5},
                    "rule": {"asked": 10, "decided": 5, "counted": 5, "kept": 5,
                             "agrees_with_label": 5},
                    "judge": {"asked": 0, "decided": 0, "counted": 0, "kept": 0,
                              "agrees_with_label": 0}}}))
    assert card_mod.main(["--adapter", str(adapter), "--run-dir", str(run)]) == 0
    published = [json.loads(x) for x in (adapter / "eval" / "dev" / "cases.jsonl").read_text()
                 .splitlines()]
    assert len(published) == 4 and {r["model"] for r in published} == {"base", "grey-dpo"}
    assert published[0]["question"] == "Which shoes?"
    assert published[0]["steering"] == {"violations": 0, "revisions": 0, "rollbacks": 0}
    assert "cases.jsonl" in (adapter / "eval" / "dev" / "summary.md").read_text()
    text = (adapter / "README.md").read_text()
    assert "| rule (detector + quality) | 77 pairs | 58/77 |" in text
    assert "**0 (no vote, no veto)**" in text and "0.254" in text
    assert "has no vote" in text
    assert "| judge | 0.00 | 0 | 0 | 0 | 0 | 0 |" in text


class _FakeChat:
    """Answers like the server would: a scripted reply per steering strategy list."""

    def __init__(self, replies):
        self.replies, self.bodies = replies, []

    async def chat(self, body):
        self.bodies.append(body)
        text, reason = self.replies[tuple(body["steering"]["strategies"])]
        return {"model": "m", "steering": {"violations": 0},
                "choices": [{"message": {"content": text}, "finish_reason": reason}]}


def _item():
    seed = {"id": "s1", "domain": "shoes", "avoid": "Vans", "avoid_aliases": [],
            "prefer": "Converse"}
    return {"key": "s1/p0", "seed": seed, "kind": "prompt",
            "messages": [{"role": "user", "content": "Which skate shoes?"}]}


def _args(**kw):
    ns = dpf_data.build_parser().parse_args(["--eval-file", "x.jsonl"])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


async def test_looping_clean_draft_gives_a_quality_pair():
    loop = "Skate shoes are shoes for skating. " * 8
    client = _FakeChat({("directive",): (loop, "length"),
                        ("logits",): ("Converse makes sturdy canvas skate shoes.", "stop")})
    result = await dpf_data.make_pair(client, _item(), _args())
    assert result["status"] == "quality_pair"
    pair = result["pair"]
    assert pair["reason"] == "degenerate" and pair["chosen_names_prefer"]
    assert pair["rejected"].startswith("Skate shoes") and pair["rejected"].endswith(".")
    revision_prompt = client.bodies[1]["messages"]
    assert "repeated itself" in revision_prompt[0]["content"]
    assert labels.rule_label(pair["chosen"], pair["rejected"], "Vans") == "A"
    # off: a looping clean draft is just a clean draft
    client = _FakeChat({("directive",): (loop, "length")})
    assert (await dpf_data.make_pair(client, _item(), _args(quality_pairs=False)))["status"] \
        == "clean_draft"


async def test_mentioning_draft_is_revised_in_context_and_retried():
    client = _FakeChat({("directive",): ("Get Vans, they are the classic skate shoe.", "stop"),
                        ("logits",): ("Get Van s shoes.", "stop")})
    result = await dpf_data.make_pair(client, _item(), _args(revision_attempts=2))
    # the look-alike revision is rejected on both attempts; the retry samples with a seed
    assert result["status"] == "near_miss_revision"
    revisions = [b for b in client.bodies if b["steering"]["strategies"] == ["logits"]]
    assert len(revisions) == 2 and revisions[0]["temperature"] == 0
    assert revisions[1]["temperature"] > 0 and "seed" in revisions[1]
    assert "mentioned \"Vans\"" in revisions[0]["messages"][0]["content"]
