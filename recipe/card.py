"""Write an adapter's card (``README.md`` in the adapter directory) from what the recipe
stages recorded: ``recipe.json`` (written by ``dpo``), and in ``--run-dir`` the stats of the
data, judge and label stages and the eval. Missing stages are said to be missing.

Beside the card it writes the eval's per-case outputs, so every number in the card can be
checked: ``<adapter>/eval/<set>/cases.jsonl`` (one line per case, row and model: base and
adapter, rows none / directive / directive+logits; the reply and what the detector found)
and ``<adapter>/eval/<set>/summary.md``, for the dev set and every extra set (held-out).

    python -m greyelephant.recipe.card --adapter adapters/grey-dpo --run-dir runs/recipe
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .judge import better_judge, judge_gate


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def eval_table(ev: dict[str, Any], adapter: str) -> list[str]:
    lines = ["| model | row | mention_rate | near_miss_rate | prefer_rate | degenerate_rate | "
             "mean tokens | latency p50 s |", "|---|---|---|---|---|---|---|---|"]
    for label, rows in (("base", ev["base"]), (adapter, ev["adapter_rows"])):
        for row, s in rows.items():
            lines.append(f"| {label} | {row} | {_pct(s['mention_rate'])} | "
                         f"{_pct(s.get('near_miss_rate'))} | {_pct(s['prefer_rate'])} | "
                         f"{_pct(s['degenerate_rate'])} | "
                         f"{s.get('mean_completion_tokens', '–')} | {s['latency_p50_s']} |")
    return lines


CASE_FIELDS = ("id", "row", "strategies", "avoid", "prefer", "text", "mention", "mentions",
               "near_miss", "near_misses", "prefer_named", "degenerate", "completion_tokens",
               "finish_reason")


def _cases(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def slim_case(record: dict[str, Any], model: str, question: str | None) -> dict[str, Any]:
    """One eval output as published: the fields that back the rates, the reply, and the
    steering report's counters (not its full trace)."""
    out = {"model": model, **{k: record.get(k) for k in CASE_FIELDS}}
    if question is not None:
        out["question"] = question
    rep = record.get("steering") or {}
    out["steering"] = {k: rep[k] for k in ("violations", "revisions", "rollbacks")
                       if k in rep} or None
    return out


def export_cases(eval_dir: Path, data: str, adapter: str, dest: Path, title: str,
                 base_rows: dict[str, Any], adapter_rows: dict[str, Any]) -> int:
    """Copy one eval file's per-case outputs (base and adapter) into ``dest``:
    ``cases.jsonl`` and ``summary.md``. Returns the number of lines written."""
    questions: dict[str, str] = {}
    for case in _cases(Path(data)):
        users = [m["content"] for m in case.get("messages", []) if m.get("role") == "user"]
        if users:
            questions[case["id"]] = users[-1]
    records = []
    for model in ("base", adapter):
        for r in _cases(eval_dir / model / "cases.jsonl"):
            records.append(slim_case(r, model, questions.get(r.get("id"))))
    if not records:
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "cases.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    lines = [f"# {title}: `{data}`", "",
             f"Per-case outputs: [`cases.jsonl`](cases.jsonl), {len(records)} lines (case × row "
             f"× model; `model` is `base` or `{adapter}`). Greedy; the rates below are "
             "recomputed from those lines by the project's detector (`mention`, "
             "`prefer_named`) and `control/quality.py` (`degenerate`).", "",
             *eval_table({"base": base_rows, "adapter_rows": adapter_rows}, adapter), ""]
    (dest / "summary.md").write_text("\n".join(lines))
    return len(records)


def acceptance_line(acc: dict[str, Any] | None) -> list[str]:
    if not acc:
        return []
    return [f"Check (directive row: adapter mention rate ≤ 0.4 × base, i.e. cut ≥ 60 %; "
            f"prefer not lower; degenerate ≤ 0.05): cut {acc['mention_cut_relative']:.1%}, "
            f"prefer not lower: {acc['prefer_not_lower']}, degenerate ok: "
            f"{acc['degenerate_ok']} → **{'passed' if acc['passed'] else 'NOT passed'}**."]


def _fmt_p(p: float) -> str:
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def gate_table(rows: Iterable[tuple[str, dict[str, Any] | None]]) -> list[str]:
    lines = ["| source | measured on held-out gold | decided (both orders agree) | decided "
             "rate | accuracy when decided | binomial p (vs 0.5, one-sided) | vote weight |",
             "|---|---|---|---|---|---|---|"]
    for label, g in rows:
        if not g or not g.get("measured"):
            lines.append(f"| {label} | not measured | – | – | – | – | 0 (no vote) |")
            continue
        weight = (f"{g['weight']:.2f}" if g["weight"] > 0 else
                  "**0 (no vote, no veto)**")
        lines.append(f"| {label} | {g['pairs']} pairs | {g['decided']}/{g['pairs']} | "
                     f"{g['decided_rate']:.3f} | {g['accuracy_when_decided']:.3f} "
                     f"({g['decided_correct']}/{g['decided']}) | {_fmt_p(g['p_value'])} | "
                     f"{weight} |")
    return lines


def sources_table(labels: dict[str, Any]) -> list[str]:
    src = labels.get("sources") or {}
    weights = labels.get("weights") or {}
    lines = ["| source | vote weight | pairs asked | decided | decided with a vote | on kept "
             "pairs | agrees with the final label |", "|---|---|---|---|---|---|---|"]
    for name in ("gold", "rule", "judge"):
        c = src.get(name)
        if c is None:
            continue
        w = "settles" if name == "gold" else f"{weights.get(name, 0.0):.2f}"
        lines.append(f"| {name} | {w} | {c.get('asked', 0)} | {c.get('decided', 0)} | "
                     f"{c.get('counted', 0)} | {c.get('kept', 0)} | "
                     f"{c.get('agrees_with_label', 0)} |")
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


def _judge_name(labels: dict[str, Any]) -> str:
    j = labels.get("judge")
    if isinstance(j, dict):
        name = j.get("label", j.get("kind"))
        if j.get("model") and j.get("kind") in ("endpoint", "adapter", "star"):
            name += f" `{j['model']}`"
        if j.get("base_url"):
            name += f" at {j['base_url']}"
        return name
    return str(labels.get("judge_model"))


def publish_eval(adapter_dir: Path, run_dir: Path) -> dict[str, int]:
    """Write ``<adapter>/eval/<set>/{cases.jsonl,summary.md}`` from the run's eval."""
    ev = _read(run_dir / "eval" / "eval.json")
    if not ev:
        return {}
    name = ev["adapter"]
    written = {}
    label = ev.get("data_label", "dev")
    written[label] = export_cases(Path(ev.get("dir", run_dir / "eval")), ev["data"], name,
                                  adapter_dir / "eval" / label, label, ev["base"],
                                  ev["adapter_rows"])
    for xlabel, extra in (ev.get("extra") or {}).items():
        written[xlabel] = export_cases(Path(extra.get("dir", run_dir / "eval" / xlabel)),
                                       extra["data"], name, adapter_dir / "eval" / xlabel,
                                       xlabel, extra["base"], extra["adapter_rows"])
    return written


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
           "`greyelephant serve` serves the adapters shipped in `adapters/` by default, each "
           f"under its directory name (`--no-shipped-adapters` turns that off; elsewhere: "
           f"`--adapter {name}=PATH`); select it with `\"model\": \"{name}\"`.", "",
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
                f"{labels['decisions']}; judge: {_judge_name(labels)}. "
                f"`{labels['command']}` (details: § Labels and the judge)"]
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
        label = ev.get("data_label", "dev")
        out += [f"Greedy, max_tokens {ev['max_tokens']}, one server for both models (the base "
                f"rows are the same engine with the adapter loaded); {ev['date']} on "
                f"{ev['machine']}: `{ev['command']}`. Every row's per-case outputs are "
                f"published beside this card (base and adapter, one line per case and row).",
                "", f"### {label}: `{ev['data']}`", "",
                f"Per-case outputs: [`eval/{label}/cases.jsonl`](eval/{label}/cases.jsonl) · "
                f"[`eval/{label}/summary.md`](eval/{label}/summary.md). Training runs were "
                "chosen on this set.", "", *eval_table(ev, ev["adapter"]), "",
                *acceptance_line(ev.get("acceptance"))]
        for xlabel, extra in (ev.get("extra") or {}).items():
            out += ["", f"### {xlabel}: `{extra['data']}`", "",
                    f"Per-case outputs: [`eval/{xlabel}/cases.jsonl`](eval/{xlabel}/cases.jsonl)"
                    f" · [`eval/{xlabel}/summary.md`](eval/{xlabel}/summary.md). Same server and "
                    "decoding; no entity shared with the seeds, the gold pairs or the dev set "
                    "(`tests/unit/benchmarks/test_near_miss_entities.py` checks it); reported "
                    "once for this adapter, never used to choose a run.", "",
                    *eval_table(extra, ev["adapter"]), "",
                    *acceptance_line(extra.get("acceptance"))]
    else:
        out += ["Not evaluated yet (`python -m greyelephant.recipe.evaluate`)."]
    out += ["", "## Labels and the judge", ""]
    if labels and labels.get("gates"):
        gates = labels["gates"]
        out += ["Every source's vote is measured on the held-out gold pairs (hand-written, never "
                "trained on) **before** it labels anything: how often it decides, how often it "
                "is right when it does, a one-sided exact binomial test against chance "
                f"(α = {labels.get('alpha', 0.05)}) on the pairs it decided, and its vote weight "
                "— the log-odds of the lower confidence bound of its accuracy when deciding, 0 "
                "when the test does not reject chance (no vote, no veto). Gold labels are "
                "human and settle a pair. A pair is kept when the weighted votes give its "
                f"label a confidence ≥ {labels.get('min_confidence', 0.9)} "
                "(`recipe/labels.py`).", "",
                *gate_table([("rule (detector + quality)", gates.get("rule")),
                             (f"judge: {_judge_name(labels)}", gates.get("judge"))]), ""]
        j = labels.get("judge") or {}
        if j.get("why"):
            out += [f"Which judge: {j['why']}."]
        if (gates.get("judge") or {}).get("weight", 0) > 0:
            out += [f"The judge voted on {j.get('judged_pairs', 0)} DPF pairs (those without a "
                    "gold label)."]
        elif j.get("asked"):
            out += [f"The judge failed its gate: it was asked about {j.get('judged_pairs', 0)} "
                    "DPF pairs for the record, and its verdicts counted for nothing."]
        elif j.get("kind") not in (None, "none"):
            out += ["**The judge failed its gate, so it has no vote**: it was not asked about "
                    "any training pair, and the labels are the rule's and the human gold's "
                    "alone. At 135M parameters the judge mostly answers by position; that is "
                    "the honest outcome, not a defect of the recipe."]
        out += ["", "Labels each source decided (DPF pairs + gold train pairs):", "",
                *sources_table(labels), "",
                f"Decisions: {labels['decisions']}."]
    elif labels:
        out += [f"Labels: {labels['examples']} examples; decisions {labels['decisions']}."]
    else:
        out += ["No label stats found."]
    out += ["", "### Zero-shot vs STaR judge (`judge_star`)", ""]
    if judge:
        zero, star = judge.get("zero_shot_held_out"), judge.get("star_held_out")
        out += [f"Held-out gold pairs: {judge['gold_held_out']} (30 % by sha256 of the id); "
                f"both orders asked, inconsistent verdicts abstain.", "", *judge_table(judge),
                "", *gate_table([("zero-shot (base model)", judge_gate(zero)),
                                 ("STaR-trained LoRA", judge_gate(star))]),
                "", f"Better on held-out gold: **{better_judge(zero, star).replace('_', '-')}** "
                "(the STaR judge labels only when it beats the zero-shot one: it must pass its "
                "gate, and beat the zero-shot judge's lower bound when that one passes too).",
                "",
                f"STaR sampling: {judge.get('star_sampling')}; SFT: {judge.get('sft')}. "
                f"`{judge.get('command')}`"]
        sft = judge.get("sft") or {}
        if sft.get("optimizer_steps") == 0:
            out += ["", "**The STaR LoRA made no optimizer step** within its time budget "
                    "(`--max-minutes`), so the 'STaR-trained' row measures the base model again."]
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
    ap.add_argument("--note", action="append", default=[],
                    help="a paragraph for the card's Notes section (repeatable): what the "
                         "recorded stats cannot say, e.g. where a stage's files came from")
    args = ap.parse_args(argv)
    written = publish_eval(args.adapter, args.run_dir)
    text = render(args.adapter, args.run_dir)
    if args.note:
        text += "\n## Notes\n\n" + "\n\n".join(args.note) + "\n"
    (args.adapter / "README.md").write_text(text)
    print(f"wrote {args.adapter / 'README.md'} ({len(text)} chars); per-case eval lines "
          f"{written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
