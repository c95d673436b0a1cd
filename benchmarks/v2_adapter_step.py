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
    python benchmarks/v2_adapter_step.py --device cuda --feed staged --forward-ms 2 --out DIR

``--device cuda`` (a GPU machine) puts the slots' history and lengths on the GPU as int32
(vLLM's own dtypes there) and, with ``--forward-ms``, queues a stand-in for the forward
pass (``torch.cuda._sleep``, calibrated) between ``apply_staged_writes`` and ``apply``,
each step starting from an idle GPU: ``apply`` then returns at once when the staged read
serves, and waits out the stand-in when it reads back after the wait (``--feed sync``).
The report gives ``apply`` alone, the adapter's host time less the stand-in's queueing,
and how many steps the staged read served. Without ``--ref`` only this checkout runs (a
GPU machine has no git history). Without vLLM (the GPU machine has none)
``vllm_standin.py`` stands in for the few vLLM names the adapter imports, and the report
says so.

On the CPU the device's tensor work (``index_select``, one device-to-host copy) runs on
the CPU. Writes ``v2_adapter_step.json`` and ``.md`` to --out (on a GPU:
``v2_adapter_step-cuda-<feed>.*``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import steering_step  # noqa: F401  (maps the checkout into a greyelephant package)

from greyelephant.benchmarks import vllm_standin  # noqa: E402
from greyelephant.benchmarks.ref_module import git_rev, load_ref_module, run_meta  # noqa: E402
from greyelephant.benchmarks.step_overlap import forward_stand_in  # noqa: E402
from greyelephant.benchmarks.v2_runner_states import (  # noqa: E402
    Device,
    Host,
    RequestStates,
    StepContext,
)

REPO = Path(__file__).resolve().parent.parent
PAD = 8  # entries past the batch in the fed-token and position buffers


def load_ref_adapter(ref: str):
    """The adapter class of commit ``ref``, loaded as a module beside this checkout's
    (its relative imports resolve to this checkout's package)."""
    return load_ref_module(ref, "control/logits_processor_v2.py",
                           "_logits_processor_v2_ref").SteeringLogitsProcessorV2


def make_adapter(cls, index, b: int, steered: set[int], prompt: list[int], length: int,
                 device: torch.device = torch.device("cpu")):
    """An adapter of class ``cls`` with ``b`` slots of ``length`` tokens of history, the
    ``steered`` ones steered; its core steps nothing (``apply`` returns the logits). On a
    GPU the history and lengths are int32 device tensors, as vLLM's runner keeps them."""
    from vllm import SamplingParams

    from greyelephant.benchmarks.steering_step import steering_args

    args = steering_args()
    dtype = torch.int32 if device.type == "cuda" else torch.int64
    states = RequestStates(device, b,
                        Device(torch.zeros(b, length, dtype=dtype, device=device)),
                        Host(np.full(b, len(prompt), dtype=np.int64)),
                        Host(np.full(b, len(prompt), dtype=np.int64)),
                        Device(torch.full((b,), len(prompt), dtype=dtype, device=device)))
    states.all_token_ids.gpu[:, :len(prompt)] = torch.tensor(prompt, dtype=dtype)
    adapter = cls(None, states, index=index)
    for slot in range(b):
        extra = {"steering": json.loads(json.dumps(args))} if slot in steered else None
        params = SamplingParams(temperature=0.0, max_tokens=1 << 20, extra_args=extra)
        adapter.add_request(slot, params)
    adapter.apply_staged_writes()
    adapter.batch.apply = lambda logits, fed=None: logits
    return adapter


def run(versions: dict, index, b: int, steps: int, warmup: int, steered_share: str,
        seed: int, feed: str = "sync", device: str = "cpu", forward_ms: float = 0.0
        ) -> dict[str, float]:
    """Median µs of each version's host time a step (``apply``; ``--feed staged``:
    ``apply_staged_writes`` + ``apply``), and, keyed ``NAME:pre``, ``NAME:apply``, of
    each call alone; ``NAME:staged``: the steps a staged read served."""
    prompt = list(range(100, 120))
    rng = np.random.default_rng(seed)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    forward, _ = forward_stand_in(device, forward_ms)
    steered = set(range(b)) if steered_share == "all" else set(range(0, b, 2))
    adapters = {name: make_adapter(cls, index, b, steered, prompt,
                                   len(prompt) + warmup + steps + 1, dev)
                for name, cls in versions.items()}
    names = list(adapters)
    times: dict[str, list[float]] = {name: [] for name in names}
    pre: dict[str, list[float]] = {name: [] for name in names}
    post: dict[str, list[float]] = {name: [] for name in names}
    logits = torch.zeros(b, 8, device=dev)
    staged = feed == "staged"
    for step in range(warmup + steps):
        order = rng.permutation(b).astype(np.int64)
        at = len(prompt) - 1 + step  # every row's fed token's position
        # each slot's fed token (at step 0 its prompt's last), at its batch row
        by_slot = (rng.integers(200, 40_000, b, dtype=np.int64) if step
                   else np.full(b, prompt[-1], dtype=np.int64))
        fed = torch.from_numpy(np.concatenate([by_slot[order], np.zeros(PAD, np.int64)]))
        pos = torch.full((b + PAD,), at, dtype=torch.int64)
        fed, pos = fed.to(dev), pos.to(dev)
        seq_lens = np.full(b, at + 1, dtype=np.int32) if staged else None
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:
            adapter = adapters[name]
            if staged and step:  # the runner's post_update of the previous step
                states = adapter.req_states
                history = states.all_token_ids.gpu
                history[:, at] = torch.from_numpy(by_slot).to(dev, history.dtype)
                states.total_len.gpu.fill_(at + 1)
            if cuda:  # (each step from an idle GPU, as after the sampler's read-back)
                torch.cuda.synchronize()
            ctx = StepContext(order, fed, pos, seq_lens)
            t0 = time.perf_counter()
            if staged:
                adapter.apply_staged_writes()
            t1 = time.perf_counter()
            if forward is not None:  # the forward pass, queued after the staged read
                forward()
            t2 = time.perf_counter()
            adapter.apply(logits, ctx)
            t3 = time.perf_counter()
            if step >= warmup:
                times[name].append((t1 - t0) + (t3 - t2))
                pre[name].append(t1 - t0)
                post[name].append(t3 - t2)
    if cuda:
        torch.cuda.synchronize()
    outs = {name: len(a._outs[0]) for name, a in adapters.items()}
    if len(set(outs.values())) != 1 or outs[names[0]] != warmup + steps - 1:
        raise RuntimeError(f"the adapters' outputs differ or lag: {outs}")
    for name, a in adapters.items():  # every slot's output is the tokens fed to it
        history = a.req_states.all_token_ids.gpu
        want = history[0, len(prompt):len(prompt) + outs[name]].tolist()
        if staged and a._outs[0] != want:
            raise RuntimeError(f"{name}: slot 0's output is not the tokens committed")
    got = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    got.update({f"{name}:pre": statistics.median(t) * 1e6 for name, t in pre.items()})
    got.update({f"{name}:apply": statistics.median(t) * 1e6 for name, t in post.items()})
    got.update({f"{name}:staged": float(getattr(a, "staged_steps", 0))
                for name, a in adapters.items()})
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", help="the older commit to compare against (none: this "
                                  "checkout alone)")
    ap.add_argument("--batches", default="16,64,256")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steered", choices=["all", "half"], default="all")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--feed", choices=["sync", "staged"], default="sync")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--forward-ms", type=float, default=0.0,
                    help="on a GPU: the forward pass's stand-in queued before apply")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    standin = vllm_standin.install_if_missing()
    from greyelephant.benchmarks.steering_step import smollm2_vocab
    from greyelephant.control.logits_processor_v2 import SteeringLogitsProcessorV2

    ref = git_rev(args.ref) if args.ref else None
    head = git_rev("HEAD") if args.ref else _checkout_rev()
    versions = {"current": SteeringLogitsProcessorV2}
    if ref:
        versions = {"ref": load_ref_adapter(ref), **versions}
    index = smollm2_vocab()
    batches = [int(x) for x in args.batches.split(",")]
    rounds = []
    for r in range(args.rounds):
        got = {str(b): run(versions, index, b, args.steps, args.warmup, args.steered, r,
                           args.feed, args.device, args.forward_ms)
               for b in batches}
        rounds.append(got)
        print(json.dumps({"round": r, "median_us": got}), flush=True)

    def med(b: int, key: str) -> float:
        return statistics.median(x[str(b)][key] for x in rounds)

    rows = []
    for b in batches:
        row = {"B": b, "current_us": round(med(b, "current"), 1),
               "current_apply_us": round(med(b, "current:apply"), 1),
               "current_staged_steps": med(b, "current:staged")}
        if ref:
            row.update({"ref_us": round(med(b, "ref"), 1),
                        "ref_apply_us": round(med(b, "ref:apply"), 1),
                        "ratio": round(med(b, "current") / med(b, "ref"), 3),
                        "ratio_rounds": [round(x[str(b)]["current"] / x[str(b)]["ref"], 2)
                                         for x in rounds]})
        if args.feed == "staged":  # (of which apply_staged_writes, before the forward)
            for name in versions:
                row[f"{name}_pre_us"] = round(med(b, f"{name}:pre"), 1)
        rows.append(row)
    device = torch.device(args.device)
    where = (f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
             if device.type == "cuda" else "cpu")
    meta = run_meta("v2_adapter_step", ref or "none (this checkout alone)", head, argv,
                    f"{args.steered} of B slots steered (dev set's 30 entities), one "
                    f"token a step, rows in a fresh random order every step; "
                    f"{args.warmup} warm-up + {args.steps} timed steps per version, "
                    "interleaved; median per round, median of the rounds; the core's "
                    "step stubbed out (the adapter's own work alone); feed: "
                    + ("the runner's commit, then apply_staged_writes + apply, both timed"
                       if args.feed == "staged" else "apply alone, no host positions")
                    + f"; device {where}"
                    + (f"; a {args.forward_ms} ms stand-in for the forward pass queued "
                       "before apply (not counted)" if args.forward_ms else "")
                    + ("; vLLM's names from benchmarks/vllm_standin.py (no vLLM here)"
                       if standin else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = ("v2_adapter_step" if device.type == "cpu"
            else f"v2_adapter_step-{device.type}-{args.feed}")
    (args.out / f"{stem}.json").write_text(
        json.dumps({**meta, "rows": rows, "rounds": rounds}, indent=1) + "\n")
    timed = args.warmup + args.steps
    title = (f"current vs {ref[:7]}" if ref else "this checkout") + f" ({device.type})"
    md = [f"# Runner-V2 adapter's own per-step work: {title}", "",
          *(f"- {k}: {v}" for k, v in meta.items()), ""]
    if ref:
        md += [f"| B | {ref[:7]} µs | current µs | current / {ref[:7]} | per round |",
               "|---|---|---|---|---|",
               *(f"| {r['B']} | {r['ref_us']} | {r['current_us']} | {r['ratio']:.2f} | "
                 + ", ".join(f"{x:.2f}" for x in r["ratio_rounds"]) + " |" for r in rows),
               ""]
    md += ["This checkout's adapter, µs a step (`apply` alone: with a forward stand-in "
           "queued, what it waited), and the steps of each round's "
           f"{timed} a staged read served:", "",
           "| B | host µs | `apply` µs | staged steps |", "|---|---|---|---|",
           *(f"| {r['B']} | {r['current_us']} | {r['current_apply_us']} | "
             f"{r['current_staged_steps']:.0f} of {timed} |" for r in rows), ""]
    if args.feed == "staged":
        md += ["Of which `apply_staged_writes` (before the forward pass is queued), µs:", "",
               "| B | " + " | ".join(ref[:7] if n == "ref" else n for n in versions) + " |",
               "|---|" + "---|" * len(versions),
               *(f"| {r['B']} | " + " | ".join(str(r[f'{n}_pre_us']) for n in versions)
                 + " |" for r in rows), ""]
    (args.out / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


def _checkout_rev() -> str:
    """This checkout's commit, or "unknown" where there is no git (a GPU machine's copy
    of the working tree)."""
    try:
        return git_rev("HEAD")
    except Exception:  # noqa: BLE001 - no git, or not a repository
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
