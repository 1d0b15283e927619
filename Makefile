# The two commands a user needs: `make demo` and `make test`. Each creates .venv and installs
# what it needs first (idempotent), so both work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch: this pin takes the CPU build that lies on this machine's disk. Elsewhere, choose the
# build you want, e.g. `make test TORCH_SPEC=torch` (CUDA wheels from PyPI) or a --index-url.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup postgres demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml devtools/pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	# The official tables and the six real pairs; --no-deps: its own dependencies are stale.
	$(BIN)/python -m pip install -q --no-deps "bigearthnet-common==2.8.0"
	$(BIN)/python -m pip install -q -e ".[dev,s3,torch,plot,server]"
	# Development-only parts (test S3 server, fault proxy, synthetic index, demo): not shipped.
	$(BIN)/python -m pip install -q --no-deps -e ./devtools
	touch $@

demo: setup
	$(BIN)/python -m bigearth_devtools.demo

# PostgreSQL + PostGIS for the STAC-API tests (Debian packages; a no-op when present).
postgres:
	./scripts/install-postgres.sh

test: setup postgres
	$(BIN)/python -m pytest -n 2 --dist loadgroup --timeout 600 $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check catalog_builder bigearth_stac devtools tests benchmarks
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m benchmarks.bench_layouts

clean:
	rm -rf $(VENV) demo-output .pytest_cache
