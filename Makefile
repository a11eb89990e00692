# One-command set-up: `make test` and `make run` create what they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PHOENIX_VENV ?= .venv-phoenix
PHOENIX_VERSION ?= 20.26.1
BIN := $(VENV)/bin

export PHOENIX_PYTHON := $(abspath $(PHOENIX_VENV))/bin/python

.PHONY: help install phoenix redis chromium test lint typecheck unit run bench clean

help:
	@echo "make run    - set up everything and start the demo (Phoenix + Datadog simulator + gateway)"
	@echo "make test   - set up everything, then lint, type-check and run the whole test suite"
	@echo "make bench  - run the benchmarks and write bench/results/latest.md"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Phoenix lives in its own environment: it pins many packages of its own and is only ever run as a
# separate server process (tests and demo), never imported by the gateway.
$(PHOENIX_VENV)/.installed:
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/pip install --quiet --upgrade pip
	$(PHOENIX_VENV)/bin/pip install --quiet 'arize-phoenix==$(PHOENIX_VERSION)'
	touch $@

install: $(BIN)/.installed
phoenix: $(PHOENIX_VENV)/.installed

# The shared cache tier and shared rate budgets are tested against a real redis-server (7.x, the
# Debian package); the suite starts its own on a free loopback port, so no service is enabled.
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

# The charts' browser test (tests/test_charts_browser.py) opens the HTML pictures in a real headless
# Chromium: Debian's chromium and its chromedriver (chromium-driver, built from the same source, so
# the two always match; selenium is given its path and never downloads a driver).
chromium:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

unit: install chromium
	$(BIN)/pytest -m "not phoenix"

test: install phoenix redis chromium lint typecheck
	$(BIN)/pytest

run: install phoenix
	$(BIN)/annotation-gateway demo

bench: install phoenix redis
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy
	$(BIN)/python -m bench.run

# 60 s of mixed load while one upstream flaps (bench/soak.py); writes bench/results/soak.md.
.PHONY: soak
soak: install
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) $(PHOENIX_VENV) .pytest_cache .mypy_cache .ruff_cache
