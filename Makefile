# rlhf_nb — every command a learner or CI needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NB_SANITIZE := tests/nbval_sanitize.cfg
# make test runs on this many cores (pytest-xdist; one torch thread each, so stored outputs reproduce); 0: in-process
TEST_WORKERS ?= 2
# smoke notebook parameters, e.g. make smoke SEED=1 KL=0.1 BATCH=8 STEPS=6; unset ones keep the defaults of the
# notebook's `parameters` cell (notebooks/00_smoke.ipynb), the one place they live. Each value reaches the tool as one
# shell-quoted argument, so SEED='1 --out x' is a bad --seed (one line, exit 2), not an extra flag
shq = '$(subst ','\'',$(1))'
SMOKE_ARGS = $(if $(SEED),--seed $(call shq,$(SEED))) $(if $(KL),--kl_coef $(call shq,$(KL))) \
             $(if $(BATCH),--batch_size $(call shq,$(BATCH))) $(if $(STEPS),--steps $(call shq,$(STEPS))) \
             $(if $(REWARD),--reward $(call shq,$(REWARD)))
TRAIN_OUT ?= runs
# an extra package index for torch, used only when set. On Linux (and WSL) torch from PyPI is the CUDA build (a few GB
# of CUDA libraries); PyTorch's CPU index has the ~190 MB CPU wheel, which pip prefers (2.13.0+cpu sorts above 2.13.0):
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# make overopt and make capstone run this many processes side by side (the numbers do not depend on it)
OVEROPT_JOBS ?= 2
export TOKENIZERS_PARALLELISM := false
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: help setup smoke test test-unit test-notebooks test-browser lab notebooks base-model reward-model \
        train_smoke train_quick train_quick_grpo train_full tensorboard check bench clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -c constraints.txt -e '.[dev,trl]' 2>&1 | grep -v 'is ignored' || true
	@$(PY) -c "import rlhf_nb, torch, transformers, trl" || { echo "install failed"; exit 1; }
	$(PY) -m ipykernel install --sys-prefix --name rlhf_nb --display-name "Python (rlhf_nb)" >/dev/null
	@touch $@

setup: $(STAMP)  ## create .venv and install the pinned set (constraints.txt; TORCH_INDEX= for torch's CPU wheels)

smoke: $(STAMP)  ## run notebooks/00_smoke.ipynb with papermill into runs/run_*/ (SEED= KL= BATCH= STEPS= REWARD=)
	$(PY) -m rlhf_nb.tools.smoke $(SMOKE_ARGS)

test: $(STAMP)  ## unit tests + nbval over every notebook (+ the browser test when chromium is present)
	$(PY) -m pytest -q tests notebooks --nbval --nbval-current-env --nbval-sanitize-with $(NB_SANITIZE) -p no:cacheprovider \
	    -n $(TEST_WORKERS) --dist loadscope

test-unit: $(STAMP)  ## unit tests only
	$(PY) -m pytest -q tests -m "not browser"

test-notebooks: $(STAMP)  ## nbval over the stored notebooks only
	$(PY) -m pytest -q notebooks --nbval --nbval-current-env --nbval-sanitize-with $(NB_SANITIZE)

test-browser: $(STAMP)  ## JupyterLab in headless Chromium: open 06, move the KL slider, click Run
	RLHF_NB_REQUIRE_BROWSER=1 $(PY) -m pytest -q tests/test_browser.py -m browser

lab: $(STAMP)  ## open JupyterLab on the notebooks with the rlhf_nb kernel
	$(VENV)/bin/jupyter lab notebooks

notebooks: $(STAMP)  ## re-execute every notebook in order and store its outputs
	$(PY) -m rlhf_nb.tools.notebooks

base-model: $(STAMP)  ## retrain the embedded tiny GPT-2 and its tokenizer (rlhf_nb/assets/tiny-gpt2-reviews)
	$(PY) -m rlhf_nb.tools.base_model --overwrite

reward-model: $(STAMP)  ## retrain the reward model from simulated preferences (rlhf_nb/assets/reward-model)
	$(PY) -m rlhf_nb.tools.build_reward_model --overwrite

.PHONY: proxies overopt
proxies: $(STAMP)  ## lesson 08's proxy reward models on gold-labelled pairs (rlhf_nb/assets/proxy-rm-*; ~2 CPU min)
	$(PY) -m rlhf_nb.tools.build_proxies --overwrite

overopt: $(STAMP)  ## best-of-n and PPO on each proxy, scored by the gold (rlhf_nb/assets/overopt-sweep.json; ~50 CPU min)
	$(PY) -m rlhf_nb.tools.overopt_sweep --overwrite --jobs $(OVEROPT_JOBS)

.PHONY: grpo_sweep
grpo_sweep: $(STAMP)  ## lesson 11's GRPO variants over seeds 0-2, and J* (rlhf_nb/assets/grpo-sweep.json; ~13 CPU min)
	$(PY) -m rlhf_nb.tools.grpo_sweep --overwrite --jobs $(OVEROPT_JOBS)

.PHONY: smoke-seeds
smoke-seeds: $(STAMP)  ## lesson 00's smoke run at the notebook's defaults, seeds 0-2 (rlhf_nb/assets/smoke-seeds.json; ~1 CPU min)
	$(PY) -m rlhf_nb.tools.smoke_seeds --overwrite

.PHONY: capstone
capstone: $(STAMP)  ## lesson 06's beta sweep, its critic/baseline variants and reference-refresh runs (rlhf_nb/assets/capstone-sweep.json; ~16 CPU min)
	$(PY) -m rlhf_nb.tools.capstone_sweep --overwrite --jobs $(OVEROPT_JOBS)

train_smoke: $(STAMP)  ## a few PPO steps on the CLI (< 30 s)
	$(PY) -m rlhf_nb.train --seed 0 --epochs 2 --steps_per_epoch 4 --batch_size 16 --max_new_tokens 10 --save_every 4 --out $(TRAIN_OUT)

# train_quick: RunConfig's defaults, which are lesson 06's capstone settings (200 steps of 64 prompts, one gradient step
# per rollout at lr 1e-3 decaying linearly to 0, vf_coef 1.0), then the run's J/J* against the KL-regularised optimum
# (rlhf_nb.evaluate): above 0.9 on each of 3 seeds (make bench, row ppo: docs/benchmarks.md). SEED= picks the seed.
train_quick: $(STAMP)  ## under a minute: score 0 -> about 0.7 at about 3 nats of KL, then its J/J* (about 0.95; SEED=)
	name=quick_$$(date +%Y%m%d_%H%M%S) && \
	$(PY) -m rlhf_nb.train --seed $(call shq,$(or $(SEED),0)) --save_every 100 --out $(TRAIN_OUT) --run_name $$name && \
	$(PY) -m rlhf_nb.evaluate --run $(TRAIN_OUT)/$$name

# the same for GRPO: 16 prompts x 4 completions a step (the 64 samples of train_quick), a group baseline, no critic
train_quick_grpo: $(STAMP)  ## under a minute: GRPO (16 prompts x 4, no critic), then its J/J* (about 0.95; SEED=)
	name=quick_grpo_$$(date +%Y%m%d_%H%M%S) && \
	$(PY) -m rlhf_nb.train --seed $(call shq,$(or $(SEED),0)) --advantage grpo --batch_size 16 --num_generations 4 \
	    --save_every 100 --out $(TRAIN_OUT) --run_name $$name && \
	$(PY) -m rlhf_nb.evaluate --run $(TRAIN_OUT)/$$name

train_full: $(STAMP)  ## several minutes, adaptive KL
	$(PY) -m rlhf_nb.train --seed 0 --epochs 10 --steps_per_epoch 30 --batch_size 64 --adaptive_kl --target_kl 4 --save_every 50 --out $(TRAIN_OUT)

.PHONY: dpo_smoke dpo_compare
dpo_smoke: $(STAMP)  ## one DPO epoch on lesson 08's 1,000 preference pairs, standard run folder (< 30 s)
	$(PY) -m rlhf_nb.dpo --seed 0 --epochs 1 --batch_size 64 --eval_samples 64 --save_every 8 --out $(TRAIN_OUT)

dpo_compare: $(STAMP)  ## DPO vs SFT vs reward model + PPO on the same pairs, by gold at matched KL (rlhf_nb/assets/dpo-vs-ppo.json; ~17 CPU min)
	$(PY) -m rlhf_nb.tools.dpo_vs_ppo --overwrite

tensorboard: $(STAMP)  ## TensorBoard over runs/
	$(VENV)/bin/tensorboard --logdir runs --host 127.0.0.1

check: $(STAMP)  ## verify the install: imports, the embedded model loads and samples, every reward scores
	$(PY) -m rlhf_nb.tools.check_install

bench: $(STAMP)  ## measure speed, memory and learning curves; writes docs/benchmarks.md
	$(PY) -m rlhf_nb.tools.bench

clean:  ## remove caches and run outputs (keeps runs/.gitkeep and .venv)
	find runs -mindepth 1 ! -name .gitkeep -exec rm -rf {} + 2>/dev/null || true
	rm -rf .pytest_cache build dist *.egg-info
	find . -name __pycache__ -not -path './.venv/*' -exec rm -rf {} + 2>/dev/null || true

.PHONY: arith-model verifiable
arith-model: $(STAMP)  ## lesson 12's half-trained adding model (rlhf_nb/assets/tiny-gpt2-arith; ~1 CPU min)
	$(PY) -m rlhf_nb.tools.build_arith_model --overwrite

verifiable: $(STAMP)  ## lesson 12's GRPO/PPO/expert-iteration runs, exact pass@k (rlhf_nb/assets/verifiable-sweep.json; ~4 CPU min)
	$(PY) -m rlhf_nb.tools.verifiable_sweep --overwrite --jobs 2
