"""DPF preference pairs (Direct Principle Feedback, Castricato et al. 2024).

For every seed prompt (single turn) and seed dialogue (drifting toward the avoided entity):

1. **draft** — the served model answers under the directive alone (steering strategies
   ``["directive"]``): exactly the prompt the server builds for that strategy;
2. when the draft **mentions** the avoided entity (the project's detector), **revise** it
   with the project's critique-revise loop (``control/critique_revise.py``) where every
   revision is generated with the ``logits`` strategy active — the string-level ban — and
   the preference nudge toward ``prefer``. The default ``in_context`` style asks the
   conversation again with the critique in the system message (``rewrite`` shows the draft
   in a rewrite prompt); a revision the filters reject is retried, sampled;
3. keep the pair ``(chosen = revision, rejected = draft)`` unless the revision is
   degenerate (``control/quality.py``), still mentions the entity, dodges it with a
   look-alike, or repeats the draft. Replies cut by ``max_tokens`` are trimmed to their
   last complete sentence.

Clean drafts give no pair (DPF revises only what violates the principle). Every record
carries its provenance: seed id, request parameters, the server's steering reports, the
model and the date. Greedy by default; ``--temperature > 0`` samples with a per-request
seed derived from ``--seed``, so a run is reproducible either way.

    python -m greyelephant.recipe.dpf_data --seeds recipe/data/seeds.jsonl \\
        --eval-file ../shared/evals/pink_elephant_dev.jsonl \\
        --out runs/recipe/pairs.jsonl --limit 400 --seed 0

The seeds must share no entity with any ``--eval-file`` (``data_check.check_disjoint``);
the command refuses to run otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from greyelephant.control.critique_revise import (REVISION_STYLES, ask_again, critique_revise,
                                                  near_miss_aliases)
from greyelephant.control.detector import detector_for
from greyelephant.control.directive import apply_directive, build_directive
from greyelephant.control.normalize import fold_text
from greyelephant.control.quality import degeneracy, is_degenerate
from greyelephant.control.spec import SteeringSpec

from .common import (ChatClient, add_server_args, load_jsonl, provenance, served, text_of,
                     unit_hash, write_jsonl)
from .data_check import SEEDS_PATH, check_disjoint, validate_seeds

DRAFT_STRATEGIES = ["directive"]
REVISE_STRATEGIES = ["logits"]  # the revision prompt carries the principle itself

# A small model often wraps its rewrite: "Here is the rewritten reply:", quotes, "Revised:".
_PREAMBLE = re.compile(
    r"^\s*(?:(?:here\s+is|here's)\s+(?:the|my|a)\s+(?:rewritten|revised|new)\s+(?:draft\s+)?"
    r"(?:reply|response|version|answer)\s*[:.\-]?|(?:rewritten|revised)\s+(?:draft\s+)?"
    r"(?:reply|response|version|answer)?\s*:)\s*", re.IGNORECASE)


# ... and then talks about the task ("The original response was:", "Rewrite the response").
_META = re.compile(r"\b(?:original (?:response|reply|draft)|rewrit\w*|revis\w*|the principle|"
                   r"draft (?:reply|response)|critique)\b", re.IGNORECASE)


def clean_revision(text: str) -> str:
    """Strip a rewrite preamble and wrapping quotes, and cut the text at the first paragraph
    that talks about the rewriting task itself; keep the rest as generated."""
    text = _PREAMBLE.sub("", text.strip(), count=1).strip()
    kept = []
    for para in re.split(r"\n\s*\n", text):
        if _META.search(para):
            break
        kept.append(para)
    text = "\n\n".join(kept).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _words(text: str) -> list[str]:
    return fold_text(text).split()


def near_miss(text: str, names: list[str], threshold: float = 0.8) -> str | None:
    """A misspelling that dodges the rule ("Home Depo", "Coca-Coloca", "DOCKARELLA"):

    * a run of words whose folded form is close to (difflib ratio ≥ ``threshold``) but not
      equal to a name of at least 5 characters; or
    * a capitalised word of 4+ characters that starts with the first 4 letters of a word
      (5+ letters) of a name without being that word ("LastApp" for LastPass, "Godfors" for
      The Godfather), or any word that starts with all but the last letter of a 6+ letter
      name word without containing all of it ("cheetaser" for Cheetah; "universities" for
      University and "Servers" for Server pass). This also catches a few innocent words ("Java" for
      JavaScript, "Amazonian" for Amazon): the pair is dropped, which costs data, never
      quality;
    * the name split into 2–3 pieces ("IKE A" for IKEA).

    Returns the offending text, or None."""
    stems = {w for name in names for w in _words(name) if len(w) >= 5}
    for m in re.finditer(r"\w+", text):
        token = m.group(0)
        folded = fold_text(token).strip()
        if len(folded) < 4:
            continue
        for stem in stems:
            if folded == stem:
                continue
            if token[0].isupper() and folded[:4] == stem[:4]:
                return token
            if (len(stem) >= 6 and folded.startswith(stem[:-1])  # "cheetaser" for Cheetah
                    and not folded.startswith(stem) and folded != stem[:-1] + "ies"):
                return token
    words = _words(text)
    for name in names:
        target = " ".join(_words(name))
        n = len(target.split())
        if len(target) < 4:
            continue
        squashed = target.replace(" ", "")
        for i in range(len(words)):
            # the name split into pieces ("IKE A", "Star buck s")
            for k in range(2, 4):
                if i + k <= len(words) and "".join(words[i:i + k]) == squashed:
                    return " ".join(words[i:i + k])
            window = " ".join(words[i:i + n])
            if (i + n <= len(words) and len(target) >= 5 and window != target
                    and difflib.SequenceMatcher(None, window, target).ratio() >= threshold):
                return window
    return None


_SENTENCE_END = re.compile(r"[.!?](?:[\"')\]]*)(?=\s|$)")


def trim_to_sentence(text: str) -> str | None:
    """A reply cut by max_tokens, trimmed to its last complete sentence; None when no
    sentence was completed. Training on a cut reply would teach the model to stop mid-
    sentence (chosen) or to punish an ending it never saw (rejected)."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[:ends[-1].end()].rstrip() if ends else None


def filter_revision(chosen: str, draft: str, avoid: str, aliases) -> str | None:
    """Why a revision makes no usable "chosen" reply (None when it does)."""
    if detector_for([(avoid, tuple(aliases))]).find(chosen):
        return "revision_mentions"
    reason = degeneracy(chosen)
    if reason:
        return f"degenerate_revision:{reason}"
    if chosen.strip() == draft.strip():
        return "unchanged"
    if near_miss(chosen, [avoid, *aliases]):
        return "near_miss_revision"
    return None


def seed_items(seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every (seed, prompt) and (seed, dialogue) as one item, in file order."""
    items = []
    for seed in seeds:
        for i, prompt in enumerate(seed["prompts"]):
            items.append({"key": f"{seed['id']}/p{i}", "seed": seed, "kind": "prompt",
                          "messages": [{"role": "user", "content": prompt}]})
        items.append({"key": f"{seed['id']}/d", "seed": seed, "kind": "dialogue",
                      "messages": [dict(m) for m in seed["dialogue"]]})
    return items


def select_items(items: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict]:
    """A deterministic sample: shuffled with ``random.Random(seed)``, first ``limit``."""
    order = list(items)
    random.Random(seed).shuffle(order)
    return order[:limit] if limit else order


def steering_for(seed: dict[str, Any], strategies: list[str],
                 also_avoid: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The seed's steering object; ``also_avoid``: (entity, text) near misses a
    critique-revise loop found, added as aliases of the avoided entity unless the spec
    would then be invalid (the server would refuse it)."""
    steering = {"avoid": [{"entity": seed["avoid"], "aliases": list(seed["avoid_aliases"])}],
                "prefer": [seed["prefer"]], "strategies": strategies}
    if not also_avoid:
        return steering
    try:
        spec = SteeringSpec.model_validate(steering).with_avoid_aliases(
            near_miss_aliases(also_avoid))
    except ValidationError:
        return steering
    return {**steering, "avoid": [{"entity": e.entity, "aliases": list(e.aliases)}
                                  for e in spec.avoid]}


def request_seed(run_seed: int, key: str, step: str) -> int:
    return int(unit_hash(run_seed, key, step) * 2**31)


def finished_text(response: dict[str, Any]) -> str | None:
    """The reply's text; trimmed to its last sentence when max_tokens cut it (None when no
    sentence was finished)."""
    text = text_of(response)
    if response["choices"][0].get("finish_reason") == "length":
        return trim_to_sentence(text)
    return text


async def make_pair(client: ChatClient, item: dict[str, Any], args) -> dict[str, Any]:
    """One item → {"status": ..., "pair": {...} | None}."""
    seed = item["seed"]
    spec = SteeringSpec.model_validate(steering_for(seed, DRAFT_STRATEGIES))
    principle = build_directive(spec)
    detector = detector_for([(seed["avoid"], tuple(seed["avoid_aliases"]))])
    draft_body = {"messages": item["messages"], "temperature": args.temperature,
                  "max_tokens": args.max_tokens, "steering": steering_for(seed, DRAFT_STRATEGIES)}
    if args.temperature > 0:
        draft_body["seed"] = request_seed(args.seed, item["key"], "draft")
    if args.model:
        draft_body["model"] = args.model
    draft_resp = await client.chat(draft_body)
    draft = finished_text(draft_resp)
    if draft is None:
        return {"status": "truncated_draft", "pair": None}
    if not detector.find(draft):
        if args.quality_pairs and is_degenerate(draft):
            return await quality_pair(client, item, draft, draft_resp, draft_body, principle,
                                      args)
        return {"status": "clean_draft", "pair": None}

    revision_reports: list[dict[str, Any]] = []
    revision_bodies: list[dict[str, Any]] = []
    status = "no_revision"
    for attempt in range(args.revision_attempts):
        # The first attempt decodes like the draft; retries sample, each with its own seed.
        temperature = args.temperature if attempt == 0 else args.retry_temperature

        async def generate(messages: list[dict[str, str]],
                           also_avoid: tuple[tuple[str, str], ...] = (),
                           temperature=temperature) -> str:
            resp = await request_revision(client, item, messages, temperature,
                                          f"rev{len(revision_bodies)}", args, revision_bodies,
                                          revision_reports, also_avoid)
            return clean_revision(finished_text(resp) or "")

        outcome = await critique_revise(
            draft, item["messages"], detector=detector, principle=principle,
            avoid=spec.avoid_entities(), prefer=spec.prefer_entities(), generate=generate,
            max_revisions=args.max_revisions, style=args.revision_style)
        chosen = outcome.text
        status = filter_revision(chosen, draft, seed["avoid"], seed["avoid_aliases"])
        if status is None:
            break
    if status is not None:
        return {"status": status, "pair": None}
    return {"status": "pair", "pair": pair_record(
        item, principle, chosen, draft, "mention", draft_resp, draft_body, {
            "revision_requests": revision_bodies, "revision_reports": revision_reports,
            "revisions": outcome.revisions, "revision_attempts": attempt + 1,
            "revision_style": args.revision_style,
            "draft_mentions": outcome.draft_violations})}


QUALITY_CRITIQUE = ("An earlier reply to this conversation repeated itself. Answer the last "
                    "message again, without repeating yourself.")


async def quality_pair(client: ChatClient, item: dict[str, Any], draft: str,
                       draft_resp: dict[str, Any], draft_body: dict[str, Any], principle: str,
                       args) -> dict[str, Any]:
    """A draft that names nothing it should avoid but loops (``control/quality.py``): the
    same critique-revise step, its critique the repetition, the revision generated with the
    ``logits`` strategy (ban + loop guard). The pair teaches the helpful half of the
    principle: an answer, not a loop."""
    seed = item["seed"]
    messages = ask_again(item["messages"], principle, QUALITY_CRITIQUE)
    bodies: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    status = "no_revision"
    for attempt in range(args.revision_attempts):
        temperature = args.temperature if attempt == 0 else args.retry_temperature
        resp = await request_revision(client, item, messages, temperature, f"qrev{attempt}",
                                      args, bodies, reports)
        chosen = finished_text(resp) or ""
        status = filter_revision(chosen, draft, seed["avoid"], seed["avoid_aliases"])
        if status is None:
            break
    if status is not None:
        return {"status": f"quality_{status}", "pair": None}
    return {"status": "quality_pair", "pair": pair_record(
        item, principle, chosen, draft, "degenerate", draft_resp, draft_body, {
            "revision_requests": bodies, "revision_reports": reports, "revisions": 1,
            "revision_attempts": attempt + 1, "revision_style": "in_context",
            "critique": QUALITY_CRITIQUE, "draft_mentions": 0})}


async def request_revision(client: ChatClient, item: dict[str, Any],
                           messages: list[dict[str, Any]], temperature: float, step: str, args,
                           bodies: list[dict[str, Any]], reports: list[Any],
                           also_avoid: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """One revision request under ``REVISE_STRATEGIES`` (seeded per item and ``step`` when
    sampling), ``also_avoid`` (near misses found so far) banned as aliases; its parameters
    and the server's steering report are appended to the logs."""
    body = {"messages": messages, "temperature": temperature,
            "max_tokens": args.revision_max_tokens,
            "steering": steering_for(item["seed"], REVISE_STRATEGIES, also_avoid)}
    if temperature > 0:
        body["seed"] = request_seed(args.seed, item["key"], step)
    if args.model:
        body["model"] = args.model
    bodies.append({k: v for k, v in body.items() if k != "messages"})
    resp = await client.chat(body)
    reports.append(resp.get("steering"))
    return resp


def pair_record(item: dict[str, Any], principle: str, chosen: str, draft: str, reason: str,
                draft_resp: dict[str, Any], draft_body: dict[str, Any],
                revision: dict[str, Any]) -> dict[str, Any]:
    seed = item["seed"]
    return {
        "id": f"dpf-{item['key'].replace('/', '-')}",
        "seed_id": seed["id"], "kind": item["kind"], "domain": seed["domain"],
        "avoid": seed["avoid"], "avoid_aliases": list(seed["avoid_aliases"]),
        "prefer": seed["prefer"], "principle": principle,
        "messages": item["messages"],
        # What the model sees under the "directive" strategy: the DPO prompt.
        "prompt_messages": apply_directive(item["messages"], principle),
        "chosen": chosen, "rejected": draft,
        # why the draft was revised: it named the avoided entity, or it looped
        "reason": reason,
        "chosen_names_prefer": bool(detector_for([seed["prefer"]]).find(chosen)),
        "provenance": {
            "model": draft_resp.get("model"),
            "draft_request": {k: v for k, v in draft_body.items() if k != "messages"},
            "draft_report": draft_resp.get("steering"), **revision,
        },
    }


async def generate_pairs(base_url: str, items: list[dict[str, Any]], args) -> tuple[list, Counter]:
    stats: Counter = Counter()
    pairs = []
    async with ChatClient(base_url, args.api_key, args.concurrency) as client:
        done = 0
        started = time.perf_counter()

        async def one(item):
            nonlocal done
            try:
                result = await make_pair(client, item, args)
            except RuntimeError as exc:  # one failed request (timeout, 5xx) drops its item
                print(f"  {item['key']}: {str(exc)[:200]}", file=sys.stderr, flush=True)
                result = {"status": "request_error", "pair": None}
            done += 1
            if done % 25 == 0 or done == len(items):
                print(f"  {done}/{len(items)} items, {time.perf_counter() - started:.0f} s",
                      file=sys.stderr, flush=True)
            return result

        for result in await asyncio.gather(*(one(it) for it in items)):
            stats[result["status"]] += 1
            if result["pair"] is not None:
                pairs.append(result["pair"])
    pairs.sort(key=lambda p: p["id"])
    return pairs, stats


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m greyelephant.recipe.dpf_data",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=Path, default=SEEDS_PATH)
    ap.add_argument("--eval-file", type=Path, action="append", required=True,
                    help="evaluation JSONL the seeds must not overlap (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("runs/recipe/pairs.jsonl"))
    ap.add_argument("--limit", type=int, default=None,
                    help="draft at most N items (prompts + dialogues, sampled with --seed); "
                         "pairs come only from drafts that mention the avoided entity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-revisions", type=int, default=2,
                    help="critique-revise rounds per attempt (while the text still mentions)")
    ap.add_argument("--revision-style", choices=REVISION_STYLES, default="in_context",
                    help="in_context: answer the conversation again with the critique in the "
                         "system message (default); rewrite: edit the shown draft")
    ap.add_argument("--revision-attempts", type=int, default=3,
                    help="critique-revise attempts until one passes the filters; attempts after "
                         "the first sample at --retry-temperature with their own seeds")
    ap.add_argument("--retry-temperature", type=float, default=0.7)
    ap.add_argument("--revision-max-tokens", type=int, default=160)
    ap.add_argument("--no-quality-pairs", dest="quality_pairs", action="store_false",
                    help="skip drafts that name nothing but loop (by default they are revised "
                         "with a repetition critique and give a pair too)")
    ap.add_argument("--refilter", action="store_true",
                    help="only re-apply the revision filters to the existing --out file")
    add_server_args(ap)
    return ap


def refilter(args) -> int:
    """Re-apply the revision filters to an existing pairs file in place (no server): for a
    run made before a filter was added. Records what it dropped in the stats file."""
    pairs = load_jsonl(args.out)
    kept, dropped = [], Counter()
    for p in pairs:
        status = filter_revision(p["chosen"], p["rejected"], p["avoid"], p["avoid_aliases"])
        (kept.append(p) if status is None else dropped.update([status]))
    write_jsonl(args.out, kept)
    stats_path = args.out.with_suffix(".stats.json")
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    outcomes = Counter(stats.get("outcomes", {}))
    outcomes["pair"] = len(kept)
    outcomes.update(dropped)
    stats.update(pairs=len(kept), outcomes=dict(sorted(outcomes.items())),
                 chosen_names_prefer=sum(p["chosen_names_prefer"] for p in kept))
    stats.setdefault("refiltered", []).append({**provenance(), "dropped": dict(dropped)})
    stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps({"pairs": len(kept), "dropped": dict(dropped)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.refilter:
        return refilter(args)
    seeds = load_jsonl(args.seeds)
    validate_seeds(seeds)
    for eval_path in args.eval_file:
        shared = check_disjoint(args.seeds, eval_path)
        if shared:
            print(f"error: {args.seeds} shares {len(shared)} entities with {eval_path}: "
                  + ", ".join(shared) + " — refusing to generate training data",
                  file=sys.stderr)
            return 1
    items = select_items(seed_items(seeds), args.limit, args.seed)
    meta = provenance(argv)
    print(f"{len(items)} items from {len(seeds)} seeds", file=sys.stderr)
    started = time.perf_counter()
    log = args.out.with_suffix(".server.log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with served(args.base_url, args.serve_arg, log) as url:
        pairs, stats = asyncio.run(generate_pairs(url, items, args))
    seconds = time.perf_counter() - started
    write_jsonl(args.out, pairs)
    summary = {**meta, "seeds": str(args.seeds), "eval_files": [str(p) for p in args.eval_file],
               "items": len(items), "pairs": len(pairs), "outcomes": dict(sorted(stats.items())),
               "chosen_names_prefer": sum(p["chosen_names_prefer"] for p in pairs),
               "seconds": round(seconds, 1),
               "params": {"limit": args.limit, "seed": args.seed,
                          "temperature": args.temperature, "max_tokens": args.max_tokens,
                          "max_revisions": args.max_revisions,
                          "revision_style": args.revision_style,
                          "revision_attempts": args.revision_attempts,
                          "retry_temperature": args.retry_temperature,
                          "revision_max_tokens": args.revision_max_tokens,
                          "quality_pairs": args.quality_pairs,
                          "draft_strategies": DRAFT_STRATEGIES,
                          "revise_strategies": REVISE_STRATEGIES}}
    args.out.with_suffix(".stats.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("items", "pairs", "outcomes", "seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
