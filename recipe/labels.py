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
* **judge** — a generative judge (``recipe/judge.py``): rationale, then the indicator A/B
  as a JSON-schema-constrained verdict, asked twice with the order swapped; inconsistent
  verdicts abstain. The judge is the served base model (default), a served adapter
  (``--judge-adapter NAME=PATH``, e.g. the STaR judge), the better of the two as measured
  by ``judge_star`` (``--judge-stats judge.stats.json``: the STaR judge when it beats the
  zero-shot one on held-out gold), or any OpenAI-compatible endpoint
  (``--judge-base-url URL --judge-model NAME``). It judges the pairs that have no gold
  label (a gold label settles a pair whatever the judge says).

**Votes are earned, before labelling.** Rule and judge are measured on the held-out gold
pairs first (the rule here; the judge here, or by ``judge_star``): how often each decides,
how often it is right when it decides. ``judge.judge_gate`` turns that into a vote weight
(log-odds of the lower 95 % confidence bound of its accuracy when deciding), 0 when a
one-sided exact binomial test does not show it beats chance (p ≥ 0.05): such a source
has no vote and vetoes nothing, and a judge without a vote is not even asked
(``--judge-without-vote`` asks it anyway, for the record).

Combination policy (per pair, in this order; ``combine``):

1. a gold label exists → it is the label (humans settle every disagreement);
2. the sources with a vote that decided: their weighted votes give a confidence
   ``sigmoid(|Σ ± weight|)`` for the heavier side;
3. they all agree and the confidence is ≥ ``--min-confidence`` (0.9) → keep (``agree``
   when both decided; ``rule_only`` / ``judge_only`` when one did). Below it → drop
   (``low_confidence``). ``--require-agreement`` drops single-source pairs;
4. they disagree → keep the heavier side's label when its confidence is still ≥ the bar
   (``outweighed``: a weak judge cannot veto a strong rule), else drop (``conflict``:
   the veto of a judge that earned it);
5. no source with a vote decided → drop (``undecided``).

Output: ``labels.jsonl`` — one preference example per kept pair (``prompt_messages``,
``chosen``, ``rejected``, every source's vote, the weights, the decision) — and
``labels.stats.json`` (the sources' measured accuracy, gates and weights, which judge was
used, what each source decided, counts).

    python -m greyelephant.recipe.labels --pairs runs/recipe/pairs.jsonl \\
        --out runs/recipe/labels.jsonl --judge-stats runs/recipe/judge/judge.stats.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
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
from .judge import ALPHA, JudgeClient, accuracy, better_judge, judge_gate, judge_gold

HELD_OUT = 0.3
MIN_CONFIDENCE = 0.9
SOURCES = ("rule", "judge")


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
            require_agreement: bool = False, weights: dict[str, float] | None = None,
            min_confidence: float = MIN_CONFIDENCE) -> tuple[str | None, str]:
    """(label or None, decision) under the documented policy. ``weights`` are the sources'
    vote weights (``judge.judge_gate``); a source with weight 0 has no vote. Without
    ``weights`` every decided source counts alike and any disagreement drops the pair."""
    if gold is not None:
        return gold, "gold"
    votes = {k: v for k, v in (("rule", rule), ("judge", judge)) if v is not None
             and (weights is None or weights.get(k, 0.0) > 0)}
    if not votes:
        return None, "undecided"
    agree = len(set(votes.values())) == 1
    if weights is None:
        if not agree:
            return None, "conflict"
        label, confidence = next(iter(votes.values())), 1.0
    else:
        score = sum(weights[k] * (1 if v == "A" else -1) for k, v in votes.items())
        label = "A" if score > 0 else "B" if score < 0 else None
        confidence = 1 / (1 + math.exp(-abs(score)))
        if not agree:
            if label is None or confidence < min_confidence:
                return None, "conflict"
            return label, "outweighed"
    if len(votes) == 2:
        return label, "agree"
    if require_agreement:
        return None, "single_source"
    if confidence < min_confidence:
        return None, "low_confidence"
    return label, f"{next(iter(votes))}_only"


def source_weights(gates: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {k: float(gates[k]["weight"]) if gates.get(k) else 0.0 for k in SOURCES}


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


async def measure_judge(client: ChatClient, model: str | None, held_out: list[dict]
                        ) -> dict[str, Any]:
    """The judge's both-order accuracy on the held-out gold pairs (before it labels)."""
    started = time.perf_counter()
    _, metrics = await judge_gold(client, held_out, model)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    return metrics


async def run_judge(client: ChatClient, model: str | None, cands: list[dict]):
    """The judge's verdicts on every candidate without a gold label (None elsewhere)."""
    judge = JudgeClient(client, model)
    started = time.perf_counter()
    judged = [c for c in cands if c["gold"] is None]
    verdicts = await asyncio.gather(*(
        judge.label(c["principle"], c["messages"], c["response_a"], c["response_b"])
        for c in judged))
    by_id = {c["id"]: v for c, v in zip(judged, verdicts, strict=True)}
    print(f"  judged {len(judged)} pairs in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return [by_id.get(c["id"]) for c in cands]


def label_all(cands: list[dict], judgements, require_agreement: bool,
              weights: dict[str, float] | None = None,
              min_confidence: float = MIN_CONFIDENCE
              ) -> tuple[list[dict], Counter, dict[str, Any], dict[str, dict[str, int]]]:
    """(examples, decisions, agreement counts, per-source counts). Per source: ``asked``
    (pairs it voted on or abstained), ``decided``, ``counted`` (decided with a vote),
    ``kept`` (decided on a kept pair) and ``agrees_with_label`` (of those)."""
    decisions: Counter = Counter()
    agree = Counter()
    per_source: dict[str, Counter] = {k: Counter() for k in ("gold", *SOURCES)}
    examples = []
    for i, c in enumerate(cands):
        rule = rule_label(c["response_a"], c["response_b"], c["avoid"], c["avoid_aliases"])
        j = judgements[i] if judgements is not None else None
        judge = j.label if j is not None else None
        label, decision = combine(rule, judge, c["gold"], require_agreement, weights,
                                  min_confidence)
        decisions[f"{c['source']}:{decision}"] += 1
        for name, vote, asked in (("gold", c["gold"], c["gold"] is not None),
                                  ("rule", rule, True), ("judge", judge, j is not None)):
            counts = per_source[name]
            counts["asked"] += asked
            counts["decided"] += vote is not None
            counts["counted"] += vote is not None and (
                name == "gold" or weights is None or weights.get(name, 0.0) > 0)
            if label is not None and vote is not None:
                counts["kept"] += 1
                counts["agrees_with_label"] += vote == label
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
            "weights": weights,
            "judge_verdicts": list(j.verdicts) if j is not None else None,
        })
    return examples, decisions, dict(agree), {k: dict(v) for k, v in per_source.items()}


def rule_held_out(gold_held: list[dict], seeds_by_id: dict[str, dict]) -> dict[str, Any]:
    """The rule's accuracy on the held-out gold pairs, in ``judge.accuracy``'s terms."""
    votes = []
    for g in gold_held:
        seed = seeds_by_id[g["seed_id"]]
        votes.append((rule_label(g["response_a"], g["response_b"], seed["avoid"],
                                 seed["avoid_aliases"]), g["label"]))
    decided = [(v, lab) for v, lab in votes if v]
    right = sum(v == lab for v, lab in decided)
    n = len(votes)
    return {"pairs": n, "decided": len(decided), "decided_correct": right,
            "accuracy": round(right / n, 4) if n else 0.0,
            "accuracy_when_decided": round(right / len(decided), 4) if decided else 0.0}


def choose_judge(args) -> dict[str, Any]:
    """Which judge labels, and its held-out measurement when one was made already:
    {"kind": "endpoint" | "star" | "adapter" | "base" | "none", "model", "adapter",
    "base_url", "measured": metrics | None, "measured_by": str | None, "why": str}."""
    if args.no_judge:
        return {"kind": "none", "model": None, "adapter": None, "base_url": None,
                "measured": None, "measured_by": None, "why": "--no-judge"}
    if args.judge_base_url:
        return {"kind": "endpoint", "model": args.judge_model, "adapter": None,
                "base_url": args.judge_base_url, "measured": None, "measured_by": None,
                "why": "--judge-base-url"}
    if args.judge_adapter:
        name = args.judge_adapter.partition("=")[0]
        return {"kind": "adapter", "model": name, "adapter": args.judge_adapter,
                "base_url": None, "measured": None, "measured_by": None,
                "why": "--judge-adapter"}
    if args.judge_stats:
        stats = json.loads(Path(args.judge_stats).read_text())
        zero, star = stats.get("zero_shot_held_out"), stats.get("star_held_out")
        pick = better_judge(zero, star, args.alpha)
        z, t = judge_gate(zero, args.alpha), judge_gate(star, args.alpha)
        why = (f"judge_star measured both on {z['pairs']} held-out gold pairs: zero-shot "
               f"{z['decided_correct']}/{z['decided']} right when deciding (lower bound "
               f"{z['accuracy_lower_bound']}), STaR {t['decided_correct']}/{t['decided']} "
               f"(lower bound {t['accuracy_lower_bound']}) → "
               + ("the STaR judge beats the zero-shot one" if pick == "star" else
                  "the STaR judge does not beat the zero-shot one"))
        if pick == "star":
            adapter = stats.get("adapter") or str(Path(args.judge_stats).parent / "adapter")
            return {"kind": "star", "model": "judge-star", "adapter": f"judge-star={adapter}",
                    "base_url": None, "measured": star, "measured_by": str(args.judge_stats),
                    "why": why}
        return {"kind": "base", "model": None, "adapter": None, "base_url": None,
                "measured": zero, "measured_by": str(args.judge_stats), "why": why}
    return {"kind": "base", "model": args.model, "adapter": None, "base_url": None,
            "measured": None, "measured_by": None, "why": "default: the served base model"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m greyelephant.recipe.labels", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, default=Path("runs/recipe/pairs.jsonl"))
    ap.add_argument("--gold", type=Path, default=GOLD_PATH)
    ap.add_argument("--seeds", type=Path, default=SEEDS_PATH)
    ap.add_argument("--out", type=Path, default=Path("runs/recipe/labels.jsonl"))
    ap.add_argument("--held-out", type=float, default=HELD_OUT)
    judge = ap.add_argument_group("the judge (one of; default: the served base model)")
    judge.add_argument("--judge-stats", type=Path, default=None,
                       help="judge_star's judge.stats.json: it measured the zero-shot and the "
                            "STaR judge on held-out gold; the STaR adapter judges when it beats "
                            "the zero-shot one (those measurements are its gate)")
    judge.add_argument("--judge-adapter", default=None, metavar="NAME=PATH",
                       help="serve this (e.g. STaR-trained) judge adapter and judge with it")
    judge.add_argument("--judge-base-url", default=None,
                       help="any OpenAI-compatible endpoint (…/v1) as the judge")
    judge.add_argument("--judge-model", default=None,
                       help="the model to ask at --judge-base-url (default: its first model)")
    judge.add_argument("--judge-api-key", default=None,
                       help="API key for --judge-base-url (default $JUDGE_API_KEY)")
    judge.add_argument("--no-judge", action="store_true",
                       help="label with rules + gold only (no judge measured or asked)")
    judge.add_argument("--judge-without-vote", action="store_true",
                       help="ask a judge that failed its gate anyway (its verdicts are "
                            "recorded, they count for nothing)")
    ap.add_argument("--alpha", type=float, default=ALPHA,
                    help="the gate's significance level (one-sided binomial test vs 0.5)")
    ap.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE,
                    help="keep a pair when its weighted vote is at least this confident")
    ap.add_argument("--require-agreement", action="store_true",
                    help="drop pairs decided by one source only")
    add_server_args(ap)
    return ap


async def _judge_stage(url: str, choice: dict[str, Any], cands: list[dict],
                       held: list[dict], args) -> tuple[dict | None, dict, list | None]:
    """Measure the judge on held-out gold unless measured already, gate it, and ask it
    about the candidates when it earned a vote (or --judge-without-vote)."""
    api_key = (args.judge_api_key or os.environ.get("JUDGE_API_KEY")) if choice["base_url"] \
        else args.api_key
    async with ChatClient(url, api_key, args.concurrency) as client:
        model = choice["model"]
        if choice["kind"] == "endpoint" and model is None:
            model = choice["model"] = await client.base_model()
        metrics = choice["measured"]
        if metrics is None:
            metrics = await measure_judge(client, model, held)
            choice["measured_by"] = "this command"
            print(f"judge on held-out gold: {metrics}", file=sys.stderr, flush=True)
        gate = judge_gate(metrics, args.alpha)
        judgements = None
        if gate["weight"] > 0 or args.judge_without_vote:
            judgements = await run_judge(client, model, cands)
        return metrics, gate, judgements


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds = load_jsonl(args.seeds)
    seeds_by_id = {s["id"]: s for s in seeds}
    gold = load_jsonl(args.gold)
    validate_gold(gold, seeds)
    pairs = load_jsonl(args.pairs)
    gold_train, gold_held = split_gold(gold, args.held_out)
    cands = candidates(pairs, gold_train, seeds_by_id)
    meta = provenance(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # 1. every source's vote is measured on held-out gold before anything is labelled
    rule_metrics = rule_held_out(gold_held, seeds_by_id)
    gates: dict[str, dict[str, Any]] = {"rule": judge_gate(rule_metrics, args.alpha)}
    choice = choose_judge(args)
    judge_metrics, judgements = None, None
    needs_server = choice["kind"] != "none" and (
        choice["measured"] is None
        or judge_gate(choice["measured"], args.alpha)["weight"] > 0
        or args.judge_without_vote)
    if choice["kind"] == "none":
        gates["judge"] = judge_gate(None, args.alpha)
    elif not needs_server:  # measured already (judge_star) and it has no vote: not asked
        judge_metrics = choice["measured"]
        gates["judge"] = judge_gate(judge_metrics, args.alpha)
    else:
        serve_args = list(args.serve_arg)
        if choice["adapter"]:
            serve_args.append(f"--adapter={choice['adapter']}")
        if choice["base_url"]:  # another server altogether: no /ready to wait for
            judge_metrics, gates["judge"], judgements = asyncio.run(
                _judge_stage(choice["base_url"].rstrip("/"), choice, cands, gold_held, args))
        else:
            with served(args.base_url, serve_args, args.out.with_suffix(".server.log")) as url:
                judge_metrics, gates["judge"], judgements = asyncio.run(
                    _judge_stage(url, choice, cands, gold_held, args))
    weights = source_weights(gates)
    print(f"vote weights {weights} (rule {gates['rule']['decided_correct']}/"
          f"{gates['rule']['decided']}, p={gates['rule']['p_value']}; judge "
          f"{gates['judge']['decided_correct']}/{gates['judge']['decided']}, "
          f"p={gates['judge']['p_value']})", file=sys.stderr, flush=True)
    # 2. label
    examples, decisions, agree, per_source = label_all(
        cands, judgements, args.require_agreement, weights, args.min_confidence)
    write_jsonl(args.out, examples)
    judge_label = {"none": "none", "base": "zero-shot served base model",
                   "star": "STaR-trained judge adapter", "adapter": "served judge adapter",
                   "endpoint": "OpenAI-compatible endpoint"}[choice["kind"]]
    stats = {
        **meta, "pairs_file": str(args.pairs), "dpf_pairs": len(pairs),
        "gold_train": len(gold_train), "gold_held_out": len(gold_held),
        "judge": {"kind": choice["kind"], "label": judge_label, "model": choice["model"],
                  "adapter": choice["adapter"], "base_url": choice["base_url"],
                  "why": choice["why"], "measured_by": choice["measured_by"],
                  "asked": judgements is not None,
                  "judged_pairs": sum(j is not None for j in judgements or [])},
        # kept for older readers (the card)
        "judge_model": choice["model"] or ("base" if choice["kind"] == "base" else None),
        "judge_adapter": choice["adapter"],
        "alpha": args.alpha, "min_confidence": args.min_confidence,
        "gates": gates, "weights": weights,
        "require_agreement": args.require_agreement, "examples": len(examples),
        "decisions": dict(sorted(decisions.items())), "agreement": agree,
        "sources": per_source,
        "judge_held_out": judge_metrics,
        "rule_held_out": rule_metrics,
    }
    args.out.with_suffix(".stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps({k: stats[k] for k in ("examples", "decisions", "weights", "sources")}))
    return 0


__all__ = ["rule_label", "combine", "candidates", "label_all", "accuracy", "rule_held_out",
           "choose_judge", "source_weights", "main"]

if __name__ == "__main__":
    sys.exit(main())
