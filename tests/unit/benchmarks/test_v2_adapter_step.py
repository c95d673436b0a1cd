"""v2_adapter_step: this checkout alone, and on a machine without vLLM (the GPU machine),
where benchmarks/vllm_standin.py stands in for the names the adapter imports."""

import json
import subprocess
import sys
from pathlib import Path

from greyelephant.benchmarks import v2_adapter_step

REPO = Path(__file__).resolve().parents[3]
TINY = ["--feed", "staged", "--batches", "4", "--steps", "20", "--warmup", "5", "--rounds", "1"]

# what a machine without vLLM looks like to the script: find_spec finds no vllm, and
# importing it fails
WITHOUT_VLLM = """
import importlib.util, runpy, sys
real = importlib.util.find_spec
importlib.util.find_spec = (lambda name, *a, **k: None if name.split(".")[0] == "vllm"
                            else real(name, *a, **k))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "vllm":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_this_checkout_alone_and_every_step_staged(tmp_path):
    assert v2_adapter_step.main([*TINY, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "v2_adapter_step.json").read_text())
    (row,) = doc["rows"]
    assert row["B"] == 4 and row["current_staged_steps"] == 25
    assert row["current_pre_us"] > 0 and "ref_us" not in row
    assert doc["ref"].startswith("none")
    assert "25 a staged read served" in (tmp_path / "v2_adapter_step.md").read_text()


def test_without_vllm_the_stand_in_serves_and_says_so(tmp_path):
    script = REPO / "benchmarks" / "v2_adapter_step.py"
    done = subprocess.run([sys.executable, "-c", WITHOUT_VLLM, str(script), *TINY,
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "v2_adapter_step.json").read_text())
    assert "vllm_standin.py" in doc["workload"]
    assert doc["rows"][0]["current_staged_steps"] == 25
