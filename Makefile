# Two commands on a fresh machine: `make demo` and `make test`. Each does its own set-up,
# idempotently: a second run only re-installs when the lock or pyproject changes.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.smoacs-installed
SYSDEPS_STAMP := $(VENV)/.sysdeps
GPAW_STAMP := $(VENV)/.gpaw-installed
BROWSER_STAMP := $(VENV)/.browser
GPAW_VERSION := $(shell grep -E '^gpaw==' requirements/gpaw.txt | cut -d= -f3)

.PHONY: setup demo test lint clean sysdeps browser

setup: $(STAMP) $(GPAW_STAMP)

# GPAW links against libxc, OpenBLAS and FFTW from Debian.
sysdeps: $(SYSDEPS_STAMP)
$(SYSDEPS_STAMP):
	@mkdir -p $(VENV)
	@if ! dpkg -s libxc-dev libopenblas-dev libfftw3-dev >/dev/null 2>&1; then \
	  echo "installing libxc-dev libopenblas-dev libfftw3-dev (apt)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libxc-dev libopenblas-dev libfftw3-dev; \
	fi
	@touch $@

# The report test opens the HTML report in a real headless browser (Debian chromium).
browser: $(BROWSER_STAMP)
$(BROWSER_STAMP):
	@mkdir -p $(VENV)
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing chromium (apt, for the report test)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; \
	fi
	@touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools

# The lock is a full `pip freeze`, installed with --no-deps so mattersim's CUDA torchvision /
# torchaudio never come in (mattersim never imports them; they break torchmetrics on a CPU torch).
$(STAMP): $(VENV)/bin/python requirements/lock.txt requirements/constraints.txt pyproject.toml
	$(PIP) install -q --no-deps -c requirements/constraints.txt -r requirements/lock.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	-$(PIP) uninstall -y -q torchvision torchaudio 2>/dev/null
	@touch $@

$(GPAW_STAMP): $(SYSDEPS_STAMP) $(VENV)/bin/python requirements/gpaw.txt
	CC=g++ $(PIP) install -q --no-deps -c requirements/constraints.txt -r requirements/gpaw.txt
	@touch $@

# The main job on the embedded default: a small half-metal campaign through every stage
# (embedded LaunchPad + local gpu/cpu workers, CHGNet, GPAW), then its HTML report.
demo: setup
	rm -rf demo-out
	SMOACS_HOME=$(CURDIR)/demo-out/home $(VENV)/bin/smoacs-flows run campaigns/halfmetal_small.yaml --cpu-workers 2
	SMOACS_HOME=$(CURDIR)/demo-out/home $(VENV)/bin/smoacs-flows report halfmetal-small --out demo-out/report.html

lint: setup
	$(VENV)/bin/ruff check smoacs_flows tests benchmarks
	$(VENV)/bin/ruff format --check smoacs_flows tests benchmarks

test: setup browser
	$(VENV)/bin/ruff check smoacs_flows tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider --timeout=1800

clean:
	rm -rf $(VENV) demo-out
