#!/usr/bin/env bash
# The steering step's GPU check, as one run on a GPU machine with torch, Triton and numpy
# but no vLLM (the device machine):
#   1. steering_device_check.py: the device path against the CPU path, bit for bit;
#   2. device_primitives.py: the host time of a step's primitives (a diagnosis);
#   3. steering_step on the GPU, before (the code in .base/, if there) and after (this
#      checkout), in the same run, twice each, alternating ($STEPS timed steps, default 60);
#   4. step_phases' cProfile split of a B=256 step (this checkout).
# Everything lands in $OUT (default /tmp/steering_gpu): env.txt, run.log,
# steering_device_check.json, steering_step-cuda.{json,md} (after, the second run) and
# before/steering_step-cuda.{json,md} (the second run).
#
#   bash benchmarks/steering_gpu.sh                 # from the repo root, on the GPU machine
#
# The "before" tree: `git archive <commit> control kernels greyelephant | tar -x -C .base`
# (this script copies in this checkout's benchmarks and docs, so both run the same
# benchmark on the same text). pydantic is not on that machine: its wheels travel in .whl/
# (docs/kernels.md says how to fetch them) and go into a scratch folder on PYTHONPATH.
set -uo pipefail
OUT=${OUT:-/tmp/steering_gpu}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-60}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  lscpu | grep -E "Model name|^CPU\(s\)"
  python3 -c "import sys, torch, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__)"
  python3 -c "import numba; print('numba', numba.__version__)" 2>&1 | tail -1
  python3 -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1
} > "$OUT/env.txt"
cat "$OUT/env.txt"
LOG="$OUT/run.log"
rc=0
python3 benchmarks/steering_device_check.py --device "$DEVICE" --out "$OUT" 2>&1 | tee "$LOG" \
  || rc=1
python3 benchmarks/device_primitives.py --device "$DEVICE" 2>&1 | tee -a "$LOG" || rc=1
if [ -d .base/control ]; then
  mkdir -p .base/benchmarks "$OUT/before"
  cp benchmarks/*.py .base/benchmarks/ && cp -r benchmarks/data .base/benchmarks/ \
    && rm -rf .base/docs && cp -r docs .base/docs
fi
for round in 1 2; do
  if [ -d .base/control ]; then
    echo "== before, round $round" | tee -a "$LOG"
    python3 .base/benchmarks/steering_step.py --device "$DEVICE" --steps "$STEPS" \
      --out "$OUT/before" 2>&1 \
      | tee -a "$LOG" || rc=1
  fi
  echo "== after, round $round" | tee -a "$LOG"
  python3 benchmarks/steering_step.py --device "$DEVICE" --steps "$STEPS" --out "$OUT" 2>&1 \
    | tee -a "$LOG" \
    || rc=1
done
python3 benchmarks/step_phases.py --device "$DEVICE" --batch 256 --steps 300 --warmup 100 \
  --profile 300 2>&1 | tee -a "$LOG" || rc=1
exit $rc
