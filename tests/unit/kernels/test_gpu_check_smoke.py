"""The GPU check script runs end to end on the CPU (--smoke, Triton interpreter)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "kernels" / "gpu_check.py"


def test_gpu_check_smoke(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--no-sweeps", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["checks"] and all(c["ok"] for c in res["checks"])
    assert res["controls"] and res["sampling"]
    assert (tmp_path / "results.md").exists()
    assert (tmp_path / "controls.svg").exists() or (tmp_path / "controls.png").exists()
