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
# 3 hides TensorFlow's C++ errors too: on a machine without a usable GPU it logs "failed call to cuInit" as one,
# then runs on the CPU; failures that matter raise in Python.
export TF_CPP_MIN_LOG_LEVEL ?= 3
# Dagster services' console log level in `make ui`: at info, the daemon logs every tick of every sensor (the new
# interactions sensor ticks every 2 s). `make ui UI_LOG_LEVEL=info` shows them.
UI_LOG_LEVEL ?= warning

.PHONY: venv manifest demo test test-fast ui db-start db-stop bench lint docs-dbt clean

venv: $(STAMP)

# The parsed dbt project, which the code location reads its dbt assets and checks from (it never parses at
# import); re-parsed when a file of the dbt project changes. `dagster dev` re-parses on every load itself.
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := dbt_project/dbt_project.yml dbt_project/profiles.yml $(shell find dbt_project/models dbt_project/macros dbt_project/tests -type f)
manifest: $(MANIFEST)
$(MANIFEST): $(DBT_SOURCES) | $(STAMP)
	@$(BIN)/dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project

# The Python version is checked against pyproject.toml's requires-python before anything is installed: the Python
# that creates .venv, or the one an existing .venv was made with.
$(STAMP): requirements.lock pyproject.toml
	@if test -x $(BIN)/python; then \
		$(BIN)/python scripts/check_python.py || { echo "$(VENV) was made with it: run 'make clean', then make again with PYTHON=python3.11" >&2; exit 1; }; \
	else \
		command -v $(PYTHON) > /dev/null || { echo "$(PYTHON) not found: install Python 3.11, or pass PYTHON=/path/to/python3.11" >&2; exit 1; }; \
		$(PYTHON) scripts/check_python.py || { echo "Install Python 3.11 and run make again with PYTHON=python3.11" >&2; exit 1; }; \
		$(PYTHON) -m venv $(VENV); \
	fi
	@echo "Installing the pinned dependency set into .venv (first run: a few minutes)..."
	@$(BIN)/pip install -q --disable-pip-version-check --upgrade pip > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock > $(VENV)/pip.log 2>&1 || { grep -v "^WARNING: Location" $(VENV)/pip.log; exit 1; }
	@$(BIN)/pip install -q --disable-pip-version-check --no-deps -e . > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(BIN)/python -c "import teamu_assets, dagster, dagster_dbt, tensorflow_recommenders" 2>/dev/null
	@rm -f $(VENV)/.installed-* && touch $@

demo: manifest
	@$(BIN)/teamu demo

# The Supabase Edge Functions' handlers are plain JavaScript, tested with Node's own runner (Node 18 or newer).
NODE_TEST = command -v node > /dev/null || { echo "node not found: install Node.js 18+ for the Edge Function tests" >&2; exit 1; }; \
	node --test supabase/functions/

test: manifest
	@$(NODE_TEST)
	$(BIN)/teamu db start
	$(BIN)/pytest

test-fast: manifest
	@$(NODE_TEST)
	$(BIN)/teamu db start
	$(BIN)/pytest -m "not slow and not e2e"

# -W: dagster 1.13 steers `dagster dev` users to `dg dev` (the dagster-dg project layout, which this repository
# doesn't use); `dagster dev` is still supported.
# The online updater (`teamu realtime`, docs/OPERATIONS.md section 8) runs beside dagster dev, logging to
# TEAMU_HOME/logs/realtime.log; Ctrl-C stops both.
ui: manifest
	$(BIN)/teamu db start
	@echo "Dagster UI at http://127.0.0.1:3000 (Ctrl-C stops it). Services log warnings and errors only: make ui UI_LOG_LEVEL=info for more."
	@echo "Online updater: teamu realtime, log in $(TEAMU_HOME)/logs/realtime.log"
	@mkdir -p $(TEAMU_HOME)/logs
	cd $(CURDIR) && { $(BIN)/teamu realtime > $(TEAMU_HOME)/logs/realtime.log 2>&1 & realtime=$$!; \
		trap 'kill $$realtime 2> /dev/null; wait $$realtime' EXIT; \
		$(BIN)/python -W 'ignore:Function `dev_command` is superseded:FutureWarning' \
		-m dagster dev -w workspace.yaml --log-level $(UI_LOG_LEVEL); }

db-start: venv
	$(BIN)/teamu db start

db-stop: venv
	$(BIN)/teamu db stop

bench: manifest
	$(BIN)/teamu db start
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_faults.py
	$(BIN)/python bench/bench_crashes.py
	$(BIN)/python bench/bench_serving.py --posts 100000
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/bench_freshness.py --trials 20
	$(BIN)/python bench/bench_post_ideas.py
	$(BIN)/python bench/bench_incremental_scale.py --sizes 10000 100000 --trials 5
	$(BIN)/python bench/bench_real_data.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# dbt's documentation site (every model, column, test and the lineage) from the configured database, served on
# loopback until Ctrl-C; DBT_DOCS_PORT=... for another port.
DBT_DOCS_PORT ?= 8080
docs-dbt: manifest
	$(BIN)/teamu db start
	$(BIN)/teamu dbt docs generate --quiet
	@echo "dbt docs at http://127.0.0.1:$(DBT_DOCS_PORT) (Ctrl-C stops the server)"
	$(BIN)/teamu dbt docs serve --host 127.0.0.1 --port $(DBT_DOCS_PORT) --no-browser

clean:
	-$(BIN)/teamu db stop
	rm -rf $(VENV) dbt_project/target dbt_project/logs
