"""`greyelephant bench …`: the command tree (no server is started)."""

from greyelephant.cli import BENCHMARKS, main


def test_bench_families(capsys):
    assert {"load", "quality", "kernels", "serving", "steering", "compile"} <= set(BENCHMARKS)


def test_bench_load_list_prints_the_matrix(capsys):
    assert main(["bench", "load", "--list", "--preset", "small"]) == 0
    out = capsys.readouterr().out
    for name in ("plain/random", "logits-30-norollback/chat", "critique-revise/chat",
                 "mixed/chat", "adapter/chat", "vllm-like/random"):
        assert name in out


def test_bench_load_help_documents_scenarios(capsys):
    try:
        main(["bench", "load", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "logits-1000/chat" in out and "max_rollbacks: 0" in out and "presets:" in out


def test_bench_kernels_usage(capsys):
    assert main(["bench", "kernels", "--help"]) == 0
    assert "gpu_check" in capsys.readouterr().out
    assert main(["bench", "kernels", "nope"]) == 2
