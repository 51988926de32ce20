# The two commands a newcomer runs: `make run` and `make test`. Both set up .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit soak chaos bench install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: the whole fleet on the paper exchange with synthetic market data
run: $(STAMP)
	$(BIN)/qt run

## test: lint, type check and the whole suite (no Redis needed: the suite starts its own)
test: lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check common services tests bench
	$(BIN)/mypy

## soak / chaos: the long versions of the soak and crash tests
soak: $(STAMP)
	QT_SOAK_ENTRIES=100000 QT_SOAK_KILLS=100 $(BIN)/python -m pytest -m slow tests -k soak -s

chaos: $(STAMP)
	QT_CHAOS_ROUNDS=50 $(BIN)/python -m pytest -m slow tests -k chaos -s

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
