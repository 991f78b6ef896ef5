# One command to see it work, one command to test it. Both set themselves up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench setup-dev setup-demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup-demo: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[sklearn]'

setup-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

demo: setup-demo
	$(BIN)/python examples/demo.py

test: setup-dev
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup-dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

bench: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/registry_bench.py

clean:
	rm -rf demo-output .modelledger
