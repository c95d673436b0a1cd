import json

import pytest

from greyelephant import model_store as ms


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GREYELEPHANT_CACHE", str(tmp_path))
    assert ms.embedded_model_dir() == tmp_path / "models" / "smollm2-135m-instruct-bf16"


def test_verify_detects_missing_and_changed_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    stamp = {"format_version": ms.FORMAT_VERSION, "files": {"a.bin": ms.sha256_file(tmp_path / "a.bin"),
                                                           "b.bin": "00"}}
    (tmp_path / ms.STAMP_NAME).write_text(json.dumps(stamp))
    problems = ms.verify_model_dir(tmp_path)
    assert any("b.bin: missing" in p for p in problems)
    (tmp_path / "b.bin").write_bytes(b"x")
    assert ms.verify_model_dir(tmp_path) == []  # shallow check: presence only
    assert any("sha256 mismatch" in p for p in ms.verify_model_dir(tmp_path, deep=True))


def test_verify_without_stamp(tmp_path):
    assert ms.verify_model_dir(tmp_path)


def test_resolve_model_rejects_non_local_names(tmp_path):
    with pytest.raises(ms.ModelStoreError, match="nothing is downloaded"):
        ms.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ms.ModelStoreError, match="config.json"):
        ms.resolve_model(str(tmp_path))


def test_resolve_model_accepts_hf_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    path, name = ms.resolve_model(str(tmp_path))
    assert path == str(tmp_path.resolve()) and name == tmp_path.name


def test_embedded_gguf_is_shipped():
    path = ms.embedded_gguf_path()
    assert path.name == ms.GGUF_FILENAME and path.stat().st_size > 50_000_000
