"""Per-step cost of the steering processor's work: this checkout against an older commit,
in the same run.

Each code version runs over the same workload: SmolLM2's real vocabulary
(``benchmarks/data/smollm2_vocab.json.gz``), every row steered with the dev set's 30
entities (aliases included) and the ``logits`` strategy at that version's defaults,
greedy; rows advance over the same real text (``steering_step.corpus``) at staggered
offsets, under the masks (``step_loop.DecodeLoop``, the loop of ``steering_step``); random
logits; the timed call is ``SteeringBatch.apply``. This checkout runs twice: at its
defaults (rollback on) and with ``max_rollbacks: 0`` (the prefix ban alone, what a commit
from before rollback does); with ``--lanes``, a third time with ``SteeringBatch(lanes=False)``
(the lanes are on by default; reported as lanes on / off per round). They run in one process, their steps interleaved (each
version takes each place in the order in turn), so that a slow spell of a noisy machine
slows all alike; each version's result is its median step. A round is one such process;
the result per version and batch size is the median over rounds, with each round's own
current/ref ratio listed beside it.

Admission is timed too: each row that ends (its signal or a stop token) is restarted as a
new request by ``batch.add`` (parsing its arguments, the compile cache's lookup, the new
row, the old row's release), which an engine runs inside its step; the medians of those
calls after the warm-up are reported per version and round beside the steps.

The older commit is exported with ``git archive`` into a temporary folder (or, with
``--ref-tree DIR``, an exported tree is given: a machine with no git history, such as the
GPU machine, where ``steering_gpu.sh`` carries one in ``.base/``); its
``control``/``kernels`` folders are mapped into a ``greyelephant`` package the same way as
for this checkout, so nothing is installed. The worker imports each tree as
``greyelephant`` in turn, dropping the previous one's modules from ``sys.modules`` first
(the objects built from it keep their own module globals), and records the file each
version's ``steering_batch`` came from.

    python -m greyelephant.benchmarks.steering_step_compare --ref b1bd887 --device cpu
    python benchmarks/steering_step_compare.py --ref-tree .base --device cuda   # a GPU box

With ``--host-path gpu`` (on a CPU), each version takes a GPU step's host path instead
(every mask in the device table, the plan's arrays packed into one upload, the rollback
check's choices from torch's argmax, memoised per logits tensor of the pool since it is a
device op on a GPU), and a step's time is ``apply``'s less its kernel calls
(``apply_logit_controls``, the forced tokens), which run on the CPU here: what a GPU's
host would spend, at this CPU's speed.

With ``--distinct K``, each request (each row and each restart) gets its own spec: K of
the 30 entities drawn at random, the same draws for every version. That is a
multi-tenant load: a spec's masks, transitions and automata are built for few rows, so
the cost of a new state or a new spec, which the shared spec's rows pay once, is paid
all along. Every request still prefers the common "grey elephant" unless
``--own-prefer`` is given: then each prefers its drawn cases' own preferred entities, so
that prefer lists differ between requests as well.

With ``--runner v2``, each version's runner-V2 adapter (``control/logits_processor_v2.py``,
vLLM's default runner on GPUs) stands around its core: the loop feeds it each step's
tokens and positions as runner V2 does (fakes of its request states, built before the
timed call), admissions go through ``add_request`` and ``apply_staged_writes``, and the
timed call is the adapter's ``apply``: its bookkeeping and the core's step.

Writes ``steering_step_compare-<device>[-gpu-host-path][-distinctK][-own-prefer][-v2].json``
and ``.md`` to --out (default benchmarks/results).
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

if __package__ in (None, ""):  # run as a file from a checkout that is not installed
    sys.path.insert(0, str(HERE))
    import steering_step  # noqa: F401  (maps the checkout into a greyelephant package)

def _without_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is None


def _cpu_model() -> str:
    """The host CPU's model and vector features (see ``greyelephant.cpu_features``)."""
    try:
        from greyelephant.cpu_features import cpu_model
    except ImportError:  # (a tree mapped without the root package)
        return "unknown"
    return cpu_model()


# Runs inside the subprocess. Every version is imported as ``greyelephant`` in turn (its
# modules dropped from sys.modules before the next is imported; two versions of one tree
# are imported twice): what was built from one keeps its own module globals. A short
# priming loop right after each import settles the lazy imports an older version makes at
# its first step. It uses only what both old and new versions have, adapting to the two
# known signatures.
WORKER = r"""
import gzip, importlib, importlib.util, inspect, json, logging, random, statistics, sys, time
import torch
cfg = json.loads(sys.argv[1])
if cfg["threads"]:
    torch.set_num_threads(cfg["threads"])
spec_loop = importlib.util.spec_from_file_location("step_loop", cfg["loop"])
loop = importlib.util.module_from_spec(spec_loop)
spec_loop.loader.exec_module(loop)
if cfg["runner"] == "v2":  # (no vLLM on the machine: stand-ins for the names it imports)
    spec_standin = importlib.util.spec_from_file_location("vllm_standin", cfg["standin"])
    standin = sys.modules["vllm_standin"] = importlib.util.module_from_spec(spec_standin)
    spec_standin.loader.exec_module(standin)
    standin.install_if_missing()
doc = json.loads(gzip.open(cfg["vocab"], "rt").read())
token_bytes = [None if t is None else bytes.fromhex(t) for t in doc["tokens"]]
tokens = json.loads(open(cfg["tokens"]).read())
stop = frozenset({2, 16})
gen = torch.Generator(device="cpu").manual_seed(0)
logits = {b: [torch.randn(b, len(token_bytes), generator=gen).to(cfg["device"])
              for _ in range(4)] for b in cfg["batches"]}


def import_version(root):
    for name in [m for m in sys.modules if m == "greyelephant" or m.startswith("greyelephant.")]:
        del sys.modules[name]
    sys.path.insert(0, root)
    importlib.invalidate_caches()
    try:
        mods = [importlib.import_module("greyelephant.control." + m)
                for m in ("spec", "steering_batch", "vocab_index", "step_upload")]
        mods.append(importlib.import_module("greyelephant.control.logits_processor_v2")
                    if cfg["runner"] == "v2" else None)
    finally:
        sys.path.remove(root)
    logging.getLogger("greyelephant.control").setLevel(logging.ERROR)
    return mods


def gpu_host_path(sb, kernel_s):
    # A version's module patched to take a GPU step's host path on the CPU (as
    # step_phases.gpu_host_path does): numpy "cannot read" the logits, the check's torch
    # argmax memoised per pool logits tensor (tens of ms on one CPU thread, a device op on
    # a GPU), and the kernel calls timed into kernel_s[0] (the step's time less theirs is
    # the host's work).
    sb._numpy_view = lambda t: None
    sb._argmax_rows = loop.memoised_argmax_rows(sb._argmax_rows)
    for name in ("apply_logit_controls", "_force_tokens"):
        def timed(*a, _f=getattr(sb, name), **k):
            t0 = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                kernel_s[0] += time.perf_counter() - t0
        setattr(sb, name, timed)


def engine_args(spec_mod, steering):
    spec = spec_mod.parse_steering(steering)
    if hasattr(spec, "engine_steering"):
        return spec.engine_steering(signal=16).to_extra_args()
    return spec.engine_args()


class V2Batch:
    # A version's runner-V2 adapter where the decode loop expects a batch: slot i is row
    # i, each slot's prompt PROMPT; prepare() feeds each row's newest output token at its
    # position (the step's input_ids and pos, padded past the batch as a runner's are).
    PROMPT = list(range(100, 120))

    def __init__(self, lp2, index, b):
        import numpy as np
        from types import SimpleNamespace as NS
        p = len(self.PROMPT)
        ids = torch.zeros(b, p + 1, dtype=torch.int64)
        ids[:, :p] = torch.tensor(self.PROMPT)
        states = NS(device=torch.device("cpu"), max_num_reqs=b, all_token_ids=NS(gpu=ids),
                    prompt_len=NS(np=np.full(b, p, dtype=np.int64)),
                    prefill_len=NS(np=np.full(b, p, dtype=np.int64)))
        self.adapter = lp2.SteeringLogitsProcessorV2(None, states, index=index)
        self.batch = self.adapter.batch
        self.order = np.arange(b, dtype=np.int64)
        self.ctx = None

    def add(self, i, params):
        self.adapter.add_request(i, params)
        self.adapter.apply_staged_writes()

    def prepare(self, outs):
        from types import SimpleNamespace as NS
        p = len(self.PROMPT)
        self.ctx = NS(idx_mapping_np=self.order,
                      input_ids=torch.tensor([o[-1] for o in outs] + [0] * 8),
                      pos=torch.tensor([p + len(o) - 1 for o in outs] + [0] * 8))

    def apply(self, x):
        return self.adapter.apply(x, self.ctx)


def batch_maker(spec_mod, sb, su, lp2, index, steering, batch_kwargs):
    args = engine_args(spec_mod, steering)
    if "request" in inspect.signature(sb.SteeringBatch.add).parameters:
        extra = sb.RequestInfo(stop_ids=stop, temperature=0.0, max_tokens=1 << 20)
    else:
        extra = stop

    def make(b, pool, adds=None):
        if cfg["runner"] == "v2":
            v2 = V2Batch(lp2, index, b)
            batch = v2.batch
        else:
            batch = sb.SteeringBatch(index, cfg["device"], **batch_kwargs)
        if cfg["host_path"] == "gpu":  # no id lists; the plan's arrays in one packed upload
            batch.sparse_ids = False
            batch._upload = su.StepUpload("cpu", pack=True)
        # --distinct K: each request its own spec, K of the entities drawn in a sequence
        # every version draws alike (their rows restart alike)
        draw = random.Random(b)
        avoid = steering["avoid"]

        def restart(i):
            out = []
            if not cfg["distinct"]:
                row_args = args
            else:
                drawn = sorted(draw.sample(range(len(avoid)), cfg["distinct"]))
                row_args = engine_args(spec_mod, {
                    **steering, "avoid": [avoid[j] for j in drawn],
                    # --own-prefer: the drawn cases' own preferred entities
                    **({"prefer": [cfg["prefers"][j] for j in drawn]}
                       if cfg["own_prefer"] else {})})
            if cfg["runner"] == "v2":  # (a V2 request: its sampling parameters)
                from vllm import SamplingParams
                params = SamplingParams(temperature=0.0, max_tokens=1 << 20,
                                        stop_token_ids=sorted(stop),
                                        extra_args={"steering": row_args})
                params._all_stop_token_ids.update(stop)
            t0 = time.perf_counter()
            if cfg["runner"] == "v2":
                v2.add(i, params)
            else:
                batch.add(i, row_args, out, extra)
            if adds is not None and adds["on"]:
                adds["s"].append(time.perf_counter() - t0)
            return out

        outs = [restart(i) for i in range(b)]
        return loop.DecodeLoop(v2 if cfg["runner"] == "v2" else batch, outs, tokens, pool,
                               ends=stop, restart=restart)
    return make


makers, files, kernel_s = {}, {}, {}
for v in cfg["versions"]:
    # every version its own import and vocabulary index, even two of one tree: shared
    # modules or caches would warm one version for the other
    spec_mod, sb, vi, su, lp2 = import_version(v["root"])
    kernel_s[v["name"]] = [0.0]
    if cfg["host_path"] == "gpu":
        gpu_host_path(sb, kernel_s[v["name"]])
    index = vi.VocabIndex.from_token_bytes(token_bytes, key="smollm2", kind=doc["kind"])
    makers[v["name"]] = batch_maker(spec_mod, sb, su, lp2, index, v["steering"],
                                    v.get("batch_kwargs", {}))
    files[v["name"]] = sb.__file__
    n = min(2, cfg["batches"][0])
    prime = makers[v["name"]](n, [p[:n] for p in logits[cfg["batches"][0]]])
    for _ in range(5):
        prime.step(count=False)
result, admission = {}, {}
names = list(makers)
for b in cfg["batches"]:
    # each version's admissions (batch.add of a restarted row), timed after the warm-up
    adds = {name: {"on": False, "s": []} for name in names}
    loops = {name: makers[name](b, logits[b], adds[name]) for name in names}
    times = {name: [] for name in names}
    for step in range(cfg["warmup"] + cfg["steps"]):
        k = step % len(names)  # each version takes each place in the order in turn
        for name in names[k:] + names[:k]:
            adds[name]["on"] = step >= cfg["warmup"]
            kernel_s[name][0] = 0.0
            took = loops[name].step(count=step >= cfg["warmup"])
            took -= kernel_s[name][0]  # (0 unless the GPU host path: the kernels' time)
            if step >= cfg["warmup"]:
                times[name].append(took)
    result[str(b)] = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    admission[str(b)] = {name: [statistics.median(a["s"]) * 1e6 if a["s"] else None,
                                len(a["s"])] for name, a in adds.items()}
print("FILES " + json.dumps(files))
print("RESULT " + json.dumps(result))
print("ADMISSION " + json.dumps(admission))
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


def _git(*args: str) -> str | None:
    """``git -C REPO *args``'s output, stripped; None without git or a repository."""
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True, check=False)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def run_round(cfg: dict, cwd: Path) -> tuple[dict, dict]:
    """One worker process: ({B: {version: median step ms}}, {B: {version: [median
    admission µs, admissions timed]}}), the versions' steps interleaved. Raises if a
    version's code was not imported from its own tree."""
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], cwd=cwd,
                          capture_output=True, text=True, check=False)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
                 if line.startswith(("RESULT ", "FILES ", "ADMISSION ")))
    if "RESULT" not in lines:
        raise RuntimeError(f"worker failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    files = json.loads(lines["FILES"])
    for v in cfg["versions"]:
        if not files[v["name"]].startswith(v["root"] + os.sep):
            raise RuntimeError(f"{v['name']} ran code from {files[v['name']]}, not {v['root']}")
    return json.loads(lines["RESULT"]), json.loads(lines["ADMISSION"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--ref", help="the older commit to compare against")
    which.add_argument("--ref-tree", type=Path,
                       help="the older code as an exported tree (its control, kernels and "
                            "greyelephant folders), instead of a commit")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="16,256")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--lanes", action="store_true",
                    help="also run this checkout with SteeringBatch(lanes=False): the lanes' "
                         "fast path (on by default) against the per-row path")
    ap.add_argument("--distinct", type=int, default=0, metavar="K",
                    help="each request its own spec: K of the 30 entities, drawn at random "
                         "per request (a multi-tenant load, where few rows share a spec); "
                         "0: every row the same spec of all 30")
    ap.add_argument("--own-prefer", action="store_true",
                    help="with --distinct: each request prefers its drawn cases' own "
                         "preferred entities (a prefer list per request), not the common "
                         "\"grey elephant\"")
    ap.add_argument("--runner", choices=["v1", "v2"], default="v1",
                    help="v2: each version's runner-V2 adapter (control/logits_processor_v2.py) "
                         "around its core, fed each step's tokens and positions as runner "
                         "V2 feeds them (fakes of its request states); the timed call is "
                         "the adapter's apply (needs vLLM)")
    ap.add_argument("--host-path", choices=["device", "gpu"], default="device",
                    help="gpu: on a CPU, time the host side of a GPU step (every mask in the "
                         "table, the plan's arrays in one packed upload, the check's "
                         "choices from a memoised torch argmax): each step's time less its "
                         "kernel calls (apply_logit_controls, the forced tokens), which "
                         "run on the CPU here")
    args = ap.parse_args(argv)
    if args.own_prefer and not args.distinct:
        ap.error("--own-prefer draws each request's prefer list with its spec: give --distinct")
    if args.runner == "v2" and args.lanes:
        ap.error("--lanes compares SteeringBatch(lanes=False) under the V1 runner only")

    from greyelephant.benchmarks.steering_step import corpus, smollm2_vocab, encode

    cases = [json.loads(line) for line in (HERE / "data" / "pink_elephant_dev.jsonl")
             .read_text().splitlines() if line.strip()]
    steering = {"avoid": [{"entity": c["avoid"], "aliases": c["avoid_aliases"]} for c in cases],
                "prefer": ["grey elephant"], "strategies": ["logits"]}
    if args.ref is not None:
        ref_sha = _git("rev-parse", args.ref)
        if ref_sha is None:
            raise SystemExit(f"cannot resolve {args.ref!r} with git")
        ref_name = args.ref
    else:
        ref_sha = ref_name = f"tree {args.ref_tree}"
    head = _git("rev-parse", "HEAD") or "unknown (no git history)"
    dirty = _git("status", "--porcelain", "control", "kernels")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tokens = tmp / "tokens.json"
        tokens.write_text(json.dumps(encode(smollm2_vocab(), corpus())))
        current = str(package_root(REPO, tmp / "current-pkg"))
        tree = (args.ref_tree.resolve() if args.ref_tree is not None
                else export(ref_sha, tmp))
        ref_root = str(package_root(tree, tmp / "ref-pkg"))
        cfg = {"vocab": str(HERE / "data" / "smollm2_vocab.json.gz"), "tokens": str(tokens),
               "loop": str(HERE / "step_loop.py"), "device": args.device,
               "threads": args.threads, "steps": args.steps, "warmup": args.warmup,
               "host_path": args.host_path, "distinct": args.distinct,
               "own_prefer": args.own_prefer, "prefers": [c["prefer"] for c in cases],
               "runner": args.runner, "standin": str(HERE / "vllm_standin.py"),
               "batches": [int(x) for x in args.batches.split(",")],
               "versions": [
                   {"name": "ref", "root": ref_root, "steering": steering},
                   {"name": "current", "root": current, "steering": steering},
                   {"name": "current_no_rollback", "root": current,
                    "steering": {**steering, "max_rollbacks": 0}}]}
        if args.lanes:
            cfg["versions"].append({"name": "current_no_lanes", "root": current,
                                    "steering": steering, "batch_kwargs": {"lanes": False}})
        names = [v["name"] for v in cfg["versions"]]
        # rounds[version][r] = {B: median ms}, as each round's process measured it
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        # admissions[version][r] = {B: [median µs, how many]}
        admissions: dict[str, list[dict[str, list]]] = {name: [] for name in names}
        for r in range(args.rounds):
            res, adm = run_round(cfg, tmp)
            for name in names:
                rounds[name].append({b: by_version[name] for b, by_version in res.items()})
                admissions[name].append({b: by_version[name] for b, by_version in adm.items()})
            print(json.dumps({"round": r, "median_ms": res, "admission_us": adm}), flush=True)
    rows = []
    for b in cfg["batches"]:
        ms = {name: statistics.median(x[str(b)] for x in rounds[name]) for name in rounds}
        rows.append({"B": b, "ref_ms": round(ms["ref"], 4),
                     "current_ms": round(ms["current"], 4),
                     "current_no_rollback_ms": round(ms["current_no_rollback"], 4),
                     "current_over_ref": round(ms["current"] / ms["ref"], 3),
                     "current_no_rollback_over_ref": round(
                         ms["current_no_rollback"] / ms["ref"], 3),
                     # each round's own ratio: its steps interleaved with the ref's
                     "current_over_ref_rounds": [
                         round(c[str(b)] / f[str(b)], 3)
                         for c, f in zip(rounds["current"], rounds["ref"], strict=True)]})
        # a restarted row's batch.add (parse, compile-cache lookup, the row), per round
        rows[-1]["admission_us_rounds"] = {
            name: [x[str(b)][0] and round(x[str(b)][0], 1) for x in admissions[name]]
            for name in ("ref", "current")}
        rows[-1]["admissions_timed_rounds"] = {
            name: [x[str(b)][1] for x in admissions[name]] for name in ("ref", "current")}
        if args.lanes:
            rows[-1].update({
                "current_no_lanes_ms": round(ms["current_no_lanes"], 4),
                # lanes on (this checkout's defaults) against off, each round's own
                "lanes_on_over_off_rounds": [
                    round(c[str(b)] / f[str(b)], 3)
                    for c, f in zip(rounds["current"], rounds["current_no_lanes"],
                                    strict=True)]})
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "cpu": _cpu_model(),
            "load_average": os.getloadavg(), "device": args.device,
            "host_path": args.host_path,
            "ref": ref_sha, "current": head + (" + uncommitted control/kernels changes"
                                               if dirty else ""),
            "command": "python -m greyelephant.benchmarks.steering_step_compare " + " ".join(
                argv if argv is not None else sys.argv[1:]),
            "workload": "SmolLM2 vocabulary; every row steered ("
                        + (f"each request its own spec of {args.distinct} of the dev set's "
                           "30 entities drawn at random" if args.distinct
                           else "dev set's 30 entities")
                        + (", preferring those cases' own preferred entities"
                           if args.own_prefer else "")
                        + ", logits strategy, each version's defaults), greedy; "
                        + ("each version's runner-V2 adapter around its core, the timed "
                           "call its apply; " if args.runner == "v2" else "")
                        + ("vLLM's names from benchmarks/vllm_standin.py (no vLLM here); "
                           if args.runner == "v2" and _without_vllm() else "")
                        + f"{args.warmup} warm-up + {args.steps} timed steps per version, "
                        "the versions' steps interleaved in one process (each takes "
                        "each place in the order in turn); median step per round, "
                        f"median of {args.rounds} rounds (processes)"}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"steering_step_compare-{args.device}" + (
        "-gpu-host-path" if args.host_path == "gpu" else "") + (
        f"-distinct{args.distinct}" if args.distinct else "") + (
        "-own-prefer" if args.own_prefer else "") + (
        "-v2" if args.runner == "v2" else "")
    (args.out / f"{stem}.json").write_text(
        json.dumps({**meta, "rows": rows, "rounds": rounds, "admission_rounds": admissions},
                   indent=2) + "\n")
    lines = [f"# Steering per-step cost: current vs {ref_name} ({args.device})", "",
             *(f"- {k}: {v}" for k, v in meta.items()), "",
             f"| B | {ref_name} ms | current ms (rollback on) | current / {ref_name} "
             f"| current, max_rollbacks 0, ms | that / {ref_name} |",
             "|---|---|---|---|---|---|",
             *(f"| {r['B']} | {r['ref_ms']:.3f} | {r['current_ms']:.3f} "
               f"| {r['current_over_ref']:.2f} | {r['current_no_rollback_ms']:.3f} "
               f"| {r['current_no_rollback_over_ref']:.2f} |" for r in rows), "",
             *(f"- B={r['B']}, current / {ref_name} per round: "
               + ", ".join(f"{x:.2f}" for x in r["current_over_ref_rounds"]) for r in rows)]
    lines += ["", "Admission (`batch.add` of a restarted row, timed after the warm-up; "
              "median µs per round, and how many were timed):", "",
              f"| B | {ref_name} µs | current µs | admissions timed ({ref_name}, current) |",
              "|---|---|---|---|",
              *(f"| {r['B']} | " + ", ".join(str(x) for x in r["admission_us_rounds"]["ref"])
                + " | " + ", ".join(str(x) for x in r["admission_us_rounds"]["current"])
                + " | " + ", ".join(f"{a}/{c}" for a, c in zip(
                    r["admissions_timed_rounds"]["ref"],
                    r["admissions_timed_rounds"]["current"], strict=True)) + " |"
                for r in rows)]
    if args.lanes:
        lines += ["", "Lanes off (`SteeringBatch(lanes=False)`, this checkout, rollback on):",
                  "", "| B | lanes off ms | lanes on (current) / lanes off, per round |",
                  "|---|---|---|",
                  *(f"| {r['B']} | {r['current_no_lanes_ms']:.3f} | "
                    + ", ".join(f"{x:.2f}" for x in r["lanes_on_over_off_rounds"]) + " |"
                    for r in rows)]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
