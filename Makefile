# spoolkit: `make demo` runs the main job, `make test` runs every check CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# .venv is installed from uv.lock: exactly the versions the suite last passed with
# (`make upgrade-deps` moves them). --locked never resolves anew: it installs the lock as it is,
# and stops if pyproject.toml asks for something the lock does not hold (run `make lock`).
# uv itself is pinned, and bootstrapped with pip into .tools: a fresh machine has pip, not uv.
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_STAMP := $(TOOLS)/.uv-$(UV_VERSION)
# dev brings every extra the suite tests; docs builds the site; bench adds the peers `make bench`
# measures spoolkit against.
EXTRAS := --extra dev --extra docs
DEMO_ARGS ?=

# uv runs on this machine's Python (it never downloads one), trusts the system's certificates
# (as pip does here: a proxy's CA is among them) and installs into .venv.
export UV_PYTHON ?= $(PYTHON)
export UV_PYTHON_DOWNLOADS ?= never
export UV_SYSTEM_CERTS ?= 1
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test lint typecheck docs bench services upgrade-deps lock clean

$(UV_STAMP):
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q uv==$(UV_VERSION)
	touch $@

$(STAMP): pyproject.toml uv.lock $(UV_STAMP)
	$(UV) sync --locked $(EXTRAS)
	touch $(STAMP)

services:
	bash scripts/ensure-services.sh

demo: $(STAMP)
	$(VENV)/bin/spoolkit demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check spoolkit tests benchmarks examples
	$(VENV)/bin/ruff format --check spoolkit tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site

test: $(STAMP) services lint typecheck docs
	$(VENV)/bin/pytest -q -p no:cacheprovider --cov --cov-report=term

# After editing dependencies in pyproject.toml: lock them, keeping every locked version that
# still fits.
lock: $(UV_STAMP)
	$(UV) lock

# Take the newest release of every dependency that pyproject.toml allows, then run every check:
# commit uv.lock only if `make test` passed.
upgrade-deps: $(UV_STAMP)
	$(UV) lock --upgrade
	$(MAKE) test

bench: $(STAMP) services
	$(UV) sync --locked --inexact $(EXTRAS) --extra bench
	$(PY) benchmarks/queue_bench.py
	$(PY) benchmarks/spool_bench.py
	$(PY) benchmarks/handler_bench.py
	$(PY) benchmarks/procs_bench.py
	$(PY) benchmarks/redis_bench.py
	$(PY) benchmarks/plot.py --update-docs docs/benchmarks.md

clean:
	rm -rf $(VENV) $(TOOLS) site .pytest_cache .mypy_cache .ruff_cache .demo .coverage
