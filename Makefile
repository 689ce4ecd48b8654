# spoolkit: `make demo` runs the main job, `make test` runs every check CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# dev brings every extra the suite tests
EXTRAS := dev,docs
DEMO_ARGS ?=

.PHONY: demo test lint typecheck docs bench services clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]' --config-settings editable_mode=compat
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

bench: $(STAMP) services
	$(PY) -m pip install -q -e '.[$(EXTRAS),bench]' --config-settings editable_mode=compat
	$(PY) benchmarks/queue_bench.py
	$(PY) benchmarks/spool_bench.py
	$(PY) benchmarks/handler_bench.py
	$(PY) benchmarks/redis_bench.py
	$(PY) benchmarks/plot.py --update-docs docs/benchmarks.md

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .demo .coverage
