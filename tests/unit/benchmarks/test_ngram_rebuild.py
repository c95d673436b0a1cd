"""The loop-guard rebuild benchmark: both versions run the same workload, rebuild at the
same steps and ban the same tokens (the script checks the bans every step)."""

import json

from greyelephant.benchmarks import ngram_rebuild


def test_the_versions_rebuild_alike_over_the_same_pushes(tmp_path):
    assert ngram_rebuild.main(["--ref", "HEAD", "--batches", "16", "--steps", "400",
                               "--rounds", "1", "--answer-tokens", "20",
                               "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "ngram_rebuild.json").read_text())
    got = res["rounds"][0]["16"]
    assert got["ref"]["rebuilds"] == got["current"]["rebuilds"] >= 1
    assert got["current"]["rebuild_median_ms"] > 0 and got["ref"]["push_step_mean_us"] > 0
    assert "rebuild median ms" in (tmp_path / "ngram_rebuild.md").read_text()
