"""Hybrid preference labels: rules + human gold + a generative judge, and the policy that
combines them.

Sources, each answering "which of A and B is better?" with A, B or None (undecided):

* **rule** — the project's detector (``control/detector.py``): the response that mentions
  the avoided entity (name, alias, plural, possessive, any spacing) loses; when both or
  neither mention it, the degenerate one (``control/quality.py``) loses; otherwise
  undecided.
* **gold** — ``recipe/data/gold_pairs.jsonl``: every label there was written by hand by a
  project engineer (the ``labeling`` field says so; no model produced any of it — see
  ``recipe/data/README.md``). Gold pairs are split deterministically (sha256 of the id,
  70/30): the train part is labelled data here, the held-out part is never trained on and
  only measures the judge.
* **judge** — the served model as a generative judge (``recipe/judge.py``): rationale, then
  the indicator A/B as a JSON-schema-constrained verdict, asked twice with the order
  swapped; inconsistent verdicts abstain. It judges the pairs that have no gold label
  (a gold label settles a pair whatever the judge says, so asking would only cost time). ``--judge-adapter NAME=PATH`` serves a trained
  (STaR) judge adapter and uses it instead of the base model.

Combination policy (per pair, in this order):

1. a gold label exists → it is the label (humans settle every disagreement);
2. otherwise the decided sources (rule, judge) all agree → keep with that label
   (``agree`` when both decided; ``rule_only`` / ``judge_only`` when the other one
   abstained — no source disagrees). ``--require-agreement`` drops single-source pairs;
3. rule and judge disagree, and no gold → drop (``conflict``);
4. no source decided → drop (``undecided``).

Output: ``labels.jsonl`` — one preference example per kept pair (``prompt_messages``,
``chosen``, ``rejected``, every source's vote, the decision) — and ``labels.stats.json``
(counts, source agreement, the judge's accuracy on held-out gold).

    python -m greyelephant.recipe.labels --pairs runs/recipe/pairs.jsonl \\
        --out runs/recipe/labels.jsonl [--judge-adapter judge=runs/recipe/judge/adapter]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from greyelephant.control.detector import detector_for
from greyelephant.control.quality import is_degenerate
from greyelephant.control.directive import apply_directive, build_directive
from greyelephant.control.spec import SteeringSpec

from .common import (ChatClient, add_server_args, load_jsonl, provenance, served, split_gold,
                     unit_hash, write_jsonl)
from .data_check import GOLD_PATH, SEEDS_PATH, validate_gold
from .judge import JudgeClient, accuracy, judge_gold

HELD_OUT = 0.3


def rule_label(a: str, b: str, avoid: str, aliases=()) -> str | None:
    """The rules' vote: the response that mentions the avoided entity loses; when both or
    neither do, the degenerate one (``control/quality.py``: empty, stutter, looping) loses."""
    det = detector_for([(avoid, tuple(aliases))])
    ma, mb = bool(det.find(a)), bool(det.find(b))
    if ma == mb:
        da, db = is_degenerate(a), is_degenerate(b)
        if da == db:
            return None
        return "B" if da else "A"
    return "B" if ma else "A"


def combine(rule: str | None, judge: str | None, gold: str | None,
            require_agreement: bool = False) -> tuple[str | None, str]:
    """(label or None, decision) under the documented policy."""
    if gold is not None:
        return gold, "gold"
    decided = {k: v for k, v in (("rule", rule), ("judge", judge)) if v is not None}
    if not decided:
        return None, "undecided"
    if len(set(decided.values())) > 1:
        return None, "conflict"
    label = next(iter(decided.values()))
    if len(decided) == 2:
        return label, "agree"
    if require_agreement:
        return None, "single_source"
    return label, f"{next(iter(decided))}_only"


def directive_prompt(messages, avoid: str, aliases, prefer: str) -> list[dict[str, Any]]:
    spec = SteeringSpec.model_validate({
        "avoid": [{"entity": avoid, "aliases": list(aliases)}], "prefer": [prefer],
        "strategies": ["directive"]})
    return apply_directive(messages, build_directive(spec))


def candidates(pairs: list[dict], gold_train: list[dict], seeds_by_id: dict[str, dict]
               ) -> list[dict[str, Any]]:
    """Unify DPF pairs and gold train pairs as A/B candidates (DPF order shuffled by hash)."""
    out = []
    for p in pairs:
        chosen_first = unit_hash("ab-order", p["id"]) < 0.5
        a, b = (p["chosen"], p["rejected"]) if chosen_first else (p["rejected"], p["chosen"])
        out.append({"id": p["id"], "source": "dpf", "seed_id": p["seed_id"],
                    "avoid": p["avoid"], "avoid_aliases": p["avoid_aliases"],
                    "prefer": p["prefer"], "principle": p["principle"],
                    "messages": p["messages"], "prompt_messages": p["prompt_messages"],
                    "response_a": a, "response_b": b, "gold": None,
                    "construction": "A" if chosen_first else "B"})
    for g in gold_train:
        seed = seeds_by_id[g["seed_id"]]
        out.append({"id": g["id"], "source": "gold", "seed_id": g["seed_id"],
                    "avoid": seed["avoid"], "avoid_aliases": seed["avoid_aliases"],
                    "prefer": seed["prefer"], "principle": g["principle"],
                    "messages": g["messages"],
                    "prompt_messages": directive_prompt(g["messages"], seed["avoid"],
                                                        seed["avoid_aliases"], seed["prefer"]),
                    "response_a": g["response_a"], "response_b": g["response_b"],
                    "gold": g["label"], "construction": None})
    return out


async def run_judge(url: str, cands: list[dict], held_out: list[dict], args):
    async with ChatClient(url, args.api_key, args.concurrency) as client:
        judge = JudgeClient(client, args.model)
        started = time.perf_counter()
        held_metrics = None
        if args.held_out_eval:
            _, held_metrics = await judge_gold(client, held_out, args.model)
            held_metrics["seconds"] = round(time.perf_counter() - started, 1)
        if args.no_judge:
            return None, held_metrics
        started = time.perf_counter()
        # Gold pairs are settled by their human label: the judge labels the rest.
        judged = [c for c in cands if c["gold"] is None]
        verdicts = await asyncio.gather(*(
            judge.label(c["principle"], c["messages"], c["response_a"], c["response_b"])
            for c in judged))
        by_id = {c["id"]: v for c, v in zip(judged, verdicts, strict=True)}
        judgements = [by_id.get(c["id"]) for c in cands]
        print(f"  judged {len(judged)} pairs in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        return judgements, held_metrics


def label_all(cands: list[dict], judgements, require_agreement: bool
              ) -> tuple[list[dict], Counter, dict[str, Any]]:
    decisions: Counter = Counter()
    agree = Counter()
    examples = []
    for i, c in enumerate(cands):
        rule = rule_label(c["response_a"], c["response_b"], c["avoid"], c["avoid_aliases"])
        j = judgements[i] if judgements is not None else None
        judge = j.label if j is not None else None
        label, decision = combine(rule, judge, c["gold"], require_agreement)
        decisions[f"{c['source']}:{decision}"] += 1
        if rule and judge:
            agree["rule_judge_both"] += 1
            agree["rule_judge_agree"] += rule == judge
        if c["gold"] and rule:
            agree["gold_rule_both"] += 1
            agree["gold_rule_agree"] += rule == c["gold"]
        if c["gold"] and judge:
            agree["gold_judge_both"] += 1
            agree["gold_judge_agree"] += judge == c["gold"]
        if c["construction"] and judge:
            agree["construction_judge_both"] += 1
            agree["construction_judge_agree"] += judge == c["construction"]
        if label is None:
            continue
        chosen, rejected = ((c["response_a"], c["response_b"]) if label == "A"
                            else (c["response_b"], c["response_a"]))
        examples.append({
            "id": c["id"], "source": c["source"], "seed_id": c["seed_id"],
            "prompt_messages": c["prompt_messages"], "chosen": chosen, "rejected": rejected,
            "label": label, "decision": decision,
            "votes": {"rule": rule, "judge": judge, "gold": c["gold"]},
            "judge_verdicts": list(j.verdicts) if j is not None else None,
        })
    return examples, decisions, dict(agree)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m greyelephant.recipe.labels", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, default=Path("runs/recipe/pairs.jsonl"))
    ap.add_argument("--gold", type=Path, default=GOLD_PATH)
    ap.add_argument("--seeds", type=Path, default=SEEDS_PATH)
    ap.add_argument("--out", type=Path, default=Path("runs/recipe/labels.jsonl"))
    ap.add_argument("--held-out", type=float, default=HELD_OUT)
    ap.add_argument("--judge-adapter", default=None, metavar="NAME=PATH",
                    help="serve this (STaR-trained) judge adapter and judge with it")
    ap.add_argument("--require-agreement", action="store_true",
                    help="drop pairs decided by one source only")
    ap.add_argument("--no-held-out-eval", dest="held_out_eval", action="store_false",
                    help="skip measuring the judge on held-out gold (judge_star measured it)")
    ap.add_argument("--no-judge", action="store_true",
                    help="label with rules + gold only (the judge is still measured on "
                         "held-out gold)")
    add_server_args(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds = load_jsonl(args.seeds)
    gold = load_jsonl(args.gold)
    validate_gold(gold, seeds)
    pairs = load_jsonl(args.pairs)
    gold_train, gold_held = split_gold(gold, args.held_out)
    cands = candidates(pairs, gold_train, {s["id"]: s for s in seeds})
    serve_args = list(args.serve_arg)
    if args.judge_adapter:
        name = args.judge_adapter.partition("=")[0]
        serve_args.append(f"--adapter={args.judge_adapter}")
        args.model = args.model or name
    meta = provenance(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with served(args.base_url, serve_args, args.out.with_suffix(".server.log")) as url:
        judgements, held_metrics = asyncio.run(run_judge(url, cands, gold_held, args))
    examples, decisions, agree = label_all(cands, judgements, args.require_agreement)
    write_jsonl(args.out, examples)
    # The rule alone on held-out gold, for comparison with the judge.
    rule_votes = [rule_label(g["response_a"], g["response_b"],
                             *(lambda s: (s["avoid"], s["avoid_aliases"]))(
                                 next(x for x in seeds if x["id"] == g["seed_id"])))
                  for g in gold_held]
    rule_decided = [(v, g["label"]) for v, g in zip(rule_votes, gold_held, strict=True) if v]
    stats = {
        **meta, "pairs_file": str(args.pairs), "dpf_pairs": len(pairs),
        "gold_train": len(gold_train), "gold_held_out": len(gold_held),
        "judge_model": args.model or "base", "judge_adapter": args.judge_adapter,
        "require_agreement": args.require_agreement, "examples": len(examples),
        "decisions": dict(sorted(decisions.items())), "agreement": agree,
        "judge_held_out": held_metrics,
        "rule_held_out": {"pairs": len(gold_held), "decided": len(rule_decided),
                          "accuracy_when_decided": round(
                              sum(v == g for v, g in rule_decided) / len(rule_decided), 4)
                          if rule_decided else 0.0},
    }
    args.out.with_suffix(".stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps({k: stats[k] for k in ("examples", "decisions", "judge_held_out")}))
    return 0


__all__ = ["rule_label", "combine", "candidates", "label_all", "accuracy", "main"]

if __name__ == "__main__":
    sys.exit(main())
