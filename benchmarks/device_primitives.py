"""Host time of the primitives a steered decode step is made of, on a GPU: a diagnosis of
where a step's fixed cost goes, not a benchmark of the steering itself.

Each primitive runs N times with the device synchronised between calls (as a decode step
finds it: the GPU idle, the host about to launch), and the median host time of the call
itself is printed, e.g.: a small host-to-device copy (pageable, and pinned with
``non_blocking``), an event record and its synchronisation, slicing and viewing a device
tensor, :class:`.step_upload.StepUpload` sending a step's five arrays, an argmax read back
with ``tolist``, a ``copy_`` of a few bytes, and ``apply_logit_controls`` (the Triton
launch path) at B = 1 and B = 256.

    python benchmarks/device_primitives.py [--device cuda] [--n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import steering_step  # noqa: E402,F401  (maps the checkout into a greyelephant package)

from greyelephant.control.step_upload import StepUpload  # noqa: E402
from greyelephant.kernels import apply_logit_controls  # noqa: E402


def timed(call, n: int, sync) -> float:
    """Median host µs of ``call()``, the device synchronised before each call."""
    out = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    small = np.arange(256, dtype=np.int32)
    arrays = {"mask_rows": small.copy(), "bias_indptr": np.arange(257, dtype=np.int32),
              "bias_token_ids": np.arange(3000, dtype=np.int32),
              "bias_values": np.ones(3000, dtype=np.float32),
              "logit_rows": small.copy()}
    up = StepUpload(dev)
    d = torch.zeros(4096, dtype=torch.int32, device=dev)
    calls = {
        "torch.from_numpy(256 int32).to(device)": lambda: torch.from_numpy(small).to(dev),
        "5 arrays, one .to(device) each": lambda: [torch.from_numpy(x).to(dev)
                                                   for x in arrays.values()],
        "StepUpload.send(the same 5 arrays)": lambda: up.send(arrays),
        "device tensor slice + view": lambda: d[16:272].view(torch.float32),
        "argmax [256, 49152] + tolist": None,
        "apply_logit_controls B=1 V=49152 (bias + mask table)": None,
        "apply_logit_controls B=256 V=49152 (bias + mask table)": None,
    }
    if cuda:
        pinned = torch.from_numpy(small).pin_memory()
        event = torch.cuda.Event()
        calls["pinned 256 int32 copy_ (non_blocking)"] = (
            lambda: d[:256].copy_(pinned, non_blocking=True))

        def record_sync():
            event.record()
            event.synchronize()

        calls["event record + synchronize (idle GPU)"] = record_sync
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 49152, generator=g).to(dev)
    calls["argmax [256, 49152] + tolist"] = lambda: x.argmax(dim=-1).tolist()
    table = torch.zeros(8, 49152 // 32, dtype=torch.int32, device=dev)
    for b in (1, 256):
        kw = dict(bias_indptr=torch.arange(b + 1, dtype=torch.int32, device=dev) * 10,
                  bias_token_ids=torch.arange(10 * b, dtype=torch.int32, device=dev),
                  bias_values=torch.ones(10 * b, device=dev),
                  mask_table=table, mask_rows=torch.ones(b, dtype=torch.int32, device=dev))
        calls[f"apply_logit_controls B={b} V=49152 (bias + mask table)"] = (
            lambda b=b, kw=kw: apply_logit_controls(x[:b], **kw))
    calls["apply_logit_controls B=256, host_bound (one launch)"] = (
        lambda kw=kw: apply_logit_controls(x, **kw, host_bound=True))
    print(f"host µs per call, median of {a.n} (device {a.device}"
          f"{' ' + torch.cuda.get_device_name() if cuda else ''}, torch {torch.__version__})")
    for name, call in calls.items():
        call()  # warm up (compiles, allocations)
        print(f"  {name:<58} {timed(call, a.n, sync):8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
