# The two commands a newcomer runs: `make run` and `make test`. Both set up .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint soak chaos chaos-fleet bench install clean
PREFIX ?= /opt/quantum-trader
SERVICE_USER ?= quantum
DEST ?= /etc/systemd/system

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: the whole fleet on the paper exchange with synthetic market data, demo profile (config/demo.toml)
run: $(STAMP)
	$(BIN)/qt run --profile demo

## test: lint, type check and the whole suite (no Redis needed: the suite starts its own)
test: lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check common services ops tests bench
	$(BIN)/mypy

## soak / chaos: the long versions of the soak and crash tests (make test runs the short ones)
soak: $(STAMP)
	QT_SOAK_ENTRIES=40000 QT_SOAK_KILLS=80 $(BIN)/python -m pytest tests/integration/test_bus_processes.py -k soak -s

chaos: $(STAMP)
	QT_CHAOS_PLANS=2000 QT_CHAOS_ROUNDS=40 $(BIN)/python -m pytest tests/integration/apply_layer/test_crash.py -s

## chaos-fleet: the whole fleet through faults for five minutes on each exchange (make test runs 25 s)
chaos-fleet: $(STAMP)
	QT_CHAOS_FLEET_SECONDS=300 QT_CHAOS_FLEET_KILLS=5 QT_CHAOS_FLEET_REDIS_KILLS=3 \
		$(BIN)/python -m pytest tests/chaos -s

bench: $(STAMP)
	$(BIN)/python -m bench

## install: render the systemd units for PREFIX (the checkout installed there) into DEST
install: $(STAMP)
	$(BIN)/qt install --prefix $(PREFIX) --user $(SERVICE_USER) --dest $(DEST)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
