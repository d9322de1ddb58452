# Two commands on a fresh machine: `make demo` runs the whole system on embedded defaults,
# `make test` runs the test suite. Both create .venv and install the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install

demo: $(VENV)/.installed
	$(BIN)/exsync demo

test: $(VENV)/.installed
	PYTHON=$(BIN)/python .ci/ensure-redis
	.ci/ensure-chromium
	PYTHON=$(BIN)/python .ci/ensure-compose
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 3

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@
