"""End-to-end check of the steering logits processor on a real vLLM engine.

    python -m greyelephant.control.engine_check [--model DIR] [--cases 8] [--max-tokens 96]

Runs greedy chat generations for dev-set cases twice — plain and with
``extra_args={"steering": ...}`` (ban + prefer bias, no directive, so only the processor
acts) — and reports, per case, whether the avoided entity was named (the shared detector)
and whether the preferred one was. Exits non-zero if any steered output names an avoided
entity. Starts an engine (~25 s on CPU, both cores): run it sparingly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEV = Path("/work/shared/evals/pink_elephant_dev.jsonl")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help="model dir (default: $GREYELEPHANT_MODEL_DIR or the embedded model)")
    ap.add_argument("--dev", default=str(DEV))
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--out", default=None, help="write the per-case report as JSON here")
    args = ap.parse_args(argv)
    if args.model is None:
        from greyelephant.server.model_store import default_model_dir

        args.model = default_model_dir()

    from vllm import LLM, SamplingParams

    from greyelephant.control.detector import detector_for
    from greyelephant.control.logits_processor import SteeringLogitsProcessor
    from greyelephant.control.spec import parse_steering

    cases = [json.loads(x) for x in Path(args.dev).read_text().splitlines() if x.strip()]
    cases = cases[: args.cases]
    t0 = time.perf_counter()
    llm = LLM(args.model, enforce_eager=True, max_model_len=2048, gpu_memory_utilization=0.3,
              logits_processors=[SteeringLogitsProcessor])
    start_s = time.perf_counter() - t0

    msgs, sps = [], []
    for case in cases:
        spec = parse_steering({"avoid": [{"entity": case["avoid"],
                                          "aliases": case.get("avoid_aliases", [])}],
                               "prefer": [case["prefer"]], "strategies": ["logits"]})
        for steer in (False, True):
            msgs.append(case["messages"])
            extra = {"steering": spec.engine_args()} if steer else None
            sps.append(SamplingParams(temperature=0.0, max_tokens=args.max_tokens,
                                      extra_args=extra))
    t0 = time.perf_counter()
    outs = llm.chat(msgs, sampling_params=sps, use_tqdm=False)
    gen_s = time.perf_counter() - t0

    report, failures = [], 0
    for i, case in enumerate(cases):
        avoid = detector_for([(case["avoid"], tuple(case.get("avoid_aliases", [])))])
        prefer = detector_for([case["prefer"]])
        plain, steered = outs[2 * i].outputs[0].text, outs[2 * i + 1].outputs[0].text
        row = {
            "id": case["id"], "avoid": case["avoid"], "prefer": case["prefer"],
            "plain_mentions": avoid.count(plain), "steered_mentions": avoid.count(steered),
            "plain_prefer": prefer.count(plain), "steered_prefer": prefer.count(steered),
            "steered_text": steered,
        }
        failures += row["steered_mentions"] > 0
        report.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "steered_text"}))
        print("   steered:", steered[:240].replace("\n", " "))
    summary = {
        "engine_start_s": round(start_s, 1), "generate_s": round(gen_s, 1),
        "cases": len(cases),
        "plain_mention_rate": sum(r["plain_mentions"] > 0 for r in report) / len(cases),
        "steered_mention_rate": sum(r["steered_mentions"] > 0 for r in report) / len(cases),
        "plain_prefer_rate": sum(r["plain_prefer"] > 0 for r in report) / len(cases),
        "steered_prefer_rate": sum(r["steered_prefer"] > 0 for r in report) / len(cases),
    }
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "cases": report}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
