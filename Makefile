# The two commands of the README:
#   make serve   set up (venv, lock, embedded model) and serve http://127.0.0.1:8000/v1
#   make test    set up and run the whole test suite (what CI runs)
PY := .venv/bin/python
ARGS ?=

.PHONY: install serve test unit lint bench clean adapter

install:
	bash scripts/install.sh cpu

serve: install
	.venv/bin/greyelephant serve $(ARGS)

lint: install
	$(PY) -m ruff check .
	.venv/bin/hadolint Dockerfile
	$(PY) scripts/lint_imports.py
	$(PY) scripts/lint_imports.py --self-test

test: install lint
	bash scripts/test.sh $(ARGS)

unit: install
	$(PY) -m pytest -q tests/unit $(ARGS)

bench: install
	$(PY) -m greyelephant.benchmarks.serving_baseline --rounds 3

# The hybrid preference recipe, from the shipped seeds to a served, evaluated adapter:
# judges measured (zero-shot and STaR, on held-out gold) -> DPF pairs -> hybrid labels
# (rule + gold + the better judge, each weighted by its measured accuracy; a judge that
# does not beat chance gets no vote) -> DPO LoRA -> eval (dev + held-out, per-case
# outputs) -> card with the eval's per-case files beside it (adapters/$(ADAPTER)/eval/).
# About 1.5 h on the 2-core CPU box: the sum of the stages' measured times (docs/recipe.md).
ADAPTER ?= grey-dpo
RECIPE_RUN ?= runs/recipe
EVAL_FILE ?= benchmarks/data/pink_elephant_dev.jsonl
HELDOUT_FILE ?= benchmarks/data/heldout_entities.jsonl
NEAR_MISS_FILES ?= benchmarks/data/near_miss_entities.jsonl benchmarks/data/near_miss_tuning.jsonl
RECIPE_LIMIT ?= 1400
DPO_EPOCHS ?= 1.0
adapter: install
	$(PY) -m greyelephant.recipe.judge_star --out $(RECIPE_RUN)/judge --seed 0 --concurrency 16 \
		--max-minutes 6 --request-seeds
	$(PY) -m greyelephant.recipe.dpf_data --seeds recipe/data/seeds.jsonl --eval-file $(EVAL_FILE) \
		--eval-file $(HELDOUT_FILE) $(addprefix --eval-file ,$(NEAR_MISS_FILES)) \
		--out $(RECIPE_RUN)/pairs.jsonl --limit $(RECIPE_LIMIT) --seed 0 --max-tokens 128 \
		--concurrency 16
	$(PY) -m greyelephant.recipe.labels --pairs $(RECIPE_RUN)/pairs.jsonl \
		--out $(RECIPE_RUN)/labels.jsonl --judge-stats $(RECIPE_RUN)/judge/judge.stats.json \
		--concurrency 16
	$(PY) -m greyelephant.recipe.dpo --labels $(RECIPE_RUN)/labels.jsonl --out adapters/$(ADAPTER) \
		--work-dir $(RECIPE_RUN)/dpo --seed 0 --epochs $(DPO_EPOCHS) --lr 2e-4 --sft-weight 1.0 \
		--max-minutes 30
	$(PY) -m greyelephant.recipe.evaluate --adapter $(ADAPTER)=adapters/$(ADAPTER) \
		--data $(EVAL_FILE) --extra-data heldout=$(HELDOUT_FILE) --max-tokens 160 \
		--out $(RECIPE_RUN)/eval
	$(PY) -m greyelephant.recipe.card --adapter adapters/$(ADAPTER) --run-dir $(RECIPE_RUN)

clean:
	rm -rf .venv .pytest_cache .ruff_cache
