# Self-documenting: `make` or `make help` lists every target with a ## comment.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BUILD_VENV := .venv-build
PY := $(VENV)/bin/python
MODEL_DIR ?= build/models
PORT ?= 8080

.PHONY: help install models test lint fmt dev bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[models,dev]'
	touch $@

$(BUILD_VENV)/.installed: models/build_env.txt
	$(PYTHON) -m venv $(BUILD_VENV)
	@# torch first and pinned: the local CPU wheel, never the registry's CUDA build
	$(BUILD_VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BUILD_VENV)/bin/pip install --quiet --disable-pip-version-check -r models/build_env.txt
	touch $@

install: $(VENV)/.installed ## create the virtual environment with the project and its tools

models: $(VENV)/.installed $(BUILD_VENV)/.installed ## build every model in models/ into build/models and verify its sha256
	@echo "tabular models (scikit-learn + skl2onnx):"
	@$(PY) models/build_tabular.py --out $(MODEL_DIR)
	@echo "image models (torch -> ONNX / LiteRT, in $(BUILD_VENV)):"
	@$(BUILD_VENV)/bin/python models/build_images.py --out $(MODEL_DIR)

test: models ## set everything up and run unit, contract and loopback end-to-end tests
	$(PY) -m pytest

lint: $(VENV)/.installed ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy functions emulators

fmt: $(VENV)/.installed ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

dev: models ## run every Knative Service locally behind the gateway on localhost:$(PORT)
	$(PY) -m emulators.dev --port $(PORT)

bench: models ## benchmark: raw inference floor vs the served function (BENCH_SECONDS=5)
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }; }
	$(PY) bench/run.py

clean: ## remove virtual environments and built models
	rm -rf $(VENV) $(BUILD_VENV) build

include cluster.mk
