"""A small supervised LoRA fine-tune (plain torch loop + peft) for chat examples: the loss
covers the assistant's reply only. Used to train the STaR judge; CPU-sized."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ATTENTION_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass
class SFTConfig:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    lr: float = 2e-4
    epochs: int = 1
    grad_accum: int = 8
    max_length: int = 768
    seed: int = 0
    max_minutes: float | None = None
    target_modules: list[str] = field(default_factory=lambda: list(ATTENTION_PROJECTIONS))


def encode_example(tokenizer, messages: Sequence[dict[str, str]], reply: str, max_length: int
                   ) -> tuple[list[int], list[int]] | None:
    """(input_ids, labels): the prompt rendered as the server renders it (chat template with
    the generation prompt), then the reply and the end-of-turn token; labels -100 on the
    prompt. None when the prompt alone exceeds ``max_length``."""
    prompt_ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                               tokenize=True)
    if hasattr(prompt_ids, "input_ids"):
        prompt_ids = prompt_ids["input_ids"]
    prompt_ids = list(prompt_ids)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": reply}],
                                         tokenize=True)
    if hasattr(full, "input_ids"):
        full = full["input_ids"]
    full = list(full)
    if full[:len(prompt_ids)] != prompt_ids:  # template not prefix-stable: build by hand
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        full = prompt_ids + tokenizer.encode(reply, add_special_tokens=False) + [eos]
    if len(prompt_ids) >= max_length:
        return None
    full = full[:max_length]
    labels = [-100] * len(prompt_ids) + full[len(prompt_ids):]
    return full, labels


def train_lora_sft(model_dir: str | Path, examples: Sequence[dict[str, Any]], out_dir: Path,
                   cfg: SFTConfig, log=print) -> dict[str, Any]:
    """Train on ``examples`` ({"messages", "reply"}) and save a PEFT adapter to ``out_dir``
    (adapter_config.json + adapter_model.safetensors only). Returns metrics."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules, task_type="CAUSAL_LM"))
    encoded = [e for e in (encode_example(tokenizer, x["messages"], x["reply"], cfg.max_length)
                           for x in examples) if e is not None]
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                              weight_decay=0.0)
    steps_total = max(1, math.ceil(len(encoded) * cfg.epochs / cfg.grad_accum))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / max(1, steps_total // 10)) *
        max(0.0, 1 - s / steps_total))
    model.train()
    started = time.perf_counter()
    losses: list[float] = []
    step = 0
    stopped_early = False
    order = list(range(len(encoded)))
    for epoch in range(cfg.epochs):
        random.Random(cfg.seed + epoch).shuffle(order)
        for k, idx in enumerate(order):
            ids, labels = encoded[idx]
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            (out.loss / cfg.grad_accum).backward()
            losses.append(float(out.loss.detach()))
            if (k + 1) % cfg.grad_accum == 0 or k == len(order) - 1:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                sched.step()
                optim.zero_grad()
                step += 1
                if step % 5 == 0:
                    log(f"  sft step {step}/{steps_total} loss "
                        f"{sum(losses[-cfg.grad_accum:]) / len(losses[-cfg.grad_accum:]):.4f} "
                        f"{time.perf_counter() - started:.0f} s")
            if cfg.max_minutes and time.perf_counter() - started > cfg.max_minutes * 60:
                stopped_early = True
                if (k + 1) % cfg.grad_accum != 0 and k != len(order) - 1:
                    # the budget ran out mid-accumulation: apply what was accumulated
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optim.step()
                    sched.step()
                    optim.zero_grad()
                    step += 1
                break
        if stopped_early:
            break
    save_adapter(model, out_dir)
    first = losses[:len(losses) // 4 or 1]
    last = losses[-(len(losses) // 4 or 1):]
    return {"examples": len(encoded), "optimizer_steps": step, "epochs": cfg.epochs,
            "loss_first_quarter": round(sum(first) / len(first), 4) if losses else None,
            "loss_last_quarter": round(sum(last) / len(last), 4) if losses else None,
            "seconds": round(time.perf_counter() - started, 1), "stopped_early": stopped_early}


def save_adapter(peft_model, out_dir: Path) -> None:
    """Save only what serving needs: adapter_config.json and adapter_model.safetensors."""
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(Path(tmp) / name, out_dir / name)
