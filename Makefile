# VidCom2 evaluation harness. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
UV := $(VENV)/bin/uv
INSTALLER ?= uv
# Tests run fully offline: nothing may reach a hub.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
PYTEST_ARGS ?=
# pytest-xdist workers (each test process uses one torch thread; PYTEST_WORKERS=0 runs in this process)
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install lock lock-check test test-gpu lint clean bench bench-select

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort | column -t -s $$'\t'

install: $(STAMP) ## create $(VENV) and install exactly requirements/lock.txt (uv pip sync; INSTALLER=pip for pip), then the project
$(STAMP): requirements/lock.txt requirements/bootstrap.txt pyproject.toml
	@python3 scripts/lock.py --check
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --require-hashes --no-deps -r requirements/bootstrap.txt
ifeq ($(INSTALLER),pip)
	$(PIP) install -q --require-hashes --no-deps -r requirements/lock.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
else
	$(UV) pip sync -q --python $(PY) --require-hashes requirements/lock.txt
	$(UV) pip install -q --python $(PY) --no-deps --no-build-isolation -e .
endif
	@touch $(STAMP)

lock: ## re-resolve requirements/lock.txt from pyproject.toml (the only way the lock changes; UPGRADE=1 moves every pin on)
	@test -x $(UV) || { test -x $(PY) || python3 -m venv $(VENV); $(PIP) install -q --require-hashes --no-deps -r requirements/bootstrap.txt; }
	PATH="$(abspath $(VENV))/bin:$$PATH" python3 scripts/lock.py $(if $(UPGRADE),--upgrade)

lock-check: ## fail when requirements/lock.txt is out of date with pyproject.toml (no network)
	@python3 scripts/lock.py --check

test: install ## run the test suite on CPU (offline; GPU tests are deselected, run them with `make test-gpu`)
	$(OFFLINE) $(PY) -m pytest -m "not gpu" -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-gpu: install ## run only the GPU tests (needs CUDA)
	$(OFFLINE) $(PY) -m pytest -m gpu $(PYTEST_ARGS)

lint: install ## ruff check
	$(VENV)/bin/ruff check vidcom2 eval tests scripts benchmarks

bench: install ## latency / memory / FLOPs / throughput of every method vs vanilla on a Qwen2-0.5B-size LLM (BENCH_ARGS="--size 7b" on GPU), then bench-select
	$(PY) -m benchmarks.bench_e2e $(BENCH_ARGS)
	$(PY) -m benchmarks.bench_select $(SELECT_ARGS)

bench-select: install ## selection cost of every method on tensors + VidCom2/FCA cost growth with frames (32-256), with spreads; writes results/bench/select.json
	$(PY) -m benchmarks.bench_select $(SELECT_ARGS)

# Paper tables, sweeps and the report (docs/reporting.md). Tiny presets (tiny*) build their offline assets first.
# Fetch a real benchmark's annotations + videos through lmms-eval's own task code, then verify every video decodes.
.PHONY: download tiny-hub
BENCH ?=
download: install ## fetch a benchmark into $$HF_HOME and verify its videos (BENCH=mvbench; CHECK=1 only verifies)
	@test -n "$(BENCH)" || { echo "usage: make download BENCH=<conf/benchmark name> [CHECK=1]"; exit 2; }
	$(PY) -m eval.download benchmark=$(BENCH) $(if $(CHECK),--check)

tiny-hub: install ## write the tiny hub (.cache/tiny_hub) the tiny_* benchmarks read: every benchmark in lmms-eval's hub layout, generated videos
	$(PY) -m eval.tinyhub

.PHONY: report sweep
SWEEP ?= tiny
OVERRIDES ?=
REPORT_ARGS ?=
TINY_ASSETS := $(PY) scripts/make_tiny_models.py >/dev/null && $(PY) scripts/make_tiny_benchmarks.py >/dev/null && \
	$(PY) -m eval.tinyhub >/dev/null

report: install ## tables (md/csv/tex), comparison with the paper and plots of all records in results/runs (REPORT_ARGS="--experiment tiny")
	$(PY) -m eval.report $(REPORT_ARGS)

table-%: install ## reproduce a paper table: resumable sweep of conf/experiment/<name>.yaml, its tables and the comparison with the paper (table-tiny*: CPU, offline, one process)
	@case "$*" in tiny*) $(TINY_ASSETS);; esac
	$(if $(filter tiny%,$*),$(OFFLINE)) $(PY) -m eval.presets experiment $* $(if $(filter tiny%,$*),--in-process) $(OVERRIDES)
	$(PY) -m eval.report --experiment $*

# One line per table/figure of the paper (recipe: the table-% rule above; docs/reporting.md lists the GPU hours).
# A tiny_<name> counterpart of each runs offline on CPU (make table-tiny_<name>).
table-llava_ov_7b: ## Table 2 (acc_llava): LLaVA-OV-7B, 32 frames, MVBench/LongVideoBench/MLVU/VideoMME (GPU)
table-llava_video_7b: ## Table 2 (acc_llava): LLaVA-Video-7B, 64 frames (GPU)
table-acc_llava_egoschema_perceptiontest: ## Table 3: LLaVA-OV-7B on EgoSchema and PerceptionTest (GPU)
table-efficiency_llava_ov_7b: ## Table 4 (efficiency_llava_ov_7b_mvbench): latency, memory, throughput on MVBench (GPU)
table-rel_qwen2vl_videomme: ## Figure 4: Qwen2-VL-7B on VideoMME, % of vanilla, grouped bars (GPU)
table-ablation_token_score: ## Table 5: token-score ablation (s_frame, -s_frame, s_video, -s_video, sum) (GPU)
table-ablation_frame_budget: ## Table 6: frame-budget ablation (uniform, max, mean) (GPU)
table-ablation_video_window: ## Table 7: video-centre window W = 4/8/16/32 (GPU)
table-ablation_score_weighting: ## Table 8: frame/video score weighting (GPU)
table-fca_on_other_methods: ## Figure 5: FCA grafted onto FastV and SparseVLM, % of vanilla, grouped bars (GPU)
table-qwen3_vl_8b_32f: ## post-paper Qwen3-VL-8B table (acc_qwen3vl_8b), 32 frames (GPU)
table-qwen3_vl_8b_64f: ## post-paper Qwen3-VL-8B table (acc_qwen3vl_8b), 64 frames (GPU)
table-qwen3_vl_32b: ## post-paper Qwen3-VL-32B table (acc_qwen3vl_32b) (GPU)
table-qwen3_vl_30b_a3b: ## post-paper Qwen3-VL-30B-A3B table (acc_qwen3vl_30b_a3b) (GPU)

sweep: install ## method x ratio grid by Hydra multirun, conf/sweep/$(SWEEP).yaml (resumable; OVERRIDES="hydra/launcher=slurm_gpu ..."), then its report
	@case "$(SWEEP)" in tiny*) $(TINY_ASSETS);; esac
	$(PY) -m eval.presets sweep $(SWEEP) --check $(OVERRIDES)
	$(if $(filter tiny%,$(SWEEP)),$(OFFLINE)) $(PY) -m eval.run -m +sweep=$(SWEEP) $(OVERRIDES)
	$(PY) -m eval.report --sweep $(SWEEP)

# Offline demo (CPU, docs/synthetic.md): the tiny TRAINED LLaVA-OV (assets/trained_tiny, `make train-tiny`) on the
# generated synthetic_mvbench, vanilla + every method at r = 0.5/0.25/0.15/0.1 (SYNTHETIC accuracies: a probe of what a
# method keeps, never a benchmark score), after the real-format path: vanilla + VidCom2 on lmms-eval's built-in tasks
# of all six real benchmarks (MVBench, VideoMME, LongVideoBench, MLVU, EgoSchema, PerceptionTest) served from the
# generated tiny hub with a random-weight tiny model (accuracy meaningless there), through lmms-eval's real evaluator
# (docs/harness.md). It ends with the synthetic method x ratio x task table and its two plots. On the 3-layer trained
# LLM sparsevlm prunes after layers 0/1 (its two stages; the output of the last layer is never pruned), pdrop's stages start at layers 1/2 and dycoke's stage 2 runs at layer 1;
# fastvid runs on the encoder's attention (signal=encoder, a labelled approximation): the trained checkpoint has no
# SigLIP MAP head and the official one is not downloaded offline; dycoke_ttm / dycoke run
# budget-matched at r = 0.5 (the lowest a 4-frame TTM reaches: frames 0 and 2 stay whole) and at DyCoke's nominal
# K = 0.75 under the 0.25 label (the table shows the retention realised).
# The random-weight tiny_* x every-method mechanics are covered by the tests (tests/integration).
.PHONY: demo demo-synthetic train-tiny
DEMO_MODEL ?= tiny_llava_ov
# lmms-eval's built-in tasks (unmodified YAMLs and utils) of the six real benchmarks on the generated tiny hub (the
# tiny_* benchmark configs select it through benchmark.hf_home; MVBench: 2 of its 20 subtasks)
DEMO_HUB_RUN := OMP_NUM_THREADS=1 $(OFFLINE) $(PY) -m eval.run -m model=$(DEMO_MODEL) \
	benchmark=tiny_mvbench,tiny_videomme,tiny_longvideobench,tiny_mlvu,tiny_egoschema,tiny_perceptiontest model.frames=4 \
	retention_ratio=0.25 progress=false
SYNTH_MODEL ?= trained_tiny_llava_ov
SYNTH_RATIOS ?= 0.5,0.25,0.15,0.1
# One torch thread (a tiny model's ops are too small to split; two threads spin against each other on a shared 2-core
# box) and 8 clips per generate() (answers equal batch 1, tests/eval/test_batching.py; in-LLM and decode-time methods
# fall back to batch 1 by themselves, recorded in each record's `batching`).
SYNTH_BATCH ?= 8
SYNTH_RUN := OMP_NUM_THREADS=1 $(OFFLINE) $(PY) -m eval.run -m model=$(SYNTH_MODEL) benchmark=synthetic_mvbench progress=false \
	batch_size=$(SYNTH_BATCH)
demo: install ## offline demo: real-format path (built-in tasks, tiny hub), then the TRAINED tiny LLaVA-OV on the synthetic benchmark, vanilla + every method x 4 ratios, table + plots
	$(TINY_ASSETS)
	$(DEMO_HUB_RUN) method=none,vidcom2
	$(PY) -m eval.report --model $(DEMO_MODEL)
	@$(PY) -m eval.summary --note
	@$(MAKE) --no-print-directory demo-synthetic

demo-synthetic: install ## the trained tiny model on the synthetic benchmark, vanilla + every method x 4 ratios, per-task table + plots (SYNTH_MODEL=trained_tiny_qwen2_5_vl)
	$(PY) scripts/make_tiny_benchmarks.py >/dev/null
	$(SYNTH_RUN) method=none
	$(SYNTH_RUN) 'method=glob(*,exclude=[none,dycoke,dycoke_ttm,sparsevlm,pdrop,fastvid,framefusion])' retention_ratio=$(SYNTH_RATIOS)
	$(SYNTH_RUN) method=fastvid method.signal=encoder retention_ratio=$(SYNTH_RATIOS)
	$(SYNTH_RUN) method=dycoke_ttm retention_ratio=0.5
	$(SYNTH_RUN) method=dycoke_ttm method.merge_ratio=0.75 retention_ratio=0.25
	$(SYNTH_RUN) method=dycoke method.stage2_layer=1 retention_ratio=0.5
	$(SYNTH_RUN) method=dycoke method.stage2_layer=1 method.merge_ratio=0.75 retention_ratio=0.25
	$(SYNTH_RUN) method=pdrop 'method.layers=[1,2]' retention_ratio=$(SYNTH_RATIOS)
	$(SYNTH_RUN) method=sparsevlm 'method.layers=[0,1]' retention_ratio=$(SYNTH_RATIOS)
	$(SYNTH_RUN) method=framefusion retention_ratio=0.5  # its layer-averaged cost has the floor 1/3 on the 3-layer LLM
	$(PY) -m eval.synthetic --model $(SYNTH_MODEL)

# LLaVA-OV (docs/synthetic.md): phase 1 (base: all tokens, 1500 steps) into .cache/train_tiny/, then phase 2 (augment:
# visual-token-removal augmentation, 600 steps) from it into assets/trained_tiny/llava_onevision. Qwen2.5-VL: phase 1
# only (base, 1000 steps, M-RoPE rope_theta 10) into assets/trained_tiny/qwen2_5_vl. CPU, one thread, seeded; the
# frozen towers' features are cached in .cache/train_tiny/features (a rerun skips the encoding). Check a checkpoint
# against its log: `python scripts/train_tiny.py --arch qwen2_5_vl --verify 75` (bit-identical rows + digests).
TRAIN_ARCHS ?= llava_onevision qwen2_5_vl
TRAIN := $(OFFLINE) $(PY) scripts/train_tiny.py --cache-dir .cache/train_tiny/features
train-tiny: install ## retrain the committed tiny LLaVA-OV (2 phases, ~35 min) and Qwen2.5-VL (~30 min) of assets/trained_tiny (CPU, one thread, seeded; TRAIN_ARCHS=llava_onevision for one)
	@for a in $(TRAIN_ARCHS); do \
	  if [ $$a = llava_onevision ]; then \
	    $(TRAIN) --arch $$a --recipe base --out .cache/train_tiny/$$a-base && \
	    $(TRAIN) --arch $$a --recipe augment --init .cache/train_tiny/$$a-base --out assets/trained_tiny/$$a || exit 1; \
	  else $(TRAIN) --arch $$a --recipe base --out assets/trained_tiny/$$a || exit 1; fi; \
	done

clean: ## remove generated outputs (keeps the venv and results/paper)
	rm -rf results/runs results/tables results/bench .pytest_cache
