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
# launch variants timed per shape: (mode, hoist); hoist=False is run 3's staged sparse code
VARIANTS = {"fused": ("fused", True), "split": ("split", True),
            "fused_staged": ("fused", False), "split_staged": ("split", False)}
GPU_VOCABS = (49152, 131072, 151936, 262144)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def fused_fn(device):
    if device.type == "cuda":
        return apply_logit_controls
    from greyelephant.kernels.logit_controls_triton import apply_logit_controls_triton

    return apply_logit_controls_triton  # CPU smoke run: the kernel under the interpreter


def bench_one(b, v, dtype_name, device, copy_gbs, reps=100):
    from greyelephant.kernels.logit_controls_triton import apply_logit_controls_triton

    dtype = DTYPES[dtype_name]
    kw = controls_inputs(b, v, device)
    es = torch.tensor([], dtype=dtype).element_size()
    # rotate buffers so that the working set exceeds L2 for the large shapes
    nbuf = max(1, min(4, (256 << 20) // max(b * v * es, 1)))
    bufs = [torch.randn(b, v, device=device).to(dtype) for _ in range(nbuf)]
    api = fused_fn(device)
    api_fns = [lambda x=x: api(x, **kw) for x in bufs]
    res = {"B": b, "V": v, "dtype": dtype_name}
    res["api_us"] = median_events_us(api_fns, device, reps=reps)
    res["api_wall_us"] = wall_us(api_fns[0], device, reps=50) if device.type == "cuda" else None
    for name, (mode, hoist) in VARIANTS.items():
        res[f"{name}_graph_us"] = graph_us(
            [lambda x=x, m=mode, h=hoist: apply_logit_controls_triton(x, mode=m, hoist=h, **kw)
             for x in bufs], device)
    unfused = [lambda x=x: unfused_torch_chain(x, **kw) for x in bufs]
    res["unfused_us"] = median_events_us(unfused, device, reps=reps)
    res["unfused_graph_us"] = graph_us(unfused, device, calls=5, replays=5)
    if device.type == "cuda":
        res["torch_path_us"] = median_events_us(
            [lambda x=x: apply_logit_controls_torch(x, **kw) for x in bufs], device, reps=reps)
    nbytes = controls_bytes(b, v, es, kw)
    res["bytes"] = nbytes
    gpu = {name: res[f"{name}_graph_us"] for name in VARIANTS if res[f"{name}_graph_us"]}
    res["best_gpu_us"] = min(gpu.values()) if gpu else None
    res["best_variant"] = min(gpu, key=gpu.get) if gpu else None
    if copy_gbs:
        res["floor_us"] = nbytes / (copy_gbs * 1e9) * 1e6
        for name in VARIANTS:
            t = res[f"{name}_graph_us"]
            res[f"{name}_pct_bw"] = 100 * res["floor_us"] / t if t else None
        if res["best_gpu_us"]:
            res["best_pct_bw"] = 100 * res["floor_us"] / res["best_gpu_us"]
    res["speedup_vs_unfused"] = res["unfused_us"] / res["api_us"]
    if res["best_gpu_us"]:
        if res["unfused_graph_us"]:
            res["gpu_speedup_vs_unfused"] = res["unfused_graph_us"] / res["best_gpu_us"]
    return res


def run(device, batches, vocabs, dtypes=("bf16", "fp32"), copy_gbs=None, reps=100, log=print):
    rows = []
    for dt in dtypes:
        for b in batches:
            for v in vocabs:
                r = bench_one(b, v, dt, device, copy_gbs, reps=reps)
                nan = float("nan")
                gpu = " ".join(f"{n} {r[f'{n}_graph_us'] or nan:6.1f}" for n in VARIANTS)
                log(f"  controls {dt} B={b:<4} V={v:<7} api {r['api_us']:8.1f} us | GPU {gpu}"
                    f" floor {r.get('floor_us') or nan:6.1f} | unfused {r['unfused_us']:8.1f} us"
                    f"  x{r['speedup_vs_unfused']:.1f}")
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
