# Two commands do all the set-up on a fresh machine: `make lab` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: lab test test-fast lint bench clean screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-run the install only when pyproject.toml changes.
$(VENV)/.lab-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[lab]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# JupyterLab refuses to run as root unless told; these machines run everything as root.
lab: $(VENV)/.lab-installed
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# The browser tests drive Debian's Chromium: playwright's own browser download cannot
# work on these machines. Installing it needs root (apt-get), as on CI.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update && apt-get install -y chromium

test: $(VENV)/.test-installed $(CHROMIUM)
	$(BIN)/ruff check oneshot_nb tests benchmarks
	$(BIN)/ruff format --check oneshot_nb tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# The tests to run while editing, in about two minutes: everything but real kernels (marked
# `kernel`), the notebooks (nbval is not even loaded: importing it takes two seconds),
# the browser and the tests marked `slow` (the Dask faults among them). `make test` runs
# them all.
test-fast: $(VENV)/.test-installed
	$(BIN)/python -m pytest -p no:nbval -o addopts="-ra -p no:cacheprovider" \
		tests --ignore=tests/browser -m "not kernel and not slow"

# Refreshes docs/*.png from the browser tests (they write no screenshots otherwise).
screenshots: $(VENV)/.test-installed
	ONESHOT_SCREENSHOTS=1 $(BIN)/python -m pytest tests/browser -m screenshot

# GNU parallel is one of the contenders in benchmarks/spawn.py. Installing it needs root.
GNU_PARALLEL := /usr/bin/parallel
$(GNU_PARALLEL):
	apt-get update && apt-get install -y parallel

bench: $(VENV)/.test-installed $(GNU_PARALLEL)
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/spawn.py
	$(BIN)/python benchmarks/views.py
	$(BIN)/python benchmarks/tables.py
	$(BIN)/python benchmarks/cluster.py
	$(BIN)/python benchmarks/terminal.py
	$(BIN)/python benchmarks/usage.py

clean:
	rm -rf $(VENV)
