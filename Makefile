PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# every database_url is its own file or database, so tests may run in parallel
PYTEST_ARGS ?= -n 4 --durations=25

SHELL := bash
.SHELLFLAGS := -euo pipefail -c

.PHONY: venv lint typecheck test pytest demo bench agent-zipapp clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

lint: venv
	$(BIN)/ruff check src tests bench

typecheck: venv
	$(BIN)/mypy

test: lint typecheck pytest

# The suite runs on SQLite and, whenever a server can be had, on PostgreSQL too:
# JOBFLEET_TEST_PG_URL if given, else a throwaway cluster that lives as long as the run.
pytest: venv
	@if [ -n "$${JOBFLEET_TEST_PG_URL:-}" ]; then \
	    export JOBFLEET_TEST_BACKENDS=sqlite,postgresql; \
	elif scripts/pg-cluster.sh bindir >/dev/null; then \
	    pg_dir=$$(mktemp -d); \
	    trap 'scripts/pg-cluster.sh stop "$$pg_dir"' EXIT; \
	    trap 'exit 130' INT TERM HUP; \
	    JOBFLEET_TEST_PG_URL=$$(scripts/pg-cluster.sh start "$$pg_dir"); \
	    export JOBFLEET_TEST_PG_URL JOBFLEET_TEST_BACKENDS=sqlite,postgresql; \
	else \
	    echo '*****************************************************************' >&2; \
	    echo '* WARNING: no PostgreSQL found; PostgreSQL tests are SKIPPED.    *' >&2; \
	    echo '* Install the postgresql package or set JOBFLEET_TEST_PG_URL.    *' >&2; \
	    echo '*****************************************************************' >&2; \
	    export JOBFLEET_TEST_BACKENDS=sqlite; \
	fi; \
	echo "pytest backends: $$JOBFLEET_TEST_BACKENDS" >&2; \
	$(BIN)/pytest $(PYTEST_ARGS)

demo: venv
	$(BIN)/jobfleet demo --keep

bench: venv
	$(BIN)/python bench/fanout.py

# the agent as one file for hosts without pip: python3 dist/jobfleet-agent.pyz --help
agent-zipapp: venv
	$(BIN)/python scripts/build-agent-zipapp.py dist/jobfleet-agent.pyz

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
