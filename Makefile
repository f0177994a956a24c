# VidCom2 evaluation harness. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Tests run fully offline: nothing may reach a hub.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-gpu lint clean bench bench-select

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort | column -t -s $$'\t'

install: $(STAMP) ## create $(VENV) (repo-local unless VENV is set) and install the project with its pinned deps
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[eval,dev]'
	@touch $(STAMP)

test: install ## run the test suite on CPU (offline; GPU tests are deselected, run them with `make test-gpu`)
	$(OFFLINE) $(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

test-gpu: install ## run only the GPU tests (needs CUDA)
	$(OFFLINE) $(PY) -m pytest -m gpu $(PYTEST_ARGS)

lint: install ## ruff check
	$(VENV)/bin/ruff check vidcom2 eval tests scripts

bench: install ## latency / memory / FLOPs of every method vs vanilla on a Qwen2-0.5B-size LLM (BENCH_ARGS="--size 7b" on GPU)
	$(PY) -m benchmarks.bench_e2e $(BENCH_ARGS)

bench-select: install ## time every method's selection on tensors; writes results/bench/select.json
	$(PY) -m benchmarks.bench_select

clean: ## remove generated outputs (keeps the venv and results/paper)
	rm -rf results/runs results/tables results/bench .pytest_cache
