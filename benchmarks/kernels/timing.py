"""Timing helpers: CUDA events (median of many runs after warm-up), CUDA-graph replay
(GPU time without launch gaps), host wall clock; perf_counter on the CPU."""

from __future__ import annotations

import statistics
import time

import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_events_us(fns, device, warmup=10, reps=100, budget_s=0.5):
    """Median per-call time (µs), each call bracketed by CUDA events; ``fns`` rotate
    (distinct buffers, so large inputs come from DRAM, not L2)."""
    for i in range(warmup):
        fns[i % len(fns)]()
    _sync(device)
    t0 = time.perf_counter()
    fns[0]()
    _sync(device)
    est = max(time.perf_counter() - t0, 1e-6)
    reps = max(5, min(reps, int(budget_s / est)))
    if device.type != "cuda":
        times = []
        for i in range(reps):
            t = time.perf_counter()
            fns[i % len(fns)]()
            times.append((time.perf_counter() - t) * 1e6)
        return statistics.median(times)
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
          for _ in range(reps)]
    for i, (s, e) in enumerate(ev):
        s.record()
        fns[i % len(fns)]()
        e.record()
    _sync(device)
    return statistics.median(s.elapsed_time(e) * 1e3 for s, e in ev)


def graph_us(fns, device, calls=20, replays=15):
    """GPU time per call from replays of a CUDA graph holding ``calls`` back-to-back calls.
    Returns None off CUDA or when the callable cannot be captured."""
    if device.type != "cuda":
        return None
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for i in range(3):
                fns[i % len(fns)]()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(calls):
                fns[i % len(fns)]()
        g.replay()
        _sync(device)
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(replays)]
        for st, en in ev:
            st.record()
            g.replay()
            en.record()
        _sync(device)
        return statistics.median(st.elapsed_time(en) * 1e3 for st, en in ev) / calls
    except Exception as exc:  # capture can fail (syncs, host copies): report, don't crash
        print(f"  graph capture failed: {type(exc).__name__}: {exc}")
        return None


def wall_us(fn, device, reps=200):
    """Host wall-clock per call for back-to-back calls (launch/Python overhead bound)."""
    fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / reps * 1e6


def copy_bandwidth_gbs(device, nbytes=1 << 30, reps=20):
    """Device-to-device copy bandwidth, bytes read + bytes written per second (GB/s)."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    us = median_events_us([lambda d=dst, s=src: d.copy_(s)], device, warmup=3, reps=reps,
                          budget_s=5)
    return 2 * nbytes / (us * 1e-6) / 1e9
