# dream-hpc: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
KIT ?= build/refkit
DEMO_CONFIG ?= config/demo.yaml
DEMO_RUN ?= runs/demo
PYTEST_ARGS ?=

.PHONY: help venv demo test lint lock kit bench clean

help:
	@echo "make demo       build everything needed and run the demo survey (config/demo.yaml) -> $(DEMO_RUN)"
	@echo "make test       build everything needed and run the test suite"
	@echo "make lint       ruff"
	@echo "make lock       regenerate requirements.lock from requirements.in (needs PyPI)"
	@echo "make kit        build the offline reference kit (CRDS cache + MIRAGE_DATA) in $(KIT)"
	@echo "make bench      benchmarks (bench/)"
	@echo "make container  build the Apptainer image (needs apptainer)"

# The venv is installed only from the hashed lock file: the same pins CI and the image use.
$(BIN)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (install Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/dream-hpc versions --check
	touch $@

venv: $(BIN)/.installed

$(KIT)/.built: $(BIN)/.installed $(shell find src/dream_hpc/refkit -name '*.py' 2>/dev/null)
	$(BIN)/dream-hpc refkit build --out $(KIT)
	touch $@

kit: $(KIT)/.built

# The demo's mock catalog in DREaM's layout: main table + photometry table (config/demo.yaml names both).
DEMO_CATALOG := build/demo/dream_main.fits

$(DEMO_CATALOG): $(BIN)/.installed $(DEMO_CONFIG)
	$(BIN)/dream-hpc catalog synth $(DEMO_CONFIG) --out $@ --overwrite

demo: $(KIT)/.built $(DEMO_CATALOG)
	$(BIN)/dream-hpc survey $(DEMO_CONFIG) --out $(DEMO_RUN)

# sysdeps (Slurm, munge, shellcheck) come first: the Slurm tests start a real one-node Slurm.
test: sysdeps $(KIT)/.built
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests bench

lock:
	test -x $(BIN)/pip-compile || $(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		-o requirements.lock requirements.in

bench: $(KIT)/.built
	$(BIN)/python bench/bench_engine.py

include mk/cluster.mk

clean:
	rm -rf build runs .pytest_cache
