"""Write an adapter's card (``README.md`` in the adapter directory) from what the recipe
stages recorded: ``recipe.json`` (written by ``dpo``), and in ``--run-dir`` the stats of the
data, judge and label stages and the eval. Missing stages are said to be missing.

    python -m greyelephant.recipe.card --adapter adapters/grey-dpo --run-dir runs/recipe
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def eval_table(ev: dict[str, Any], adapter: str) -> list[str]:
    lines = ["| model | row | mention_rate | prefer_rate | degenerate_rate | latency p50 s |",
             "|---|---|---|---|---|---|"]
    for label, rows in (("base", ev["base"]), (adapter, ev["adapter_rows"])):
        for row, s in rows.items():
            lines.append(f"| {label} | {row} | {_pct(s['mention_rate'])} | "
                         f"{_pct(s['prefer_rate'])} | {_pct(s['degenerate_rate'])} | "
                         f"{s['latency_p50_s']} |")
    return lines


def judge_table(judge: dict[str, Any]) -> list[str]:
    lines = ["| judge | accuracy (abstain = wrong) | decided | accuracy when decided | "
             "single-order accuracy | says A |", "|---|---|---|---|---|---|"]
    for label, key in (("zero-shot (base model)", "zero_shot_held_out"),
                       ("STaR-trained LoRA", "star_held_out")):
        m = judge.get(key)
        if m:
            lines.append(f"| {label} | {m['accuracy']:.3f} | {m['decided']}/{m['pairs']} | "
                         f"{m['accuracy_when_decided']:.3f} | {m['single_order_accuracy']:.3f} "
                         f"| {m['says_A_rate']:.3f} |")
    return lines


def render(adapter_dir: Path, run_dir: Path) -> str:
    recipe = _read(adapter_dir / "recipe.json") or {}
    pairs = _read(run_dir / "pairs.stats.json")
    labels = _read(run_dir / "labels.stats.json")
    judge = _read(run_dir / "judge" / "judge.stats.json")
    ev = _read(run_dir / "eval" / "eval.json")
    name = adapter_dir.name
    hp = recipe.get("hyperparameters", {})
    tr = recipe.get("training", {})
    out = [f"# {name}", "",
           f"A LoRA adapter for **{recipe.get('base_model', 'SmolLM2-135M-Instruct')}** trained "
           "with greyelephant's hybrid preference recipe (DPF pairs, hybrid labels, DPO). It "
           "makes the model follow *\"do not mention X; discuss Y instead\"* directives. "
           "Serve it with `greyelephant serve --adapter "
           f"{name}=adapters/{name}` and select it with `\"model\": \"{name}\"`.", "",
           "Reproduce from scratch: `make adapter` (see docs/recipe.md).", ""]
    out += ["## Data", ""]
    if pairs:
        out += [f"- DPF pairs: {pairs['pairs']} from {pairs['items']} drafted seed prompts and "
                f"dialogues (`recipe/data/seeds.jsonl`, hand-written; disjoint from "
                f"{', '.join(pairs['eval_files'])}); outcomes {pairs['outcomes']}; "
                f"chosen = critique-revise revision with the logits ban (and loop guard), "
                f"rejected = the directive-only draft that named the avoided entity (`pair`) "
                f"or looped (`quality_pair`). Generated {pairs['date']} "
                f"({pairs['seconds']} s): `{pairs['command']}`"
                + (" (against a server started with the recipe's own flags, "
                   "`recipe/common.py` `SERVER_ARGS`)" if "--base-url" in pairs["command"]
                   else "")]
    else:
        out += ["- DPF pairs: no stats found."]
    if labels:
        out += [f"- Hybrid labels: {labels['examples']} examples kept; decisions "
                f"{labels['decisions']}; source agreement {labels['agreement']}; judge: "
                f"{labels['judge_model']}. `{labels['command']}`"]
    if recipe.get("data"):
        out += [f"- DPO trained on {recipe['data']['train_pairs']} pairs "
                f"({recipe['data']['by_decision']})."]
    out += ["", "## Training", ""]
    if recipe:
        out += [f"- {hp.get('method')}; trl {hp.get('trl')}, peft {hp.get('peft')}, "
                f"torch {hp.get('torch')}; {hp.get('dtype')} on CPU "
                f"({hp.get('threads')} threads)",
                f"- loss {hp.get('loss_type')} weights {hp.get('loss_weights')}, beta "
                f"{hp.get('beta')}, lr {hp.get('lr')} ({hp.get('scheduler')}), epochs "
                f"{hp.get('epochs')}, batch {hp.get('batch_size')} × accumulation "
                f"{hp.get('grad_accum')}, max_length {hp.get('max_length')}, seed "
                f"{hp.get('seed')}, time budget {hp.get('max_minutes')} min",
                f"- LoRA {hp.get('lora')}",
                f"- {tr.get('optimizer_steps')} optimizer steps, {tr.get('pair_passes')} pair "
                f"passes in {tr.get('seconds')} s ({tr.get('seconds_per_pair')} s per pair); "
                f"stopped by the time budget: {tr.get('stopped_by_budget')}; mean train loss "
                f"{tr.get('train_loss')}; last log {tr.get('last_log')}",
                f"- Trained {recipe.get('date')} on {recipe.get('machine')} at commit "
                f"{recipe.get('git_commit')}: `{recipe.get('command')}`"]
    out += ["", "## Evaluation", ""]
    if ev:
        out += [f"`{ev['data']}`, greedy, max_tokens {ev['max_tokens']}, one server for both "
                f"models; {ev['date']} on {ev['machine']}: `{ev['command']}`", "",
                *eval_table(ev, ev["adapter"]), ""]
        acc = ev.get("acceptance")
        if acc:
            out += [f"Acceptance (directive row: mention cut ≥ 60 % relative, prefer not lower, "
                    f"degenerate ≤ 0.05): relative cut {acc['mention_cut_relative']:.1%}, "
                    f"prefer not lower: {acc['prefer_not_lower']}, degenerate ok: "
                    f"{acc['degenerate_ok']} → **{'passed' if acc['passed'] else 'NOT passed'}**."]
        for label, extra in (ev.get("extra") or {}).items():
            out += ["", f"Also on `{extra['data']}` ({label}; same server and decoding, no "
                    "entity shared with the seeds — `data_check` verifies it):", "",
                    *eval_table(extra, ev["adapter"])]
    else:
        out += ["Not evaluated yet (`python -m greyelephant.recipe.evaluate`)."]
    out += ["", "## Judge (GenRM-style)", ""]
    if judge:
        out += [f"Held-out gold pairs: {judge['gold_held_out']} (30 % by sha256 of the id); "
                f"both orders asked, inconsistent verdicts abstain.", "", *judge_table(judge),
                "", f"STaR sampling: {judge.get('star_sampling')}; SFT: {judge.get('sft')}."]
    else:
        out += ["No judge stats found."]
    out += ["", "## Limits", ""]
    if ev and ev["adapter_rows"].get("directive", {}).get("degenerate_rate", 0) > 0.05:
        rate = ev["adapter_rows"]["directive"]["degenerate_rate"]
        out += [f"- **Degenerates**: {rate:.0%} of its directive-row answers on the dev set "
                "repeat themselves (control/quality.py); docs/recipe.md lists suspected "
                "causes and next steps."]
    if ev and "directive" in ev["adapter_rows"] and "directive" in ev["base"]:
        a_tok = ev["adapter_rows"]["directive"].get("mean_completion_tokens")
        b_tok = ev["base"]["directive"].get("mean_completion_tokens")
        if a_tok and b_tok and a_tok < 0.8 * b_tok:
            out += [f"- **Shorter replies**: {a_tok:.0f} tokens on average in the directive "
                    f"row vs {b_tok:.0f} for the base model (the chosen replies it was trained "
                    "on are shorter than the drafts)."]
    out += [
            "- A 135M-parameter model: the adapter follows the directive more often, it does "
            "not make the model knowledgeable; check the eval's per-case outputs.",
            "- Trained only on prompts that carry the directive (the `directive` strategy's "
            "system message); behaviour without it is reported above, not targeted.",
            "- Greedy generation through vLLM is batch-dependent in the last bits: regenerating "
            "the data with another concurrency can change some drafts.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m greyelephant.recipe.card", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", type=Path, required=True, help="adapter directory")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/recipe"))
    args = ap.parse_args(argv)
    text = render(args.adapter, args.run_dir)
    (args.adapter / "README.md").write_text(text)
    print(f"wrote {args.adapter / 'README.md'} ({len(text)} chars)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
