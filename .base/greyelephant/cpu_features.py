"""What the host CPU offers the engine: its feature flags and the dtype the server runs in
on it when none is asked for (shared by the server's CPU defaults and the benchmarks'
machine descriptions)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# CPU features with which bfloat16 matrix products run natively (x86: AVX512-BF16, AMX;
# Arm: the BF16 extension); without them PyTorch emulates bf16 products on fp32 units.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags (x86 `flags`, Arm `Features` lines of /proc/cpuinfo); None
    where there is no such file (not Linux)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (x86 ``model name``), with ``avx512``/``avx2`` and whether
    bf16 is native; "unknown" where /proc/cpuinfo says nothing."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return "unknown"
    name = next((line.partition(":")[2].strip() for line in text.splitlines()
                 if line.partition(":")[0].strip() == "model name"), "unknown")
    flags = cpu_flags(cpuinfo) or frozenset()
    vector = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
    return f"{name} ({vector}, bf16 {_bf16(flags)})"


def _bf16(flags: frozenset[str] | None) -> str:
    """Whether bf16 products run natively here: native, emulated or unknown."""
    if flags is None:
        return "unknown"
    return "native" if flags & BF16_CPU_FLAGS else "emulated"


def cpu_default_dtype(flags: frozenset[str] | None) -> str:
    """The engine's dtype on a CPU when none is asked for: bfloat16 (half the memory
    traffic) where the CPU computes it natively, float32 where bf16 would be emulated or
    the features are unknown. On an AVX2-only 2-core EPYC, float32 serves several times the
    output tokens of bfloat16 (docs/benchmarks.md, "CPU dtype")."""
    return "bfloat16" if flags and flags & BF16_CPU_FLAGS else "float32"


def machine_description(memory_gib: float | None = None) -> str:
    """One line for a benchmark report: host, architecture, CPU count, optional memory,
    whether bf16 is native (two machines with the same count can differ several-fold in
    bf16), CPU-only."""
    memory = f", {memory_gib:.0f} GiB" if memory_gib is not None else ""
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs{memory}, "
            f"bf16 {_bf16(cpu_flags())}, CPU-only")
