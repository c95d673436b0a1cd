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

``--runner v2`` measures runner V2's order instead (vLLM 0.32's default on GPUs): the
batch is the V2 adapter (``control/logits_processor_v2.py``) around its core, its slots'
history and lengths on the device as int32 (:class:`V2Feed`). Each step the previous
step's token is committed there (the runner's ``post_update``, untimed), then, timed:
``apply_staged_writes`` (which queues the staged read of the fed tokens), the forward's
stand-in, ``apply``, a synchronisation. The modes: ``host`` (nothing in flight),
``steered``, and ``read_back`` (the staged read discarded, as when it cannot serve: the
adapter reads the fed tokens back after waiting for the forward pass, so its whole plan
is exposed); ``forward`` and ``exposed`` as above. Without vLLM (the GPU machine has
none), ``vllm_standin.py`` stands in for the names the adapter imports, and the report
says so.
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

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import steering_step  # noqa: F401  (maps the checkout into a greyelephant package)

from greyelephant.benchmarks import vllm_standin  # noqa: E402
from greyelephant.benchmarks.step_loop import DecodeLoop  # noqa: E402
from greyelephant.benchmarks.step_phases import STOP, make_loop  # noqa: E402
from greyelephant.benchmarks.v2_runner_states import (  # noqa: E402
    Device,
    Host,
    RequestStates,
    StepContext,
)
from greyelephant.benchmarks.steering_step import (  # noqa: E402
    corpus,
    encode,
    smollm2_vocab,
    steering_args,
)

HERE = Path(__file__).resolve().parent


class _Unsteered:
    """A batch with no steered row: ``apply`` leaves the logits as they are."""

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


class V2Feed:
    """Runner V2's side of a decode loop, for :class:`DecodeLoop` (``--runner v2``): the
    V2 adapter around its core, its slots' history and lengths on ``device`` as int32
    (vLLM's dtypes), slot i being batch row i. ``prepare`` commits each row's newest
    token (what the previous step sampled: the runner's ``post_update``) and builds the
    step's context; ``before_forward`` is ``apply_staged_writes`` (with ``stage`` off,
    its staged read is then discarded, as when it cannot serve); ``apply`` is the
    adapter's; ``restart`` puts a new request in a slot."""

    PROMPT = list(range(100, 120))

    def __init__(self, b: int, device: str, index, length: int = 1 << 14):
        from vllm import SamplingParams

        from greyelephant.control.logits_processor_v2 import SteeringLogitsProcessorV2

        dev = torch.device(device)
        p = len(self.PROMPT)
        self.device, self.b, self.length = dev, b, length
        history = torch.zeros(b, length, dtype=torch.int32, device=dev)
        history[:, :p] = torch.tensor(self.PROMPT, dtype=torch.int32, device=dev)
        self.states = RequestStates(dev, b, Device(history),
                                Host(np.full(b, p, dtype=np.int32)),
                                Host(np.full(b, p, dtype=np.int32)),
                                Device(torch.full((b,), p, dtype=torch.int32, device=dev)))
        self.adapter = SteeringLogitsProcessorV2(None, self.states, index=index)
        self.batch = self.adapter.batch
        self.params = SamplingParams(temperature=0.0, max_tokens=1 << 20,
                                     stop_token_ids=sorted(STOP),
                                     extra_args={"steering": steering_args()})
        self.params.all_stop_token_ids.update(STOP)
        self.order = np.arange(b, dtype=np.int32)
        self.stage = True
        self.ctx = None

    def restart(self, i: int) -> list[int]:
        """A new request in slot i (its prompt in the history), set up at the next
        ``before_forward``; returns its (empty) output list."""
        self.states.total_len.gpu[i] = len(self.PROMPT)
        self.adapter.add_request(i, self.params)
        return []

    def prepare(self, outs: list[list[int]]) -> None:
        p = len(self.PROMPT)
        lengths = np.fromiter(map(len, outs), dtype=np.int64, count=len(outs))
        if int(lengths.max()) + p > self.length:
            raise RuntimeError("V2Feed: a request outgrew the history; restart sooner")
        newest = np.array([o[-1] for o in outs], dtype=np.int64)
        at = p + lengths - 1  # (each row has at least one output token here)
        rows = torch.arange(self.b, device=self.device)
        history, total = self.states.all_token_ids.gpu, self.states.total_len.gpu
        history[rows, torch.from_numpy(at).to(self.device)] = (
            torch.from_numpy(newest).to(self.device, torch.int32))
        total.copy_(torch.from_numpy(at + 1).to(self.device, torch.int32))
        self.ctx = StepContext(self.order, torch.from_numpy(newest).to(self.device),
                              torch.from_numpy(at).to(self.device),
                              (at + 1).astype(np.int32))

    def before_forward(self) -> None:
        self.adapter.apply_staged_writes()
        if not self.stage:
            self.adapter._staged = None  # (the read-back path: as when a read fails)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.adapter.apply(logits, self.ctx)


def make_v2_loop(b: int, device: str) -> tuple[DecodeLoop, V2Feed]:
    """:func:`.step_phases.make_loop`'s workload (every row steered with the dev set's 30
    entities, greedy, rollback on) through runner V2's adapter (:class:`V2Feed`)."""
    index = smollm2_vocab()
    feed = V2Feed(b, device, index)
    gen = torch.Generator().manual_seed(0)
    pool = [torch.randn(b, index.vocab_size, generator=gen).to(device) for _ in range(4)]
    outs = [feed.restart(i) for i in range(b)]
    loop = DecodeLoop(feed, outs, encode(index, corpus()), pool, ends=STOP,
                      restart=feed.restart)
    return loop, feed


def measure_v2(b: int, device: str, steps: int, warmup: int,
               in_flight: Callable[[], None] | None) -> dict[str, float]:
    """Median ms of ``host``, ``steered``, ``read_back`` and ``forward`` steps at batch
    ``b`` under runner V2's order (see the module doc), ``exposed``, ``exposed_read_back``
    and the share of the ``steered`` steps the staged read served."""
    steered, feed = make_v2_loop(b, device)
    forward = in_flight or (lambda: None)

    def with_forward() -> None:
        feed.before_forward()
        forward()

    def set_mode(mode: str) -> None:
        feed.stage = mode != "read_back"
        steered.in_flight = feed.before_forward if mode == "host" else with_forward

    steered.in_flight = with_forward
    ms, staged = _interleaved(steered, in_flight, ("host", "steered", "read_back"),
                              set_mode, steps, warmup,
                              counter=lambda: feed.adapter.staged_steps)
    feed.stage = True
    ms["exposed_read_back"] = ms["read_back"] - ms["forward"]
    ms["staged_share"] = staged["steered"] / steps
    return ms


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

    def set_mode(mode: str) -> None:
        steered.in_flight = None if mode == "host" else in_flight
        steered.batch.early_upload = mode != "late"

    ms, _ = _interleaved(steered, in_flight, ("host", "steered", "late"), set_mode, steps,
                         warmup)
    steered.batch.early_upload = True
    ms["exposed_late"] = ms["late"] - ms["forward"]
    return ms


def _interleaved(steered: DecodeLoop, in_flight: Callable[[], None] | None,
                 modes: tuple[str, ...], set_mode: Callable[[str], None], steps: int,
                 warmup: int, counter: Callable[[], int] | None = None
                 ) -> tuple[dict[str, float], dict[str, int]]:
    """Run ``steered``'s steps in the ``modes`` in turn (``set_mode`` sets each up), each
    ``"steered"`` one followed by a step of an unsteered batch with ``in_flight`` (the
    forward alone), after ``warmup`` steps of both; returns the median ms of each mode and
    of ``forward``, with ``exposed`` = steered - forward, and per mode how much
    ``counter()`` grew over its steps."""
    b = len(steered.outs)
    plain = DecodeLoop(_Unsteered(), [[] for _ in range(b)], [0, 1, 2, 3],
                       steered.logits_pool, ends=frozenset(), restart=lambda i: [])
    for _ in range(warmup):
        steered.step(count=False)
        plain.step(count=False)
    plain.in_flight = in_flight
    took: dict[str, list[float]] = {name: [] for name in (*modes, "forward")}
    grew = dict.fromkeys(modes, 0)
    for k in range(len(modes) * steps):
        mode = modes[k % len(modes)]
        set_mode(mode)
        before = counter() if counter is not None else 0
        took[mode].append(steered.step())
        if counter is not None:
            grew[mode] += counter() - before
        if mode == "steered":
            took["forward"].append(plain.step())
    ms = {name: statistics.median(xs) * 1e3 for name, xs in took.items()}
    ms["exposed"] = ms["steered"] - ms["forward"]
    return ms, grew


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
    ap.add_argument("--runner", choices=["v1", "v2"], default="v1",
                    help="v2: runner V2's order, through its adapter (see the module doc)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("greyelephant.control").setLevel(logging.ERROR)
    v2 = args.runner == "v2"
    standin = v2 and vllm_standin.install_if_missing()
    in_flight, cycles = forward_stand_in(args.device, args.forward_ms)
    dry = in_flight is None
    rows = []
    for b in [int(x) for x in args.batches.split(",")]:
        ms = (measure_v2 if v2 else measure)(b, args.device, args.steps, args.warmup,
                                             in_flight)
        rows.append({"B": b, **{(k if k == "staged_share" else f"{k}_ms"): round(v, 4)
                                for k, v in ms.items()}})
        print(json.dumps(rows[-1]), flush=True)
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()}",
            "device": (torch.cuda.get_device_name() if not dry else args.device),
            "forward_ms": args.forward_ms, "sleep_cycles": cycles,
            "dry_run": dry, "runner": args.runner,
            **({"vllm": "benchmarks/vllm_standin.py (no vLLM here)"} if standin else {}),
            "command": "python benchmarks/step_overlap.py " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "steps": args.steps, "warmup": args.warmup}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"step_overlap-{args.device}" + ("-v2" if v2 else "")
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1)
                                           + "\n")
    lines = [f"# Steering's added time with the forward pass in flight ({meta['device']}, "
             f"runner {args.runner.upper()}'s order)", "",
             *(f"- {k}: {v}" for k, v in meta.items()), ""]
    if dry:
        lines += ["**A dry run on a CPU: nothing was in flight, so these figures measure "
                  "no overlap.**", ""]
    late, late_key = (("exposed, fed tokens read back after the wait, ms", "exposed_read_back_ms")
                      if v2 else ("exposed, plan sent after the check, ms", "exposed_late_ms"))
    lines += ["| B | host ms | forward alone ms | forward + steered ms | exposed ms |"
              f" {late} | exposed / host |" + (" staged read served |" if v2 else ""),
              "|---|---|---|---|---|---|---|" + ("---|" if v2 else "")]
    for r in rows:
        share = r["exposed_ms"] / r["host_ms"] if r["host_ms"] else float("nan")
        lines.append(f"| {r['B']} | {r['host_ms']:.3f} | {r['forward_ms']:.3f} | "
                     f"{r['steered_ms']:.3f} | {r['exposed_ms']:.3f} | "
                     f"{r[late_key]:.3f} | {share:.2f} |"
                     + (f" {100 * r['staged_share']:.0f}% |" if v2 else ""))
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
