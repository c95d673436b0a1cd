"""Benchmark: pivot-search sampler vs vLLM's sort-based top-p sampler.

    python benchmarks/kernels/bench_sampling.py [--smoke]
"""

from __future__ import annotations

import argparse

import _path

_path.ensure_importable()

import torch  # noqa: E402
from baselines import sort_top_p_sample  # noqa: E402
from timing import graph_us, median_events_us  # noqa: E402

from greyelephant.kernels import sample_from_logits  # noqa: E402
from greyelephant.kernels.sampling import normalize_args  # noqa: E402

GPU_BATCHES = (1, 32, 256)
GPU_VOCABS = (49152, 131072, 151936, 262144)


def bench_one(b, v, device, reps=50):
    g = torch.Generator().manual_seed(b * 7 + v)
    nbuf = max(1, min(3, (256 << 20) // (b * v * 4)))
    bufs = [(torch.randn(b, v, generator=g) * 4).to(device) for _ in range(nbuf)]
    temp = (torch.rand(b, generator=g) * 0.5 + 0.7).to(device)
    top_p = torch.full((b,), 0.9, device=device)
    seeds = torch.arange(b, device=device)
    res = {"B": b, "V": v, "dtype": "fp32"}
    if device.type == "cuda":
        ours = [lambda x=x: sample_from_logits(x, temperature=temp, top_p=top_p, seeds=seeds)
                for x in bufs]
        ours_k = [lambda x=x: sample_from_logits(x, temperature=temp, top_k=50, top_p=top_p,
                                                 seeds=seeds) for x in bufs]
    else:  # CPU smoke: the Triton kernel under the interpreter
        from greyelephant.kernels.sampling_triton import sample_triton

        rows = [normalize_args(x, temperature=temp, top_p=top_p, seeds=seeds) for x in bufs]
        ours = [lambda x=x, r=r: sample_triton(x, r) for x, r in zip(bufs, rows, strict=True)]
        ours_k = None
    res["ours_top_p_us"] = median_events_us(ours, device, reps=reps)
    res["ours_top_p_graph_us"] = graph_us(ours, device)
    res["ours_top_k_top_p_us"] = median_events_us(ours_k, device, reps=reps) if ours_k else None
    res["sort_top_p_us"] = median_events_us(
        [lambda x=x: sort_top_p_sample(x, temp, top_p) for x in bufs], device, reps=reps)
    res["speedup_vs_sort"] = res["sort_top_p_us"] / res["ours_top_p_us"]
    return res


def run(device, batches, vocabs, reps=50, log=print):
    rows = []
    for b in batches:
        for v in vocabs:
            r = bench_one(b, v, device, reps=reps)
            log(f"  sampling B={b:<4} V={v:<7} ours {r['ours_top_p_us']:9.1f} us  "
                f"sort-based {r['sort_top_p_us']:9.1f} us  x{r['speedup_vs_sort']:.1f}")
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
        run(dev, (1, 2), (100, 300), reps=3)
