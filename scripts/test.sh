#!/usr/bin/env bash
# The whole test suite, as `make test` runs it after install and lint: the tests that start
# a real engine (marker `engine`: the session's shared server, the hardening module's own)
# in one pytest process, every other test in a second pytest process beside it, so the
# CPU-bound unit tests use the core the engine tests leave idle while they wait on the
# server. The second process's output is printed when both are done; the exit status fails
# if either fails. With arguments, a single pytest process runs them as given
# (`make test ARGS="tests/unit -x"`).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ $# -gt 0 ]; then
  exec "$PY" -m pytest -q "$@"
fi
log=$(mktemp -t greyelephant-tests.XXXXXX)
# (no cache plugin there: the two processes would both write .pytest_cache)
"$PY" -m pytest -q -p no:cacheprovider -m "not engine" >"$log" 2>&1 &
other=$!
trap 'kill "$other" 2>/dev/null; rm -f "$log"' EXIT
echo "== engine tests (the tests without an engine run beside them; their output follows)"
"$PY" -m pytest -q -m engine
engine_rc=$?
wait "$other"
other_rc=$?
echo "== tests without an engine"
cat "$log"
echo "== exit status: engine tests $engine_rc, the others $other_rc"
[ "$engine_rc" -eq 0 ] && [ "$other_rc" -eq 0 ]
