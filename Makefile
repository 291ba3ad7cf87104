# The study's two commands: `make study` (runs everything) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= cpu

.PHONY: study test data lab lint bench clean-results help

help:
	@echo "make study   - set up .venv, build the data, run notebooks 00..06 (PROFILE=$(PROFILE))"
	@echo "make test    - set up .venv, build the data, ruff, pytest (smoke chain included)"
	@echo "make lab     - JupyterLab on notebooks/"
	@echo "make bench   - the speed benchmarks in bench/"

# One bootstrap for everything: pinned requirements (torch==2.13.0, the CPU build).
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	@touch $(STAMP)

data: $(STAMP)
	$(PY) -m clp_utils.data build

study: data
	$(PY) -m clp_utils.pipeline --profile $(PROFILE)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: data lint
	$(PY) -m pytest -q

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

bench: data
	$(PY) bench/encode.py
	$(PY) bench/mining.py
	$(PY) bench/loss_step.py
	$(PY) bench/moe_forward.py

clean-results:
	rm -rf results/
