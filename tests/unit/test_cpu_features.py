"""The CPU dtype default (bfloat16 only where the CPU computes it natively) and the
feature flags it reads."""

import pytest

from greyelephant.cpu_features import (
    cpu_default_dtype,
    cpu_flags,
    cpu_model,
    machine_description,
)


@pytest.mark.parametrize(("flags", "dtype"), [
    (frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}), "bfloat16"),  # e.g. Zen 4
    (frozenset({"avx2", "amx_bf16", "amx_tile"}), "bfloat16"),  # Sapphire Rapids
    (frozenset({"fp", "asimd", "bf16", "sve"}), "bfloat16"),  # Arm with the BF16 extension
    (frozenset({"avx2", "fma", "avx512f"}), "float32"),  # AVX-512 without BF16
    (frozenset({"avx2", "fma"}), "float32"),  # AVX2 only: bf16 would be emulated
    (frozenset(), "float32"),
    (None, "float32"),  # features unknown (no /proc/cpuinfo)
])
def test_cpu_default_dtype(flags, dtype):
    assert cpu_default_dtype(flags) == dtype


def test_cpu_flags_reads_x86_and_arm_lines(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n\n"
                   "processor\t: 1\nflags\t\t: fpu avx2 fma avx512_bf16\n")
    assert cpu_flags(x86) == {"fpu", "avx2", "fma", "avx512_bf16"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 sve\nCPU implementer\t: 0x41\n")
    assert cpu_flags(arm) == {"fp", "asimd", "bf16", "sve"}
    assert cpu_flags(tmp_path / "missing") is None


def test_machine_description_says_whether_bf16_is_native():
    line = machine_description(23.6)
    assert line.endswith(", CPU-only") and ", 24 GiB, " in line
    assert any(f"bf16 {state}," in line for state in ("native", "emulated", "unknown"))


def test_cpu_model_names_the_cpu_and_its_vector_features(tmp_path):
    amd = tmp_path / "amd"
    amd.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n")
    assert cpu_model(amd) == "AMD EPYC (avx2, bf16 emulated)"
    intel = tmp_path / "intel"
    intel.write_text("model name\t: Intel Xeon\nflags\t\t: avx2 avx512f amx_bf16\n")
    assert cpu_model(intel) == "Intel Xeon (avx512, bf16 native)"
    assert cpu_model(tmp_path / "missing") == "unknown"
