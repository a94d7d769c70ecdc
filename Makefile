# dream-hpc: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
KIT ?= build/refkit
DEMO_CONFIG ?= config/demo.yaml
DEMO_RUN ?= runs/demo
PYTEST_ARGS ?=

.PHONY: help venv demo test test-fast lint lock kit bench bench-peer clean

help:
	@echo "make demo       build everything needed and run the demo survey (config/demo.yaml) -> $(DEMO_RUN)"
	@echo "make test       build everything needed and run the test suite"
	@echo "make test-fast  the tests that need no reference kit, Slurm or MPI (a venv only; ~2 min)"
	@echo "make lint       ruff"
	@echo "make lock       regenerate requirements.lock from requirements.in (needs PyPI)"
	@echo "make kit        build the offline reference kit (CRDS cache + MIRAGE_DATA) in $(KIT)"
	@echo "make bench      benchmarks (bench/)"
	@echo "make bench-peer dream-hpc vs xargs -P 2 strun on the demo and a FULL survey, then hot vs cold references"
	@echo "make container  build the Apptainer image (needs apptainer)"
	@echo "make container-rootfs  build the same image without Apptainer (root: debootstrap, chroot) as SquashFS"

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

# Two ranks, the machine's two cores (mpiexec of the venv's mpich wheel; shared memory only, see
# tests/conftest.py for why UCX_TLS): rank 0 hands out units and computes, and writes the summary.
DEMO_RANKS ?= 2
demo: $(KIT)/.built $(DEMO_CATALOG)
	UCX_TLS=self,sm $(BIN)/mpiexec -n $(DEMO_RANKS) $(BIN)/dream-hpc survey $(DEMO_CONFIG) --out $(DEMO_RUN)

# sysdeps (Slurm, munge, shellcheck, iproute2, chromium, debootstrap, squashfs-tools) come first: the
# Slurm tests start a real Slurm (one node, and several in network namespaces), the report test opens
# RUN/report.html in headless Chromium, the container test builds the image (containers/build-rootfs.sh).
test: sysdeps $(KIT)/.built
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# What needs no reference kit, Slurm, MPI or end-to-end chain: the layers, config, plan, cost, the
# journal, provenance on fabricated records, the engine's failure paths with a stand-in stage set.
test-fast: venv
	DREAM_HPC_NO_KIT=1 $(BIN)/python -m pytest -m "not kit and not slow and not slurm and not mpi and not container" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests bench

lock:
	test -x $(BIN)/pip-compile || $(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements.lock requirements.in

bench: $(KIT)/.built
	$(BIN)/python bench/bench_engine.py

# ~10 min (demo) + ~15 min (FULL) + ~5 min (hot references) on a quiet 2-core machine
bench-peer: $(KIT)/.built
	$(BIN)/python bench/bench_xargs_peer.py --config $(DEMO_CONFIG)
	$(BIN)/python bench/bench_xargs_peer.py --config bench/full_frame.yaml
	$(BIN)/python bench/bench_hot_references.py /tmp/dream-hpc-peer-full_frame/sim

include mk/cluster.mk

clean:
	rm -rf build runs .pytest_cache
