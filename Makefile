# Developer entry points. Each target sets up what it needs: a virtual environment in .venv with
# torch 2.13.0 (CPU), the build tools, and nonrobust_ext built from this tree (rebuilt when sources
# change).
#
#   make demo        train a small model on synthetic data and attack it (seconds)
#   make study       the transfer study on Fashion-MNIST (six models per seed, evaluated and analysed,
#                    report.md + results.json + plots); installs Debian's dataset-fashion-mnist when missing
#   make test        the test suite (all of it, as CI runs it)
#   make test-fast   the test suite without the tests marked slow (about a minute)
#   make lint        ruff over the package, tests, benchmarks and tools
#   make bench       the CPU benchmarks of the attack side, ops and attacks (benchmarks/results/), < 10 min
#   make bench-all   all CPU benchmarks: also PGD-AT training and the feature statistics (~ 20 min)
#   make cuda-check  compile-check the CUDA sources with nvcc (CPU-only torch: compile, not link)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := tools/constraints.txt
SOURCES := $(shell find csrc nonrobust_ext tools/build -type f -not -name '*.pyc') CMakeLists.txt pyproject.toml

.PHONY: install test test-fast lint demo study bench bench-all cuda-check clean

$(BIN)/.tools: $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.13.0 numpy "scikit-build-core>=0.11" "pybind11>=2.12" ninja
	touch $@

# --no-build-isolation builds against the venv's torch and keeps an incremental build in build/.
$(BIN)/.installed: $(BIN)/.tools $(SOURCES)
	$(PIP) install -q --no-build-isolation -c $(CONSTRAINTS) ".[imagenet,test,bench,lint]"
	touch $@

install: $(BIN)/.installed

# Run from the source tree: pytest's importlib mode keeps the tests on the installed package.
test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .

demo: install
	$(BIN)/nonrobust-ext demo --out out/demo

FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
study: install
	@test -e $(FMNIST) || [ -n "$$NONROBUST_EXT_DATA" ] || \
		(apt-get install -y dataset-fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist))
	$(BIN)/nonrobust-ext study --out out/study $(STUDY_ARGS)

bench: install
	$(BIN)/python benchmarks/bench_ops.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_attacks.py --out benchmarks/results

bench-all: bench
	$(BIN)/python benchmarks/bench_training.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_stats.py --out benchmarks/results
	$(BIN)/python benchmarks/bench_efficientnet.py --out benchmarks/results

cuda-check: $(BIN)/.tools
	$(BIN)/python tools/check_cuda_compile.py

clean:
	rm -rf build dist $(VENV)
