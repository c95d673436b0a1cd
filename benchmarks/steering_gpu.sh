#!/usr/bin/env bash
# The steering step's GPU check, as one run on a GPU machine with torch, Triton and numpy
# but no vLLM (the device machine):
#   1. steering_device_check.py: the device path against the CPU path, bit for bit;
#   2. step_overlap.py: what a steered step adds while a 10 ms stand-in for the forward
#      pass is in flight (runner V1's order: the plan overlaps the forward), B = 64, 256
#      (the target: first, after correctness, so a short run still answers it),
#      then the same under runner V2's order (--runner v2: its adapter, the fed tokens
#      read before the forward pass, and read back after it as the fallback);
#   2b. v2_adapter_step.py: runner V2's adapter on the GPU (its core stubbed), fed as
#      vLLM's runner feeds it, with a 2 ms stand-in for the forward pass queued between
#      apply_staged_writes and apply: with the staged read (--feed staged) apply should
#      not wait for it, with the read-back after the wait (--feed sync) it does; vLLM's
#      names come from benchmarks/vllm_standin.py (no vLLM on that machine);
#   3. steering_step on the GPU, this checkout ($STEPS timed steps, default 60): the whole
#      matrix of batch sizes, steered rows and vocabularies, with the phases;
#   3b. device_primitives.py: the host time of a step's primitives (a diagnosis);
#   4. if .base/ holds older code: steering_step_compare, the older code against this
#      checkout with their steps interleaved in one process, 5 rounds (on a noisy host
#      the ratios hold where separate runs do not), with this checkout's lanes off (the
#      fast path of control/step_states.py, on by default from 64 rows) as a fourth
#      version;
#   4b. if .base/ holds older code and MANY=1 (the default): the same comparison, 3
#      rounds, under runner V2's adapter (vLLM 0.32's default runner on GPUs) with one
#      spec for all rows, then under V1 with each request its own spec of 10 entities and
#      its own prefer list (a multi-tenant load), at B = 64 and 256;
#   5. step_phases' split of a B=256 step with the lanes off, then (lanes on, the
#      default) with cProfile's top functions (this checkout), then the many-spec
#      step's parts (--distinct 10 --own-prefer --parts default).
# Everything lands in $OUT (default /tmp/steering_gpu): env.txt, run.log, phases.txt (each
# phase's seconds; no phase starts after BUDGET_S, default 540, and none runs past it),
# steering_device_check.json, steering_step-cuda.{json,md}, step_overlap-cuda[-v2].{json,md},
# steering_step_compare-cuda[-distinct10-own-prefer|-v2].{json,md},
# v2_adapter_step-cuda-{staged,sync}.{json,md}.
# (Up to 8f158e3, step 4 was two alternating rounds of steering_step before and after;
# benchmarks/steering_gpu_summary.py reads such a log.)
#
#   bash benchmarks/steering_gpu.sh                 # from the repo root, on the GPU machine
#
# The older tree: `mkdir .base && git archive <commit> control kernels greyelephant | tar
# -x -C .base` (the comparison runs this checkout's benchmark on both). pydantic is not on
# that machine: its wheels travel in .whl/ (ignored by git) and go into a scratch folder on
# PYTHONPATH. Fetch them on the machine you send from (versions from requirements/*.lock):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 pydantic_core==2.50.5 \
#     annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
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
: > "$LOG"
# A device call stops at 600 s (then only what is in $OUT comes back): no phase starts
# after BUDGET_S seconds, and each runs under `timeout` for what is left of it; each
# phase's time goes to run.log and phases.txt, and a phase cut short or skipped says so.
BUDGET_S=${BUDGET_S:-540}
START=$SECONDS
rc=0
phase() {  # phase NAME COMMAND...
  local name=$1 left=$((BUDGET_S - (SECONDS - START))) t0=$SECONDS status
  shift
  if [ "$left" -le 0 ]; then
    echo "[phase] $name: skipped (BUDGET_S=$BUDGET_S s spent)" | tee -a "$LOG" "$OUT/phases.txt"
    rc=1
    return
  fi
  timeout "$left" "$@" 2>&1 | tee -a "$LOG"
  status=${PIPESTATUS[0]}
  if [ "$status" = 124 ]; then
    echo "[phase] $name: cut short at $((SECONDS - t0)) s (BUDGET_S=$BUDGET_S s)" \
      | tee -a "$LOG" "$OUT/phases.txt"
  else
    echo "[phase] $name: $((SECONDS - t0)) s, exit $status" | tee -a "$LOG" "$OUT/phases.txt"
  fi
  [ "$status" = 0 ] || rc=1
}
phase device_check python3 benchmarks/steering_device_check.py --device "$DEVICE" --out "$OUT"
phase step_overlap python3 benchmarks/step_overlap.py --device "$DEVICE" --batches 64,256 \
  --forward-ms 10 --out "$OUT"
phase step_overlap_v2 python3 benchmarks/step_overlap.py --device "$DEVICE" \
  --batches 64,256 --forward-ms 10 --runner v2 --out "$OUT"
for feed in staged sync; do
  phase "v2_adapter_$feed" python3 benchmarks/v2_adapter_step.py --device "$DEVICE" \
    --feed "$feed" --forward-ms 2 --batches 16,64,256 --steps 300 --warmup 100 --rounds 1 \
    --out "$OUT"
done
phase steering_step python3 benchmarks/steering_step.py --device "$DEVICE" --steps "$STEPS" \
  --out "$OUT"
phase primitives python3 benchmarks/device_primitives.py --device "$DEVICE"
if [ -d .base/control ]; then
  phase compare python3 benchmarks/steering_step_compare.py --ref-tree .base \
    --device "$DEVICE" --batches 1,16,64,256 --rounds 5 --steps 200 --lanes --out "$OUT"
  if [ "${MANY:-1}" = 1 ]; then
    phase compare_v2 python3 benchmarks/steering_step_compare.py --ref-tree .base \
      --device "$DEVICE" --batches 64,256 --rounds 3 --steps 200 --runner v2 --out "$OUT"
    phase compare_many_specs python3 benchmarks/steering_step_compare.py --ref-tree .base \
      --device "$DEVICE" --batches 64,256 --rounds 3 --steps 200 --distinct 10 \
      --own-prefer --out "$OUT"
  fi
fi
phase phases_lanes_off python3 benchmarks/step_phases.py --device "$DEVICE" --batch 256 \
  --steps 300 --warmup 100 --lanes off
phase phases_profile python3 benchmarks/step_phases.py --device "$DEVICE" --batch 256 \
  --steps 300 --warmup 100 --profile 300
phase phases_many_specs python3 benchmarks/step_phases.py --device "$DEVICE" --batch 256 \
  --steps 300 --warmup 300 --distinct 10 --own-prefer --parts default
echo "[phase] all: $((SECONDS - START)) s" | tee -a "$LOG" "$OUT/phases.txt"
exit $rc
