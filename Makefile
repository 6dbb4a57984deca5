# edgeslim: `make test` and `make demo` each do all the set-up they need on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= train,dev
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEMO_OUT ?= runs/demo

.PHONY: setup venv data test test-all lint format demo clean

setup: venv data ## create .venv, install edgeslim[train,dev], install Fashion-MNIST (Debian)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

data: ## Fashion-MNIST from Debian's dataset-fashion-mnist where apt is available
	@if [ -f $(FMNIST) ]; then echo "Fashion-MNIST: present in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "warning: could not install dataset-fashion-mnist; tests that need it will fail"; \
	else echo "warning: no apt-get; pass --data-dir to a Fashion-MNIST copy"; fi

test: setup ## the test suite CI runs: all but the tests marked slow
	$(PY) -m pytest -n 2 -q -m "not slow"

test-all: setup ## every test, the slow ones too (end-to-end runs that time networks)
	$(PY) -m pytest -n 2 -q

lint: venv
	$(PY) -m ruff check edgeslim tests benchmarks deploy tools
	$(PY) -m ruff format --check edgeslim tests benchmarks deploy tools

format: venv
	$(PY) -m ruff format edgeslim tests benchmarks deploy tools
	$(PY) -m ruff check --fix edgeslim tests benchmarks deploy tools

demo: setup ## slim a small VGG on Fashion-MNIST to half its MACs, export both to ONNX, bench slim vs dense
	$(VENV)/bin/edgeslim slim vgg-small --data fashion-mnist --subset 6000 --test-subset 2000 \
	  --epochs 3 --batch-size 64 --target-macs 0.5 --out $(DEMO_OUT) --force
	$(VENV)/bin/edgeslim export $(DEMO_OUT)/trained.pt --onnx $(DEMO_OUT)/dense.onnx --dynamic-batch --force
	$(VENV)/bin/edgeslim export $(DEMO_OUT)/model.pt --onnx $(DEMO_OUT)/slim.onnx --dynamic-batch --force
	$(VENV)/bin/edgeslim bench $(DEMO_OUT)/slim.onnx --baseline $(DEMO_OUT)/dense.onnx \
	  --batch 1,32 --threads 1 --trials 3 --out $(DEMO_OUT)/bench --force

clean:
	rm -rf runs .pytest_cache .ruff_cache build dist *.egg-info
