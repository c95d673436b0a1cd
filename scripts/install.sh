#!/usr/bin/env bash
# Create (or update) the project's virtual environment from the lock, install the project,
# and prepare the embedded model. Idempotent: re-running with an unchanged lock is fast.
#
#   scripts/install.sh          # CPU server + dev tools (requirements/cpu.lock, exact pins)
#   scripts/install.sh gpu      # GPU server: upstream vLLM on CUDA (requirements/gpu.txt)
#
# Environment: PYTHON (default python3.11, else python3), VENV (default .venv),
# SKIP_MODEL=1 to skip preparing the embedded model. Nothing here downloads model weights.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-cpu}"
venv="${VENV:-.venv}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 required"'

case "$target" in
  cpu) lock=requirements/cpu.lock ;;
  gpu) lock=requirements/gpu.txt ;;
  *) echo "usage: $0 [cpu|gpu]" >&2; exit 2 ;;
esac

stamp="$venv/.greyelephant-install"
want="$target $(cat "$lock" pyproject.toml | sha256sum | cut -c1-32)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== installing $lock into $venv"
  "${pip[@]}" install -q "pip==25.3"
  if [ "$target" = cpu ]; then
    # Exact pins, no resolver: the lock is the whole environment.
    "${pip[@]}" install -q --no-deps -r "$lock"
    "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  else
    "${pip[@]}" install -q -r "$lock"
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
