"""The interleaved before/after comparison against an exported tree (``--ref-tree``, what
a machine without git history uses): it runs both trees' code and says which ran."""

import json
import subprocess
from pathlib import Path

from greyelephant.benchmarks import steering_step_compare as cmp

REPO = Path(__file__).resolve().parents[3]


def _exported_tree(tmp_path: Path) -> Path:
    """This checkout's HEAD exported as a tree without git history (control, kernels,
    the package root)."""
    tree = tmp_path / "base"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD", "control",
                              "kernels", "greyelephant"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def test_compare_against_an_exported_tree(tmp_path):
    tree = _exported_tree(tmp_path)
    out = tmp_path / "out"
    assert cmp.main(["--ref-tree", str(tree), "--batches", "2", "--rounds", "1",
                     "--steps", "4", "--warmup", "2", "--threads", "1",
                     "--lanes", "--out", str(out)]) == 0
    res = json.loads((out / "steering_step_compare-cpu.json").read_text())
    assert res["ref"] == f"tree {tree}"
    row = res["rows"][0]
    assert row["B"] == 2 and row["ref_ms"] > 0 and row["current_ms"] > 0
    assert len(row["current_over_ref_rounds"]) == 1
    assert row["current_no_lanes_ms"] > 0 and len(row["lanes_on_over_off_rounds"]) == 1
    md = (out / "steering_step_compare-cpu.md").read_text()
    assert f"current vs tree {tree}" in md and "lanes on (current) / lanes off" in md


def test_each_request_its_own_spec_and_prefer_list(tmp_path):
    tree = _exported_tree(tmp_path)
    out = tmp_path / "out"
    assert cmp.main(["--ref-tree", str(tree), "--batches", "2", "--rounds", "1",
                     "--steps", "4", "--warmup", "2", "--threads", "1", "--distinct", "3",
                     "--own-prefer", "--out", str(out)]) == 0
    res = json.loads((out / "steering_step_compare-cpu-distinct3-own-prefer.json").read_text())
    assert "own spec of 3" in res["workload"] and "own preferred entities" in res["workload"]
    assert res["rows"][0]["current_ms"] > 0


def test_own_prefer_needs_distinct(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        cmp.main(["--own-prefer"])
    assert exc.value.code == 2 and "--distinct" in capsys.readouterr().err
