# Two commands: `make dev` runs the embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# e.g. FUZZ_ARGS='--examples 200000 --workers 1' (see python -m tests.fuzz.run --help)
FUZZ_ARGS ?=

.PHONY: dev test lint typecheck unit fuzz protos bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[server,dev]"
	@touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

dev: $(VENV)/.installed
	$(BIN)/cvault dev

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(VENV)/.installed-test
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# 100,000 fuzz examples or more over every RPC; prints a status table per RPC, exits 1 on a finding
fuzz: $(VENV)/.installed-test
	$(BIN)/python -m tests.fuzz.run --examples 100000 $(FUZZ_ARGS)

protos: $(VENV)/.installed-test
	$(BIN)/python scripts/gen_protos.py

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/records.py

clean:
	rm -rf $(VENV) .cvault .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
