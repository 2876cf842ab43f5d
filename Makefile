# liqbot developer commands. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when pyproject.toml changes; editable, so code edits need no reinstall.
$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.base
	$(PIP) install -e '.[dev]'
	@touch $@

# A crowded-long cascade (synthesised once, then reused), hold long 10x with risk off and on.
demo: $(VENV)/.base
	@test -f var/demo/manifest.json || $(BIN)/liqbot data synth --crowding long --days 3 --seed 7 --out var/demo
	$(BIN)/liqbot backtest var/demo --strategy hold --param side=long --param leverage=10 \
		--risk compare --preset balanced --report var/demo/report.html

test: $(VENV)/.dev
	$(BIN)/python -m pytest

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/run.py

lint: $(VENV)/.dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var build *.egg-info
