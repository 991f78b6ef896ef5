# One command to see it work, one command to test it. Both set themselves up.
#
# Installs are pinned: constraints.txt holds an exact version for every package that
# `pip install -e '.[dev]'` or `pip install -e '.[sklearn,server,reproduce]'` brings in; constraints-bench.txt
# does the same for the `bench` extra (MLflow's own caps clash with the dev pins, so the
# benchmark gets its own venv and its own file). `make lock` regenerates both.
PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
BENCH_VENV  ?= .venv-bench
BENCH_BIN   := $(BENCH_VENV)/bin
LOCK_VENV   := .venv-lock
# The pip every venv made here uses, so the resolver is a known one.
PIP_VERSION := 26.3

.PHONY: demo demo-story bench-ui bench-scale test lint bench bench-server setup-dev setup-demo setup-bench lock lock-dev lock-bench clean

# A venv (.venv/bin/python, .venv-bench/bin/python); an existing one is reused as it is.
%/bin/python:
	$(PYTHON) -m venv $*

setup-demo: $(BIN)/python
	$(BIN)/python -m pip install --quiet 'pip==$(PIP_VERSION)'
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[sklearn,server,reproduce]'

setup-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet 'pip==$(PIP_VERSION)'
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'

setup-bench: $(BENCH_BIN)/python
	$(BENCH_BIN)/python -m pip install --quiet 'pip==$(PIP_VERSION)'
	$(BENCH_BIN)/python -m pip install --quiet -c constraints-bench.txt -e '.[bench]'

# The demo's story, then its registry served with the web UI on 127.0.0.1:$(PORT) until Ctrl-C
PORT ?= 8000
demo: setup-demo
	$(BIN)/python examples/demo.py --serve --port $(PORT)

# The story alone: ends when it has been told (for scripts and a second look at the output)
demo-story: setup-demo
	$(BIN)/python examples/demo.py

test: setup-dev
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -p no:cacheprovider

lint: setup-dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

bench: setup-bench
	$(BENCH_BIN)/python bench/registry_bench.py

# modelledger's REST server against `mlflow server` over HTTP (SQLite, then PostgreSQL on 127.0.0.1:5432)
bench-server: setup-bench
	$(BENCH_BIN)/python bench/server_bench.py

# The web UI's API calls on a model of 10,000 versions: server time per page (needs only the dev venv)
bench-ui: setup-dev
	$(BIN)/python bench/ui_bench.py

# Each verb's cost at 1,000, 10,000 and 100,000 versions, SQLite then PostgreSQL (the dev venv is enough)
bench-scale: setup-dev
	$(BIN)/python bench/scale_bench.py

# Regenerate the pins: resolve each extra afresh in a throwaway venv (newest releases that
# fit pyproject.toml) and write `pip freeze` of it, sorted. Review the diff, then run `make test`.
lock: lock-dev lock-bench

lock-dev:
	$(call freeze,dev$(comma)sklearn,constraints.txt)

lock-bench:
	$(call freeze,bench,constraints-bench.txt)

comma := ,
# $(call freeze,EXTRAS,FILE)
define freeze
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet 'pip==$(PIP_VERSION)'
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[$(1)]'
	{ echo "# Exact pins for pip install -e '.[$(1)]', resolved in a clean venv"; \
	  echo "# ($$($(LOCK_VENV)/bin/python -c 'import platform as p; print("Python", p.python_version(), p.system(), p.machine())'), pip $(PIP_VERSION))."; \
	  echo "# Regenerate with: make lock   (do not edit by hand)"; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | LC_ALL=C sort -f; } > $(2).tmp
	mv $(2).tmp $(2)
	rm -rf $(LOCK_VENV)
endef

clean:
	rm -rf demo-output .modelledger
