# liqbot developer commands. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PIP     = $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install demo paper test bench efficacy lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when pyproject.toml changes; editable, so code edits need no reinstall.
$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.base
	$(PIP) install -e '.[dev]'
	@touch $@

# The package in .venv: then `.venv/bin/liqbot ...` (README examples use that path).
install: $(VENV)/.base

# A crowded-long cascade (synthesised once, then reused), hold long 10x with risk off and on.
demo: $(VENV)/.base
	@test -f var/demo/manifest.json || $(BIN)/liqbot data synth --crowding long --days 3 --seed 7 --out var/demo
	$(BIN)/liqbot backtest var/demo --strategy hold --param side=long --param leverage=10 \
		--risk compare --preset balanced --report var/demo/report.html

# Paper trading offline: the daemon replays the same synthetic cascade (docs/daemon.md).
paper: $(VENV)/.base
	$(BIN)/liqbot run --replay cascade-long --param side=long --param leverage=10 \
		--store sqlite:///var/paper.db
	$(BIN)/liqbot status --store sqlite:///var/paper.db

test: $(VENV)/.dev
	$(BIN)/python -m pytest

# All three always run; the exit status says whether any target was missed (NO) or regressed.
bench: $(VENV)/.dev
	@rc=0; \
	$(BIN)/python benchmarks/run.py || rc=1; \
	$(BIN)/python benchmarks/daemon.py --json var/bench-daemon.json || rc=1; \
	$(BIN)/python benchmarks/ticks.py --json var/bench-ticks.json || rc=1; \
	exit $$rc

# Risk-rule efficacy on the real crash days and calm days (under a minute warm): docs/risk.md's table.
efficacy: $(VENV)/.dev
	$(BIN)/python benchmarks/efficacy.py

lint: $(VENV)/.dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var build *.egg-info
