"""Per-step cost of the steering processor's work: this checkout against an older commit,
in the same run.

Each code version runs in its own subprocess over the same workload: SmolLM2's real
vocabulary (``benchmarks/data/smollm2_vocab.json.gz``), every row steered with the dev
set's 30 entities (aliases included) and the ``logits`` strategy at that version's
defaults, greedy; rows advance over the same real text (``steering_step.corpus``) at
staggered offsets, under the masks (``step_loop.decode_steps``, the same loop as
``steering_step``); random logits; the timed call is ``SteeringBatch.apply``. This checkout
runs twice: at its defaults (rollback on) and with ``max_rollbacks: 0`` (the prefix ban
alone, what a commit from before rollback does). Versions alternate (ref, current,
current without rollback, ref, …) so that a noisy machine slows all alike; the result per
version and batch size is the median over rounds of each round's median step.

The older commit is exported with ``git archive`` into a temporary folder; its
``control``/``kernels`` folders are mapped into a ``greyelephant`` package the same way as
for this checkout, so nothing is installed.

    python -m greyelephant.benchmarks.steering_step_compare --ref b1bd887 --device cpu

Writes ``steering_step_compare-<device>.json`` and ``.md`` to --out (default
benchmarks/results).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Runs inside the subprocess, with the version under test importable as ``greyelephant``.
# It uses only what both old and new versions have, adapting to the two known signatures.
WORKER = r"""
import gzip, importlib.util, inspect, json, statistics, sys
import torch
cfg = json.loads(sys.argv[1])
if cfg["threads"]:
    torch.set_num_threads(cfg["threads"])
import logging
logging.getLogger("greyelephant.control").setLevel(logging.ERROR)
from greyelephant.control.spec import parse_steering
from greyelephant.control import steering_batch as sb
from greyelephant.control.vocab_index import VocabIndex

doc = json.loads(gzip.open(cfg["vocab"], "rt").read())
index = VocabIndex.from_token_bytes(
    [None if t is None else bytes.fromhex(t) for t in doc["tokens"]], key="smollm2",
    kind=doc["kind"])
tokens = json.loads(open(cfg["tokens"]).read())
spec = parse_steering(cfg["steering"])
if hasattr(spec, "engine_steering"):
    args = spec.engine_steering(signal=16).to_extra_args()
else:
    args = spec.engine_args()
add_params = list(inspect.signature(sb.SteeringBatch.add).parameters)
stop = frozenset({2, 16})
if "request" in add_params:
    extra = sb.RequestInfo(stop_ids=stop, temperature=0.0, max_tokens=1 << 20)
else:
    extra = stop
spec_loop = importlib.util.spec_from_file_location("step_loop", cfg["loop"])
loop = importlib.util.module_from_spec(spec_loop)
spec_loop.loader.exec_module(loop)
result = {}
for b in cfg["batches"]:
    batch = sb.SteeringBatch(index, cfg["device"])

    def restart(i):
        out = []
        batch.add(i, args, out, extra)
        return out

    outs = [restart(i) for i in range(b)]
    gen = torch.Generator(device="cpu").manual_seed(0)
    logits = [torch.randn(b, index.vocab_size, generator=gen).to(cfg["device"])
              for _ in range(4)]
    run = loop.decode_steps(batch, outs, tokens, logits, warmup=cfg["warmup"],
                            steps=cfg["steps"], ends=stop, restart=restart)
    result[str(b)] = statistics.median(run["times"]) * 1e3
print("RESULT " + json.dumps(result))
"""


def package_root(tree: Path, into: Path) -> Path:
    """A folder holding a ``greyelephant`` package of symlinks onto ``tree``'s folders (as
    pyproject's package-dir maps them)."""
    root = into / "greyelephant"
    root.mkdir(parents=True)
    for f in (tree / "greyelephant").glob("*.py"):
        (root / f.name).symlink_to(f)
    for folder in ("control", "kernels"):
        (root / folder).symlink_to(tree / folder)
    return into


def export(ref: str, into: Path) -> Path:
    """The tree of commit ``ref``, extracted under ``into``."""
    tree = into / "tree"
    tree.mkdir()
    archive = into / "tree.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", ref], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def run_version(pythonpath: Path, cfg: dict) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], env=env,
                          cwd=pythonpath, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"worker failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="the older commit to compare against")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="16,256")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)

    from greyelephant.benchmarks.steering_step import corpus, smollm2_vocab, encode

    cases = [json.loads(line) for line in (HERE / "data" / "pink_elephant_dev.jsonl")
             .read_text().splitlines() if line.strip()]
    steering = {"avoid": [{"entity": c["avoid"], "aliases": c["avoid_aliases"]} for c in cases],
                "prefer": ["grey elephant"], "strategies": ["logits"]}
    ref_sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.ref],
                             capture_output=True, text=True, check=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "control",
                            "kernels"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tokens = tmp / "tokens.json"
        tokens.write_text(json.dumps(encode(smollm2_vocab(), corpus())))
        cfg = {"vocab": str(HERE / "data" / "smollm2_vocab.json.gz"), "tokens": str(tokens),
               "loop": str(HERE / "step_loop.py"),
               "steering": steering, "device": args.device, "threads": args.threads,
               "batches": [int(x) for x in args.batches.split(",")], "steps": args.steps,
               "warmup": args.warmup}
        current = package_root(REPO, tmp / "current-pkg")
        versions = {"ref": (package_root(export(ref_sha, tmp), tmp / "ref-pkg"), cfg),
                    "current": (current, cfg),
                    "current_no_rollback": (current, {**cfg, "steering": {
                        **steering, "max_rollbacks": 0}})}
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
        for r in range(args.rounds):
            for name, (path, version_cfg) in versions.items():
                res = run_version(path, version_cfg)
                rounds[name].append(res)
                print(json.dumps({"round": r, "version": name, "median_ms": res}), flush=True)
    rows = []
    for b in cfg["batches"]:
        ms = {name: statistics.median(x[str(b)] for x in rounds[name]) for name in rounds}
        rows.append({"B": b, "ref_ms": round(ms["ref"], 4),
                     "current_ms": round(ms["current"], 4),
                     "current_no_rollback_ms": round(ms["current_no_rollback"], 4),
                     "current_over_ref": round(ms["current"] / ms["ref"], 3),
                     "current_no_rollback_over_ref": round(
                         ms["current_no_rollback"] / ms["ref"], 3)})
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "load_average": os.getloadavg(), "device": args.device,
            "ref": ref_sha, "current": head + (" + uncommitted control/kernels changes"
                                               if dirty else ""),
            "command": "python -m greyelephant.benchmarks.steering_step_compare " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "workload": "SmolLM2 vocabulary; every row steered (dev set's 30 entities, "
                        "logits strategy, each version's defaults), greedy; "
                        f"{args.warmup} warm-up + {args.steps} timed steps; median per "
                        f"round, median of {args.rounds} alternating rounds"}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"steering_step_compare-{args.device}"
    (args.out / f"{stem}.json").write_text(
        json.dumps({**meta, "rows": rows, "rounds": rounds}, indent=2) + "\n")
    lines = [f"# Steering per-step cost: current vs {args.ref} ({args.device})", "",
             *(f"- {k}: {v}" for k, v in meta.items()), "",
             f"| B | {args.ref} ms | current ms (rollback on) | current / {args.ref} "
             f"| current, max_rollbacks 0, ms | that / {args.ref} |",
             "|---|---|---|---|---|---|",
             *(f"| {r['B']} | {r['ref_ms']:.3f} | {r['current_ms']:.3f} "
               f"| {r['current_over_ref']:.2f} | {r['current_no_rollback_ms']:.3f} "
               f"| {r['current_no_rollback_over_ref']:.2f} |" for r in rows)]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
