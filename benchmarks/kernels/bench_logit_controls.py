"""Benchmark: fused logit controls vs the unfused torch chain vs the bandwidth floor.

    python benchmarks/kernels/bench_logit_controls.py [--smoke]
"""

from __future__ import annotations

import argparse

import _path

_path.ensure_importable()

import torch  # noqa: E402
from baselines import unfused_torch_chain  # noqa: E402
from cases import controls_bytes, controls_inputs  # noqa: E402
from timing import graph_us, median_events_us, wall_us  # noqa: E402

from greyelephant.kernels import apply_logit_controls  # noqa: E402
from greyelephant.kernels.logit_controls_torch import apply_logit_controls_torch  # noqa: E402

GPU_BATCHES = (1, 32, 256)
GPU_VOCABS = (49152, 131072, 151936, 262144)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def fused_fn(device):
    if device.type == "cuda":
        return apply_logit_controls
    from greyelephant.kernels.logit_controls_triton import apply_logit_controls_triton

    return apply_logit_controls_triton  # CPU smoke run: the kernel under the interpreter


def bench_one(b, v, dtype_name, device, copy_gbs, reps=100):
    dtype = DTYPES[dtype_name]
    kw = controls_inputs(b, v, device)
    es = torch.tensor([], dtype=dtype).element_size()
    # rotate buffers so that the working set exceeds L2 for the large shapes
    nbuf = max(1, min(4, (256 << 20) // max(b * v * es, 1)))
    bufs = [torch.randn(b, v, device=device).to(dtype) for _ in range(nbuf)]
    fused = fused_fn(device)
    fused_fns = [lambda x=x: fused(x, **kw) for x in bufs]
    res = {"B": b, "V": v, "dtype": dtype_name}
    res["fused_us"] = median_events_us(fused_fns, device, reps=reps)
    res["fused_graph_us"] = graph_us(fused_fns, device)
    res["fused_wall_us"] = wall_us(fused_fns[0], device, reps=50) if device.type == "cuda" else None
    res["unfused_us"] = median_events_us([lambda x=x: unfused_torch_chain(x, **kw) for x in bufs],
                                         device, reps=reps)
    if device.type == "cuda":
        res["torch_path_us"] = median_events_us(
            [lambda x=x: apply_logit_controls_torch(x, **kw) for x in bufs], device, reps=reps)
    nbytes = controls_bytes(b, v, es, kw)
    res["bytes"] = nbytes
    if copy_gbs:
        res["floor_us"] = nbytes / (copy_gbs * 1e9) * 1e6
        best = min(t for t in (res["fused_us"], res["fused_graph_us"]) if t)
        res["fused_best_us"] = best
        res["frac_of_copy_bw"] = res["floor_us"] / best
    res["speedup_vs_unfused"] = res["unfused_us"] / res["fused_us"]
    return res


def run(device, batches, vocabs, dtypes=("bf16", "fp32"), copy_gbs=None, reps=100, log=print):
    rows = []
    for dt in dtypes:
        for b in batches:
            for v in vocabs:
                r = bench_one(b, v, dt, device, copy_gbs, reps=reps)
                log(f"  controls {dt} B={b:<4} V={v:<7} fused {r['fused_us']:9.1f} us "
                    f"(graph {r['fused_graph_us'] or float('nan'):8.1f}) "
                    f"unfused {r['unfused_us']:9.1f} us  x{r['speedup_vs_unfused']:.1f}"
                    + (f"  {100 * r['frac_of_copy_bw']:.0f}% of copy bw" if copy_gbs else ""))
                rows.append(r)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
    if dev.type == "cuda":
        run(dev, GPU_BATCHES, GPU_VOCABS)
    else:
        run(dev, (1, 2), (100, 1000), reps=5)
