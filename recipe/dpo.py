"""DPO with a LoRA on the embedded model (trl DPOTrainer + peft), CPU-sized.

Input: the hybrid-labelled preference examples (``recipe/labels.py``): the prompt is the
conversation **as the server renders it under the directive strategy** (the principle in the
system message), ``chosen``/``rejected`` the two replies. The loss is DPO's sigmoid loss plus
an SFT term on the chosen reply (``--sft-weight``, default 1.0, RPO-style), which keeps the
adapter fluent. Training stops at ``--max-minutes`` (default 30) whatever the step count: the
default configuration finishes on the 2-core CPU box within it.

Output: a PEFT adapter directory with only ``adapter_config.json``,
``adapter_model.safetensors`` and ``recipe.json`` (data, hyperparameters, metrics, date,
command); ``python -m greyelephant.recipe.card`` writes its README.md.

    python -m greyelephant.recipe.dpo --labels runs/recipe/labels.jsonl --out adapters/grey-dpo
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from .common import load_jsonl, provenance
from .lora_sft import ATTENTION_PROJECTIONS, save_adapter


def to_dataset_rows(examples: list[dict[str, Any]], max_pairs: int | None, seed: int
                    ) -> list[dict[str, Any]]:
    """trl's conversational preference format, in a seeded order."""
    rows = [{"prompt": e["prompt_messages"],
             "chosen": [{"role": "assistant", "content": e["chosen"]}],
             "rejected": [{"role": "assistant", "content": e["rejected"]}]}
            for e in sorted(examples, key=lambda e: e["id"])]
    random.Random(seed).shuffle(rows)
    return rows[:max_pairs] if max_pairs else rows


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m greyelephant.recipe.dpo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=Path, default=Path("runs/recipe/labels.jsonl"))
    ap.add_argument("--out", type=Path, default=Path("adapters/grey-dpo"))
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="base model directory (default: the embedded SmolLM2)")
    ap.add_argument("--max-pairs", type=int, default=None)
    ap.add_argument("--max-response-tokens", type=int, default=None,
                    help="drop examples whose chosen or rejected reply has N+ tokens: "
                         "generations cut by max_tokens, which would teach the model to end "
                         "a reply mid-sentence (chosen) or never to end one (rejected)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--sft-weight", type=float, default=1.0,
                    help="weight of the SFT term on chosen (0 = plain DPO)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=int, default=32)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=640)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--max-minutes", type=float, default=30.0)
    ap.add_argument("--work-dir", type=Path, default=Path("runs/recipe/dpo"),
                    help="trainer scratch (logs); nothing there is shipped")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
    from trl import DPOConfig, DPOTrainer

    from greyelephant.model_store import prepare_embedded_model

    meta = provenance(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    model_dir = args.model_dir or prepare_embedded_model().path
    examples = load_jsonl(args.labels)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    dropped_truncated = 0
    if args.max_response_tokens:
        def complete(e):
            return all(len(tokenizer.encode(e[k], add_special_tokens=False))
                       < args.max_response_tokens for k in ("chosen", "rejected"))
        kept = [e for e in examples if complete(e)]
        dropped_truncated = len(examples) - len(kept)
        examples = kept
    rows = to_dataset_rows(examples, args.max_pairs, args.seed)
    if not rows:
        print("error: no labelled examples", file=sys.stderr)
        return 1
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    lora = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=args.dropout,
                      target_modules=list(ATTENTION_PROJECTIONS), task_type="CAUSAL_LM")
    loss_type = ["sigmoid", "sft"] if args.sft_weight > 0 else ["sigmoid"]
    loss_weights = [1.0, args.sft_weight] if args.sft_weight > 0 else None
    args.work_dir.mkdir(parents=True, exist_ok=True)
    config = DPOConfig(
        output_dir=str(args.work_dir), seed=args.seed, data_seed=args.seed,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        num_train_epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.lr,
        lr_scheduler_type="cosine", warmup_steps=0.05, beta=args.beta,
        loss_type=loss_type, loss_weights=loss_weights, max_length=args.max_length,
        logging_steps=5, save_strategy="no", report_to=[], bf16=False, fp16=False,
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
        gradient_checkpointing=False, remove_unused_columns=False,
    )
    budget = args.max_minutes * 60
    started = time.perf_counter()
    log_rows: list[dict[str, Any]] = []

    class Budget(TrainerCallback):
        def on_step_end(self, _args, state, control, **kw):
            if time.perf_counter() - started > budget:
                control.should_training_stop = True
            return control

        def on_log(self, _args, state, control, logs=None, **kw):
            if logs:
                row = {"step": state.global_step, **{k: round(v, 5) if isinstance(v, float)
                                                     else v for k, v in logs.items()}}
                log_rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)

    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora, callbacks=[Budget()])
    result = trainer.train()
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in ("adapter_model.bin", "training_args.bin", "optimizer.pt"):
        (args.out / stale).unlink(missing_ok=True)
    save_adapter(trainer.model, args.out)
    steps = trainer.state.global_step
    pairs_seen = steps * args.batch_size * args.grad_accum
    last = [r for r in log_rows if "loss" in r]
    decisions: dict[str, int] = {}
    for e in examples:
        key = f"{e['source']}:{e['decision']}"
        decisions[key] = decisions.get(key, 0) + 1
    recipe = {
        **meta, "base_model": "SmolLM2-135M-Instruct", "base_model_dir": str(model_dir),
        "data": {"labels_file": str(args.labels), "labelled_examples": len(examples),
                 "train_pairs": len(rows), "by_decision": decisions,
                 "max_response_tokens": args.max_response_tokens,
                 "dropped_truncated": dropped_truncated},
        "hyperparameters": {
            "method": "DPO (trl DPOTrainer) + LoRA (peft)", "trl": _version("trl"),
            "peft": _version("peft"), "torch": torch.__version__,
            "loss_type": loss_type, "loss_weights": loss_weights, "beta": args.beta,
            "lr": args.lr, "scheduler": "cosine, 5% warmup", "epochs": args.epochs,
            "max_steps": args.max_steps, "batch_size": args.batch_size,
            "grad_accum": args.grad_accum, "max_length": args.max_length,
            "lora": {"r": args.rank, "alpha": args.alpha, "dropout": args.dropout,
                     "target_modules": list(ATTENTION_PROJECTIONS)},
            "dtype": "float32", "seed": args.seed, "max_minutes": args.max_minutes,
            "threads": torch.get_num_threads(),
        },
        "training": {
            "optimizer_steps": steps, "pair_passes": pairs_seen,
            "seconds": round(seconds, 1),
            "seconds_per_pair": round(seconds / pairs_seen, 3) if pairs_seen else None,
            "stopped_by_budget": seconds > budget,
            "train_loss": round(result.training_loss, 5),
            "first_log": last[0] if last else None, "last_log": last[-1] if last else None,
        },
    }
    previous = args.out / "recipe.json"
    if previous.is_file():  # what the server reads from it (shipped.py) outlives a retrain
        kept = json.loads(previous.read_text()).get("steering_defaults")
        if kept:
            recipe["steering_defaults"] = kept
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    (args.work_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log_rows))
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(json.dumps({"out": str(args.out), "bytes": size, **recipe["training"]}))
    return 0


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
