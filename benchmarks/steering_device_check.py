"""Correctness of the steering step's device path on a GPU, against the CPU path.

Two checks, run where the unit tests cannot reach (they run on the CPU, the kernels under
Triton's interpreter):

* the kernels' in-place forms — masks read from a table by slot (``mask_rows``), only
  some rows controlled (``logit_rows``), fused and split launches, float32 and bfloat16 —
  bit for bit against the CPU torch path on the gathered rows; a slot outside the table
  bans its whole row;
* a decode through ``SteeringBatch`` on the GPU (one packed upload a step, the table,
  ``logit_rows``, forced signals) against the same decode on the CPU (per-row id lists,
  numpy): the logits equal bit for bit every step (float32), partly steered batches,
  rollback signals and loop-guard bans included;
* runner V2's staged read (``control/fed_read.py``: each slot's committed length and
  newest token, gathered and copied to page-locked memory before the forward pass is
  queued) gives the values read, in vLLM's int32, and its wait returns while a stand-in
  for the forward pass queued after it still runs (on a GPU; on a CPU, the values only).

    python benchmarks/steering_device_check.py --out DIR      # on a GPU machine

Writes ``steering_device_check.json`` to --out and exits non-zero on a failed check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import steering_step  # noqa: E402,F401  (maps the checkout into a greyelephant package)

from greyelephant.benchmarks.steering_step import (  # noqa: E402
    SIGNAL,
    corpus,
    encode,
    smollm2_vocab,
    steering_args,
)
from greyelephant.benchmarks.step_overlap import forward_stand_in  # noqa: E402
from greyelephant.control.fed_read import StagedFedRead  # noqa: E402
from greyelephant.control.steering_batch import RequestInfo, SteeringBatch  # noqa: E402
from greyelephant.kernels import apply_logit_controls, pack_token_bitmask  # noqa: E402
from greyelephant.kernels.logit_controls_torch import apply_logit_controls_torch  # noqa: E402
from greyelephant.kernels.logit_controls_triton import apply_logit_controls_triton  # noqa: E402

CHECKS: list[dict] = []


def check(name: str, ok: bool, **info) -> None:
    CHECKS.append({"check": name, "ok": bool(ok), **info})
    print(f"[{'PASS' if ok else 'FAIL'}] {name} {info if info else ''}", flush=True)


def kernel_forms(device: str, shapes, dtypes=(torch.float32, torch.bfloat16)) -> None:
    g = torch.Generator().manual_seed(7)
    for dtype in dtypes:
        for b, k, v in shapes:
            table = pack_token_bitmask(torch.rand(6, v, generator=g) < 0.2)
            table[0] = 0
            mask_rows = torch.randint(0, 6, (k,), generator=g, dtype=torch.int32)
            rows = torch.randperm(b, generator=g)[:k].to(torch.int32)
            lens = torch.randint(0, 40, (k,), generator=g)
            indptr = torch.zeros(k + 1, dtype=torch.int32)
            indptr[1:] = lens.cumsum(0)
            ids = torch.cat([torch.randperm(v, generator=g)[: int(n)] for n in lens]).int()
            vals = torch.randn(ids.numel(), generator=g) * 3
            temp = torch.rand(k, generator=g) + 0.2
            temp[0] = 0.0
            x = (torch.randn(b, v, generator=g) * 4).to(dtype)
            x[rows[1], :5] = float("nan")
            sub = x.index_select(0, rows.long())
            apply_logit_controls_torch(sub, bias_indptr=indptr, bias_token_ids=ids,
                                       bias_values=vals, temperature=temp,
                                       banned_bitmask=table[mask_rows.long()])
            want = x.clone()
            want[rows.long()] = sub
            kw = dict(bias_indptr=indptr, bias_token_ids=ids, bias_values=vals,
                      temperature=temp, banned_bitmask=table, mask_rows=mask_rows,
                      logit_rows=rows)
            for mode in ("fused", "split"):
                y = x.to(device, copy=True)
                apply_logit_controls_triton(
                    y, mode=mode, **{n: t.to(device) for n, t in kw.items()})
                got = y.cpu()
                same = torch.equal(got.isnan(), want.isnan()) and torch.equal(
                    got.nan_to_num(0.0), want.nan_to_num(0.0))
                check(f"kernel {mode} {dtype} B={b} k={k} V={v}: table slots + logit_rows "
                      "vs CPU torch path (bitwise)", same,
                      mismatches=int((got.nan_to_num(0) != want.nan_to_num(0)).sum()))
            y = x.to(device, copy=True)
            apply_logit_controls(y, mask_table=table.to(device),
                                 mask_rows=mask_rows.to(device), logit_rows=rows.to(device),
                                 bias_indptr=indptr.to(device), bias_token_ids=ids.to(device),
                                 bias_values=vals.to(device), temperature=temp.to(device))
            got = y.cpu()
            check(f"dispatcher {dtype} B={b} k={k} V={v} (auto mode) vs CPU torch path",
                  torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0)))
        bad = torch.tensor([0, 6, -1], dtype=torch.int32, device=device)
        y = torch.zeros(3, 1000, dtype=dtype, device=device)
        apply_logit_controls_triton(y, banned_bitmask=table.to(device)[:, :32], mask_rows=bad)
        banned = torch.isneginf(y).sum(dim=1).tolist()
        check(f"kernel {dtype}: slots outside the table ban the whole row",
              banned == [0, 1000, 1000], banned=banned)


def decode_against_cpu(device: str, b: int = 24, steps: int = 120, lanes: bool = False
                       ) -> None:
    index = smollm2_vocab()
    tokens = encode(index, corpus())
    args = steering_args()
    info = RequestInfo(stop_ids=frozenset({2, SIGNAL}), temperature=0.0, max_tokens=1 << 20)
    # (the CPU reference always takes the per-row path; lanes: the device batch takes the
    # lanes' fast path, see control/step_states.py)
    gpu, cpu = (SteeringBatch(index, device, lanes=lanes, lane_min_rows=0),
                SteeringBatch(index, "cpu"))
    outs_g: list[list[int]] = [[] for _ in range(b)]
    outs_c: list[list[int]] = [[] for _ in range(b)]

    def start(i: int) -> None:
        outs_g[i], outs_c[i] = [], []
        steered = i % 3 != 1  # a third of the rows plain: logit_rows
        gpu.add(i, args if steered else None, outs_g[i], info if steered else None)
        cpu.add(i, args if steered else None, outs_c[i], info if steered else None)

    for i in range(b):
        start(i)
    pos = [i * 977 % len(tokens) for i in range(b)]
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(1)
    first_bad = None
    for step in range(steps):
        x = torch.randn(b, index.vocab_size, generator=gen)
        want = x.clone()
        cpu.apply(want)
        got = x.to(device, copy=True)
        gpu.apply(got)
        got = got.cpu()
        if first_bad is None and not torch.equal(got, want):
            first_bad = step
        for i in range(b):
            t = tokens[pos[i] % len(tokens)]
            pos[i] += 1
            if rng.random() < 0.1 or torch.isneginf(want[i, t]):
                t = int(want[i].argmax())
            if t in info.stop_ids:
                start(i)
                continue
            outs_g[i].append(t)
            outs_c[i].append(t)
    check(f"SteeringBatch on {device}{' with lanes' if lanes else ''} vs the CPU path, "
          f"B={b}, {steps} steps (float32 logits, bitwise every step)", first_bad is None,
          first_mismatch=first_bad, signals=(gpu.signals, cpu.signals),
          anticipated=(gpu.anticipated, cpu.anticipated), uploads=gpu._upload.copies,
          fast_rows=gpu.fast_rows)
    check("the decode exercised rollback signals, the same in both",
          cpu.signals > 0 and gpu.signals == cpu.signals
          and gpu.anticipated == cpu.anticipated)


def staged_read(device: str, n_slots: int = 512, width: int = 4096) -> None:
    """Runner V2's staged read against the tensors read (see the module doc)."""
    g = torch.Generator().manual_seed(3)
    history = torch.randint(0, 152_000, (n_slots, width), generator=g,
                            dtype=torch.int32).to(device)
    total_len = torch.randint(1, width - 2, (n_slots,), generator=g,
                              dtype=torch.int32).to(device)
    reader = StagedFedRead()
    forward, _ = forward_stand_in(device, 50.0)  # (None on a CPU)
    for step, slots in enumerate((np.arange(0, n_slots, 2), np.arange(n_slots),
                                  np.arange(1, n_slots, 3))):
        if device == "cuda":
            torch.cuda.synchronize()  # (the stream idle before each read)
        read = reader.start(history, total_len, slots, n_slots)
        if forward is not None:
            forward()  # the forward pass, queued after the read
        read.wait()
        busy = forward is not None and not torch.cuda.current_stream().query()
        got = read.host.astype(np.int64)
        lengths = total_len.cpu().numpy()[slots].astype(np.int64)
        newest = history.cpu().numpy()[slots, lengths - 1].astype(np.int64)
        check(f"staged read {step}: lengths and newest tokens ({slots.size} slots)",
              np.array_equal(got[0], lengths) and np.array_equal(got[1], newest))
        if forward is not None:
            check(f"staged read {step}: waited for the read, not the forward pass", busy)
        total_len += 1  # (the next step's lengths)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true",
                    help="small shapes, float32 only, and a short decode (a dry run on the "
                         "CPU: TRITON_INTERPRET=1 ... --device cpu --smoke; the interpreter "
                         "rounds bfloat16 otherwise than the GPU does)")
    a = ap.parse_args(argv)
    if a.smoke:
        kernel_forms(a.device, ((9, 5, 3001),), (torch.float32,))
        for lanes in (False, True):
            decode_against_cpu(a.device, b=6, steps=40, lanes=lanes)
        staged_read(a.device, n_slots=16, width=32)
    else:
        kernel_forms(a.device, ((9, 5, 49152), (256, 200, 152064)))
        for lanes in (False, True):
            decode_against_cpu(a.device, lanes=lanes)
        staged_read(a.device)
    failed = [c for c in CHECKS if not c["ok"]]
    print(f"{len(CHECKS) - len(failed)}/{len(CHECKS)} checks passed", flush=True)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "steering_device_check.json").write_text(json.dumps(
            {"device": torch.cuda.get_device_name() if a.device == "cuda" else a.device,
             "torch": torch.__version__, "checks": CHECKS}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
