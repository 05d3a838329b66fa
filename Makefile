# The two commands a newcomer needs: `make demo` and `make test`. Both bootstrap .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

export TEAMU_HOME ?= $(CURDIR)/.teamu
export DAGSTER_HOME ?= $(TEAMU_HOME)/dagster
# dagster-dbt runs the `dbt` found on PATH: the virtualenv's comes first.
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test test-fast ui db-start db-stop bench lint docs-dbt clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the pinned dependency set into .venv (first run: a few minutes)..."
	@$(BIN)/pip install -q --disable-pip-version-check --upgrade pip > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock > $(VENV)/pip.log 2>&1 || { grep -v "^WARNING: Location" $(VENV)/pip.log; exit 1; }
	@$(BIN)/pip install -q --disable-pip-version-check --no-deps -e . > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(BIN)/python -c "import teamu_assets, dagster, dagster_dbt, tensorflow_recommenders" 2>/dev/null
	@rm -f $(VENV)/.installed-* && touch $@

demo: venv
	$(BIN)/teamu demo

test: venv
	$(BIN)/teamu db start
	$(BIN)/pytest

test-fast: venv
	$(BIN)/teamu db start
	$(BIN)/pytest -m "not slow and not e2e"

ui: venv
	$(BIN)/teamu db start
	cd $(CURDIR) && $(BIN)/dagster dev -w workspace.yaml

db-start: venv
	$(BIN)/teamu db start

db-stop: venv
	$(BIN)/teamu db stop

bench: venv
	$(BIN)/teamu db start
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_faults.py
	$(BIN)/python bench/bench_serving.py --posts 100000
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/bench_freshness.py --trials 20
	$(BIN)/python bench/bench_incremental_scale.py --sizes 10000 100000 --trials 5
	$(BIN)/python bench/bench_real_data.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs-dbt: venv
	$(BIN)/teamu dbt docs generate

clean:
	-$(BIN)/teamu db stop
	rm -rf $(VENV) dbt_project/target dbt_project/logs
