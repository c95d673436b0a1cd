"""The steering step's device check runs end to end on the CPU (--smoke, Triton
interpreter): its kernel forms and its decode comparison pass there too."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "steering_device_check.py"


def test_steering_device_check_smoke(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = json.loads((tmp_path / "steering_device_check.json").read_text())["checks"]
    assert len(checks) >= 5 and all(c["ok"] for c in checks)
    assert any("signals" in c["check"] for c in checks)
    lanes = [c for c in checks if "with lanes" in c["check"]]
    assert len(lanes) == 1 and lanes[0]["fast_rows"] > 0
    assert len([c for c in checks if c["check"].startswith("staged read")]) == 3
