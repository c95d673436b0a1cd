# The two commands of the README:
#   make serve   set up (venv, lock, embedded model) and serve http://127.0.0.1:8000/v1
#   make test    set up and run the whole test suite (what CI runs)
PY := .venv/bin/python
ARGS ?=

.PHONY: install serve test unit lint bench clean

install:
	bash scripts/install.sh cpu

serve: install
	.venv/bin/greyelephant serve $(ARGS)

lint: install
	$(PY) -m ruff check .
	.venv/bin/hadolint Dockerfile

test: install lint
	$(PY) -m pytest -q $(ARGS)

unit: install
	$(PY) -m pytest -q tests/unit $(ARGS)

bench: install
	$(PY) -m greyelephant.benchmarks.serving_baseline --rounds 3

clean:
	rm -rf .venv .pytest_cache .ruff_cache
