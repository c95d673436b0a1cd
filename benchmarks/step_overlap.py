"""What a steered decode step adds on a GPU while the model's forward pass is still
running: a measurement with its own baseline, for a GPU machine.

In an engine, a logits processor is called as soon as the forward pass and the logits
are *enqueued* on the GPU, not when they are done. Under runner V1, the plan
(``SteeringBatch.controls``: the rows' automata, masks, biases, loop guards) reads host
state only (the rows' output lists), so it runs while the GPU is still busy; the step
first waits for the GPU at the rollback check's argmax. What steering adds to the step
is then the host work after that wait (the check's bookkeeping, the upload, the kernel
launch, the forced tokens) plus whatever the plan takes beyond the forward's time. (Runner
V2's adapter takes the same order on the steps whose fed tokens it read before the
forward pass was queued, ``apply_staged_writes``; the core's path is the one measured
here. After its fallback, a read-back's wait, the whole plan is exposed.)

Per batch size, over the same decode loop as ``steering_step_compare`` (every row
steered with the dev set's 30 entities, greedy, rollback on; see ``step_phases``):

* ``host``: ``batch.apply`` with nothing in flight (the host cost the other benchmarks
  report);
* ``steered``: a stand-in for the forward pass (``torch.cuda._sleep`` calibrated to
  ``--forward-ms``) enqueued, then ``batch.apply``, then a synchronisation;
* ``late``: the same with ``SteeringBatch.early_upload`` off (the plan's arrays packed
  and sent after the rollback check, with the forced tokens, as before that option);
* ``forward``: the same with an unsteered batch (the forward alone);
* ``exposed`` = steered - forward and ``exposed_late`` = late - forward: what steering
  adds to the step.

They are interleaved step by step (the steered loop's steps take the three modes in
turn), medians reported; JSON and markdown go to ``--out``.

    python benchmarks/step_overlap.py --device cuda --batches 64,256 --forward-ms 10

On a CPU (``--device cpu``) nothing runs asynchronously, so there is no forward to
overlap: the stand-in is a no-op, and the run only exercises the code (a dry run, labelled
so; its figures are not a measurement of overlap).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import steering_step  # noqa: F401  (maps the checkout into a greyelephant package)

from greyelephant.benchmarks.step_loop import DecodeLoop  # noqa: E402
from greyelephant.benchmarks.step_phases import make_loop  # noqa: E402

HERE = Path(__file__).resolve().parent


class _Unsteered:
    """A batch with no steered row: ``apply`` leaves the logits as they are."""

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


def forward_stand_in(device: str, ms: float) -> tuple[Callable[[], None] | None, float]:
    """(a callable that enqueues about ``ms`` of GPU work, the GPU cycles it spins), or
    (None, 0) on a CPU. Calibrated once with CUDA events."""
    if torch.device(device).type != "cuda" or ms <= 0:
        return None, 0.0
    probe = 1 << 22
    torch.cuda._sleep(probe)  # (warm: the first launch pays for loading the kernel)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(probe)
    end.record()
    end.synchronize()
    cycles = int(probe * ms / start.elapsed_time(end))
    return (lambda: torch.cuda._sleep(cycles)), float(cycles)


def measure(b: int, device: str, steps: int, warmup: int,
            in_flight: Callable[[], None] | None) -> dict[str, float]:
    """Median ms of ``host``, ``steered``, ``late`` and ``forward`` steps at batch ``b``
    (see the module doc), ``exposed`` and ``exposed_late``."""
    steered = make_loop(b, device=device)
    plain = DecodeLoop(_Unsteered(), [[] for _ in range(b)], [0, 1, 2, 3],
                       steered.logits_pool, ends=frozenset(), restart=lambda i: [])
    for _ in range(warmup):
        steered.step(count=False)
        plain.step(count=False)
    plain.in_flight = in_flight
    modes = ("host", "steered", "late")
    took: dict[str, list[float]] = {name: [] for name in (*modes, "forward")}
    for k in range(3 * steps):
        mode = modes[k % 3]
        steered.in_flight = None if mode == "host" else in_flight
        steered.batch.early_upload = mode != "late"
        took[mode].append(steered.step())
        if mode == "steered":
            took["forward"].append(plain.step())
    steered.batch.early_upload = True
    ms = {name: statistics.median(xs) * 1e3 for name, xs in took.items()}
    ms["exposed"] = ms["steered"] - ms["forward"]
    ms["exposed_late"] = ms["late"] - ms["forward"]
    return ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--forward-ms", type=float, default=10.0,
                    help="the forward pass's stand-in, in ms of GPU time (a decode step of "
                         "a mid-sized model at B = 64-256 takes about 10-30 ms)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("greyelephant.control").setLevel(logging.ERROR)
    in_flight, cycles = forward_stand_in(args.device, args.forward_ms)
    dry = in_flight is None
    rows = []
    for b in [int(x) for x in args.batches.split(",")]:
        ms = measure(b, args.device, args.steps, args.warmup, in_flight)
        rows.append({"B": b, **{f"{k}_ms": round(v, 4) for k, v in ms.items()}})
        print(json.dumps(rows[-1]), flush=True)
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()}",
            "device": (torch.cuda.get_device_name() if not dry else args.device),
            "forward_ms": args.forward_ms, "sleep_cycles": cycles,
            "dry_run": dry,
            "command": "python benchmarks/step_overlap.py " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "steps": args.steps, "warmup": args.warmup}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"step_overlap-{args.device}"
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1)
                                           + "\n")
    lines = [f"# Steering's added time with the forward pass in flight ({meta['device']})", "",
             *(f"- {k}: {v}" for k, v in meta.items()), ""]
    if dry:
        lines += ["**A dry run on a CPU: nothing was in flight, so these figures measure "
                  "no overlap.**", ""]
    lines += ["| B | host ms | forward alone ms | forward + steered ms | exposed ms |"
              " exposed, plan sent after the check, ms | exposed / host |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        share = r["exposed_ms"] / r["host_ms"] if r["host_ms"] else float("nan")
        lines.append(f"| {r['B']} | {r['host_ms']:.3f} | {r['forward_ms']:.3f} | "
                     f"{r['steered_ms']:.3f} | {r['exposed_ms']:.3f} | "
                     f"{r['exposed_late_ms']:.3f} | {share:.2f} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
