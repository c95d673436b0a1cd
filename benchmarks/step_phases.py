"""Where one steered decode step's time goes on the CPU: a diagnosis, not a benchmark.

Runs ``steering_step_compare``'s workload (SmolLM2's vocabulary, every row steered with
the dev set's 30 entities, greedy, rollback on, rows writing real text through
:class:`.step_loop.DecodeLoop`) on this checkout alone, and prints medians over the timed
steps of:

* the step, and its phases as ``steering_step``'s :class:`PhaseTimer` splits them:
  ``controls`` (building the plan), ``_check`` (the rollback check), ``rest`` (the logits'
  numpy view, applying the plan, rollback signals);
* ``controls`` cold (as the step runs it) and warm (the same call again at once, with no
  token left to advance), in a second pass: how much of the plan is cache misses;
* a few torch calls on the logits, cold (first thing after a step's logits copy) and warm
  (CPU only);
* with ``--profile N``: cProfile's top functions by own time over N more steps;
* with ``--parts``: wall-clock timers around named functions of ``greyelephant.control``
  (``module:Class.method`` or ``module:function``, comma-separated; ``default``: the
  parts of a many-spec step) over one more pass, per part: calls a step, µs a call, ms a
  step. Nested parts count inside each other.

    python -m greyelephant.benchmarks.step_phases --batch 16 --steps 3000 [--compiled off]
    python benchmarks/step_phases.py --device cuda --batch 256 --steps 300 --profile 300

``--lanes on|off`` sets ``SteeringBatch(lanes=...)`` (control/step_states.py; default: the
batch's, on with the compiled loops);
``--host-path gpu`` runs a GPU step's host work on a CPU (see :func:`gpu_host_path`);
``--distinct K`` gives each request (each row and each restart) its own spec of K of the
30 entities, drawn at random, and ``--own-prefer`` its drawn cases' own preferred entities
too, as ``steering_step_compare`` does.

    python -m greyelephant.benchmarks.step_phases --batch 256 --steps 300 \
        --host-path gpu --distinct 10 --own-prefer --parts default

Each step's logits are copied into the loop's buffer first (3 MB at B = 16), which is what
leaves the caches cold, as the model's forward pass does in an engine.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import json
import logging
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import steering_step  # noqa: F401  (maps the checkout into a greyelephant package)

from greyelephant.benchmarks.step_loop import DecodeLoop, memoised_argmax_rows  # noqa: E402
from greyelephant.benchmarks.steering_step import (  # noqa: E402
    DATA,
    SIGNAL,
    PhaseTimer,
    corpus,
    encode,
    smollm2_vocab,
    steering_args,
)
from greyelephant.control import steering_batch as sb  # noqa: E402
from greyelephant.control.spec import parse_steering  # noqa: E402
from greyelephant.control.step_upload import StepUpload  # noqa: E402

STOP = frozenset({2, SIGNAL})  # EOS and the signal token, as in steering_step_compare
# --parts default: the parts of a many-spec step (see docs/steering.md, "Many specs at once")
DEFAULT_PARTS = (
    "steering_batch:SteeringBatch.controls", "steering_batch:SteeringBatch._plain_step",
    "ban_automaton:CompiledSteering._state_mask", "ban_automaton:CompiledSteering.advance",
    "ban_automaton:PreferSide._tokens", "step_states:Lanes.advance",
    "step_states:_compute_many", "transition_arrays:SpecArrays.__init__",
    "steering_batch:SteeringBatch._pooled", "step_states:Lanes.set_plan",
    "mask_table:MaskTable.slot", "steering_batch:SteeringBatch._check")


def make_loop(b: int, compiled: bool | None = None, device: str = "cpu",
              lanes: bool | None = None, distinct: int = 0,
              own_prefer: bool = False) -> DecodeLoop:
    """A decode loop of ``b`` steered rows over ``steering_step``'s vocabulary, steering
    and text (the comparison's workload); ``compiled``, ``lanes``: ``SteeringBatch``'s
    (None: its default); ``distinct``, ``own_prefer``: see the module doc."""
    index = smollm2_vocab()
    args = steering_args()
    info = sb.RequestInfo(stop_ids=STOP, temperature=0.0, max_tokens=1 << 20)
    batch = sb.SteeringBatch(index, device, compiled=compiled, lanes=lanes)
    cases = [json.loads(line) for line in (DATA / "pink_elephant_dev.jsonl").read_text()
             .splitlines() if line.strip()]
    draw = random.Random(b)

    def restart(i: int) -> list[int]:
        out: list[int] = []
        row_args = args
        if distinct:
            drawn = [cases[j] for j in sorted(draw.sample(range(len(cases)), distinct))]
            row_args = parse_steering({
                "avoid": [{"entity": c["avoid"], "aliases": c["avoid_aliases"]}
                          for c in drawn],
                "prefer": [c["prefer"] for c in drawn] if own_prefer else ["grey elephant"],
            }).engine_steering(signal=SIGNAL).to_extra_args()
        batch.add(i, row_args, out, info)
        return out

    gen = torch.Generator().manual_seed(0)
    pool = [torch.randn(b, index.vocab_size, generator=gen).to(device) for _ in range(4)]
    outs = [restart(i) for i in range(b)]
    return DecodeLoop(batch, outs, encode(index, corpus()), pool, ends=STOP, restart=restart)


def gpu_host_path(batch: sb.SteeringBatch) -> Callable[[], None]:
    """Make a CPU batch take a GPU step's host path (what ``test_device_path`` checks
    against the CPU path): no id lists, one packed upload, and logits numpy "cannot
    read". The check's torch argmax, a device op on a GPU but tens of milliseconds on
    one CPU thread, is memoised per logits tensor of the loop's pool (the step's logits
    are a fresh copy of one, unchanged until the check has read them), so that the
    ``_check`` phase shows the host's own work. Returns what undoes the module patches."""
    batch.sparse_ids = False
    batch._upload = StepUpload("cpu", pack=True)
    numpy_view, argmax_rows = sb._numpy_view, sb._argmax_rows
    sb._numpy_view = lambda t: None
    sb._argmax_rows = memoised_argmax_rows(argmax_rows)

    def restore() -> None:
        sb._numpy_view, sb._argmax_rows = numpy_view, argmax_rows

    return restore


def controls_twice(batch: sb.SteeringBatch, cold: list[float], warm: list[float]) -> None:
    """Wrap ``batch.controls``: each call runs it as the step does (cold), then once more
    at once (warm: every token already advanced, the same rows and memos), timing both;
    the first call's plan is the step's."""
    method = batch.controls
    pc = time.perf_counter

    def controls(idx, vocab, *fed):
        t0 = pc()
        plan = method(idx, vocab, *fed)
        t1 = pc()
        method(idx, vocab, *fed)
        cold.append(t1 - t0)
        warm.append(pc() - t1)
        return plan

    batch.controls = controls


def time_parts(names: list[str], loop: DecodeLoop, steps: int
               ) -> list[tuple[str, int, float]]:
    """(part, calls, seconds) of each named function of ``greyelephant.control`` over
    ``steps`` more steps, by a wall-clock wrapper put in its place for those steps (a
    method on its class, a function in its module, where callers look it up at call
    time), largest first."""
    took = {name: [0, 0.0] for name in names}
    undo = []
    pc = time.perf_counter
    for name in names:
        module, attr = name.split(":")
        owner = importlib.import_module(f"greyelephant.control.{module}")
        *path, last = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        f = owner.__dict__[last]
        if isinstance(f, (staticmethod, classmethod)):
            raise SystemExit(f"--parts: {name} is a {type(f).__name__}; name a function "
                             "or a plain method")

        def timed(*a, _f=f, _t=took[name], **k):
            t0 = pc()
            try:
                return _f(*a, **k)
            finally:
                _t[0] += 1
                _t[1] += pc() - t0

        setattr(owner, last, timed)
        undo.append((owner, last, f))
    try:
        for _ in range(steps):
            loop.step()
    finally:
        for owner, last, f in undo:
            setattr(owner, last, f)
    return sorted(((n, c, s) for n, (c, s) in took.items()), key=lambda x: -x[2])


def torch_call_costs(loop: DecodeLoop, steps: int) -> dict[str, tuple[float, float]]:
    """{call: (cold µs, warm µs)}: each call timed first thing after the step's logits
    copy, then once more at once."""
    pc = time.perf_counter
    calls = {"logits.shape": lambda t: t.shape,
             "logits.detach().numpy()": lambda t: t.detach().numpy(),
             "logits.numpy()": lambda t: t.numpy()}
    out = {}
    for name, call in calls.items():
        cold, warm = [], []
        for n in range(steps):
            loop.buffer.copy_(loop.logits_pool[n % len(loop.logits_pool)])
            t0 = pc()
            call(loop.buffer)
            t1 = pc()
            call(loop.buffer)
            t2 = pc()
            cold.append(t1 - t0)
            warm.append(t2 - t1)
        out[name] = (statistics.median(cold) * 1e6, statistics.median(warm) * 1e6)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--compiled", choices=["default", "on", "off"], default="default",
                    help="SteeringBatch's compiled loops (the loop guards' table, the "
                         "check's probe): on, off (the Python and numpy paths), or its "
                         "default (on when numba is importable)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lanes", choices=["on", "off"], default=None,
                    help="SteeringBatch's lanes (the fast path of control/step_states.py)")
    ap.add_argument("--host-path", choices=["device", "gpu"], default="device",
                    help="gpu: on a CPU, run the host side of a GPU step (every mask in the "
                         "table, the plan's arrays packed into one upload, the check's "
                         "choices from torch's argmax, the controls through "
                         "apply_logit_controls): its controls and _check phases are the "
                         "GPU host's work; rest is not (the kernels run on the CPU)")
    ap.add_argument("--distinct", type=int, default=0, metavar="K",
                    help="each request its own spec of K of the 30 entities, drawn at random")
    ap.add_argument("--own-prefer", action="store_true",
                    help="with --distinct: each request prefers its drawn cases' own "
                         "preferred entities, not the common \"grey elephant\"")
    ap.add_argument("--parts", default="", metavar="LIST",
                    help="then time these functions of greyelephant.control over one more "
                         "pass (module:Class.method or module:function, comma-separated; "
                         "'default': the parts of a many-spec step)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="then profile N more steps with cProfile (top functions by own time)")
    args = ap.parse_args(argv)
    if args.own_prefer and not args.distinct:
        ap.error("--own-prefer draws each request's prefer list with its spec: give --distinct")
    torch.set_num_threads(1)
    logging.getLogger("greyelephant.control").setLevel(logging.ERROR)
    loop = make_loop(args.batch, {"default": None, "on": True, "off": False}[args.compiled],
                     args.device, None if args.lanes is None else args.lanes == "on",
                     args.distinct, args.own_prefer)
    restore = gpu_host_path(loop.batch) if args.host_path == "gpu" else None
    try:
        return run(args, loop)
    finally:
        if restore is not None:
            restore()


def run(args: argparse.Namespace, loop: DecodeLoop) -> int:
    """The measurement of :func:`main`, on the loop it made."""
    for _ in range(args.warmup):
        loop.step(count=False)
    batch = loop.batch
    steps = [loop.step() for _ in range(args.steps)]
    timer = PhaseTimer(batch)  # the benchmark's own: controls and _check, per step
    phases: dict[str, list[float]] = {"controls": [], "_check": [], "rest": []}
    for _ in range(args.steps):
        took = loop.step()
        ph = timer.take()
        phases["controls"].append(ph["controls"])
        phases["_check"].append(ph["_check"])
        phases["rest"].append(took - ph["controls"] - ph["_check"])
    del batch.controls, batch._check  # the class's methods again
    cold: list[float] = []
    warm: list[float] = []
    controls_twice(batch, cold, warm)
    for _ in range(args.steps):
        loop.step()
    del batch.controls
    print(f"B={args.batch}, {args.steps} steps per pass after {args.warmup} warm-up, "
          f"compiled loops {'on' if batch.compiled else 'off'}, "
          + (f"lanes on ({batch.fast_rows} row steps on the fast path, {batch.pooled_rows} pooled)"
             if batch._lanes is not None else "lanes off")
          + f", host path {args.host_path}"
          + (f", each request its own spec of {args.distinct} entities"
             + (" and its own prefer list" if args.own_prefer else "") if args.distinct
             else "") + ", medians")
    print(f"  step                {statistics.median(steps) * 1e3:.3f} ms")
    for name, xs in phases.items():
        print(f"  {name:<19} {statistics.median(xs) * 1e6:6.1f} µs")
    print(f"  controls cold {statistics.median(cold) * 1e6:.1f} µs, the same call again at "
          f"once, warm {statistics.median(warm) * 1e6:.1f} µs")
    if args.device == "cpu":
        for name, (cold, hot) in torch_call_costs(loop, min(args.steps, 2000)).items():
            print(f"  {name:<24} cold {cold:5.2f} µs, warm {hot:5.2f} µs")
    if args.parts:
        names = list(DEFAULT_PARTS) if args.parts == "default" else args.parts.split(",")
        print(f"parts, {args.steps} more steps (wall clock, nested parts inside each "
              f"other's time):")
        for name, calls, secs in time_parts(names, loop, args.steps):
            per = f"{secs / calls * 1e6:8.1f} µs a call" if calls else " " * 17
            print(f"  {name:<45} {calls / args.steps:6.2f} calls a step {per} "
                  f"{secs / args.steps * 1e3:7.3f} ms a step")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.profile):
            loop.step()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(35)
        print(f"cProfile, {args.profile} steps (the decode loop's own work included):")
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
