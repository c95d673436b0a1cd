"""The CPU dtype default: bfloat16 only where the CPU computes it natively."""

import pytest

from greyelephant.server.cli import _cpu_flags, cpu_default_dtype


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


def test_cpu_flags_reads_this_machine():
    flags = _cpu_flags()
    if flags is None:  # not Linux: nothing to read, and the default is float32
        assert cpu_default_dtype(flags) == "float32"
    else:
        assert isinstance(flags, frozenset) and all(isinstance(f, str) for f in flags)
        assert cpu_default_dtype(flags) in ("bfloat16", "float32")
