"""Training code on the real (embedded) model, tiny: the SFT example encoding matches the
prompt the server renders, a LoRA SFT step and a trl DPO step run and save a servable
adapter directory (config + safetensors only)."""

from __future__ import annotations

import json

import pytest

from greyelephant.recipe import dpo
from greyelephant.recipe.common import write_jsonl
from greyelephant.recipe.lora_sft import SFTConfig, encode_example, train_lora_sft

pytest.importorskip("peft")

MESSAGES = [{"role": "system", "content": "Do not mention Vans."},
            {"role": "user", "content": "Which skate shoes?"}]


def test_encode_example_masks_the_prompt(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids, labels = encode_example(tok, MESSAGES, "Try Converse.", max_length=512)
    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "input_ids") else prompt)
    assert ids[:len(prompt)] == prompt
    assert labels[:len(prompt)] == [-100] * len(prompt)
    target = tok.decode([t for t in labels if t != -100])
    assert target.startswith("Try Converse.") and "<|im_end|>" in target
    assert encode_example(tok, MESSAGES, "x", max_length=4) is None


def test_lora_sft_saves_a_servable_adapter(model_dir, tmp_path):
    examples = [{"messages": MESSAGES, "reply": "Try Converse."},
                {"messages": MESSAGES, "reply": "Converse makes great skate shoes."}]
    metrics = train_lora_sft(model_dir, examples, tmp_path / "a",
                             SFTConfig(rank=4, alpha=8, grad_accum=1, max_length=128),
                             log=lambda s: None)
    assert metrics["examples"] == 2 and metrics["optimizer_steps"] == 2
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["r"] == 4


def test_dpo_one_step(model_dir, tmp_path):
    pytest.importorskip("trl")
    rows = [{"id": f"e{i}", "source": "dpf", "decision": "agree", "prompt_messages": MESSAGES,
             "chosen": "Converse makes durable skate shoes.", "rejected": "Vans, obviously."}
            for i in range(4)]
    write_jsonl(tmp_path / "labels.jsonl", rows)
    out = tmp_path / "adapter"
    rc = dpo.main(["--labels", str(tmp_path / "labels.jsonl"), "--out", str(out),
                   "--work-dir", str(tmp_path / "work"), "--max-steps", "1",
                   "--batch-size", "2", "--grad-accum", "1", "--max-length", "128",
                   "--rank", "4", "--alpha", "8", "--model-dir", model_dir])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "recipe.json"]
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["training"]["optimizer_steps"] == 1
    assert recipe["data"]["train_pairs"] == 4
    assert recipe["hyperparameters"]["lora"]["r"] == 4
