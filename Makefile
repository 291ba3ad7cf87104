# The study's two commands: `make study` (runs everything) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= cpu
# Runs trained at once before the notebooks (PARALLEL=4 on one GPU; 1 on a CPU).
PARALLEL ?= 1
# When make started (before the venv and data steps), so the study's timing line includes setup.
STARTED := $(shell date +%s)

.PHONY: study study-extras study-avx2 teacher-times teacher-times-avx2 design test data lab lab-check book book-check lint bench clean-results help

help:
	@echo "make study   - set up .venv, build the data, run notebooks 00..06 (PROFILE=$(PROFILE); PROFILE=quick: one seed)"
	@echo "make study-extras - the controls and checks a reviewer asks for (figures/extras; after make study)"
	@echo "make study-avx2 - the cpu profile as a CPU without native bf16 runs it (figures/avx2)"
	@echo "make teacher-times - chapter times for the teacher's page: smoke, and reopened on the committed results (teacher-times-avx2: float32)"
	@echo "make design  - choose the cpu profile's budget and learning rates on validation (writes configs/recipe_cpu.json)"
	@echo "make test    - set up .venv, build the data, ruff, pytest (smoke chain included)"
	@echo "make lab     - JupyterLab on notebooks/"
	@echo "make lab-check - headless Chromium runs chapter 02 in make lab on the smoke profile (screenshots)"
	@echo "make bench   - the speed benchmarks in bench/"
	@echo "make book    - the executed chapters of the last make study as HTML: results/book/index.html"
	@echo "make book-check - every page of the book in headless Chromium, screenshots in results/book-check/"

# One bootstrap for everything: pinned requirements (torch==2.13.0, the CPU build).
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	@touch $(STAMP)

data: $(STAMP)
	$(PY) -m clp_utils.catalog build

study: data
	$(PY) -m clp_utils.machinery.pipeline --profile $(PROFILE) --parallel $(PARALLEL) --started $(STARTED)

# The controls and checks of the reviewer issue at the cpu recipe (chapters 03-05 on the
# extras profile): intermediate-only at full's rate, CLP at lambda 0.5, the paper recipe with
# random negatives, symmetric InfoNCE, the MoE gate that learns, GIST, hardness-weighted MNRL,
# and the scale check. It reuses the cpu profile's runs (run `make study` first); its figures
# go to figures/extras and the README shows its tables and timing line.
study-extras: data
	$(PY) -m clp_utils.machinery.pipeline --profile extras --started $(STARTED)

# The cpu profile as a CPU without native bf16 runs it, on any x86 CPU: PyTorch, oneDNN and
# MKL confined to AVX2 kernels, so "auto" precision picks float32: the same runs and seeds,
# slower. Its runs and figures stay apart (results/avx2, figures/avx2); the README shows its
# Table 2, claims and timing below the cpu profile's.
AVX2_ONLY := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
study-avx2: data
	$(AVX2_ONLY) CLP_RESULTS_DIR=$(CURDIR)/results/avx2 CLP_FIGURES_DIR=$(CURDIR)/figures/avx2 \
	  $(PY) -m clp_utils.machinery.pipeline --profile cpu --started $(STARTED)

# The teacher's page's chapter times, measured apart from make study: every chapter on the
# smoke profile, and every chapter as a fresh clone reopens it (committed results, nothing
# trains; an empty results folder). figures/timings/ keeps them with the machine that ran.
# Both start from empty results folders: smoke trains its tiny runs and fills its caches live.
teacher-times: data
	rm -rf results/teacher && CLP_RESULTS_DIR=$(CURDIR)/results/teacher $(PY) -m clp_utils.machinery.pipeline --profile smoke --record-timings
	CLP_RESULTS_DIR=$(CURDIR)/results/teacher $(PY) -m clp_utils.machinery.pipeline --reopen

# The same where the CPU has no native bf16 (kernels confined to AVX2: float32).
teacher-times-avx2: data
	rm -rf results/teacher-avx2 && $(AVX2_ONLY) CLP_RESULTS_DIR=$(CURDIR)/results/teacher-avx2 $(PY) -m clp_utils.machinery.pipeline --profile smoke --record-timings
	$(AVX2_ONLY) CLP_RESULTS_DIR=$(CURDIR)/results/teacher-avx2 $(PY) -m clp_utils.machinery.pipeline --reopen

# The cpu profile's design experiments (learning curves, learning-rate grids) on validation
# queries only; its recipe and figures are committed, so `make study` never reruns them.
design: data
	$(PY) -m clp_utils.machinery.design

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: data lint
	$(PY) -m pytest -q

# JupyterLab with the study's settings (no news prompt); a chapter run by hand trains what
# `make study` trains (its parameters cell names the profile).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
$(LAB_SETTINGS): notebooks/lab-overrides.json $(STAMP)
	mkdir -p $(dir $@) && cp notebooks/lab-overrides.json $@

lab: data $(LAB_SETTINGS)
	$(VENV)/bin/jupyter lab notebooks/ $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

# A person's use of JupyterLab, scripted: headless Chromium opens chapter 02 in `make lab`,
# runs every cell on the smoke profile and takes screenshots (results/lab-check/).
lab-check: data $(LAB_SETTINGS)
	$(PY) tests/lab_check.py

bench: data
	$(PY) bench/encode.py
	$(PY) bench/mining.py
	$(PY) bench/loss_step.py
	$(PY) bench/moe_forward.py
	$(PY) bench/bf16_check.py
	$(PY) bench/step_profile.py
	$(PY) bench/trainer_step.py

book: $(STAMP)
	$(PY) -m clp_utils.machinery.book --profile $(PROFILE)

# The built book in headless Chromium: every page opened, screenshots in results/book-check/.
book-check: $(STAMP)
	$(PY) tests/book_check.py

clean-results:
	rm -rf results/
