# Self-documenting: `make` or `make help` lists every target with a ## comment.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BUILD_VENV := .venv-build
PY := $(VENV)/bin/python
MODEL_DIR ?= build/models
PORT ?= 8080
# More flags for `make dev` (python -m emulators.dev --help), e.g. DEV_ARGS="--header-timeout 5".
DEV_ARGS ?=

.PHONY: help install models test test-image image lint fmt dev bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

comma := ,
# $(call step,WHAT,LOG,COMMAND): one line saying what is being done and how long it took.
# The command's own output (pip's) goes to build/logs/LOG.log and is shown only if it fails.
define step
@mkdir -p build/logs; started=$$(date +%s); printf '%s ... ' "$(1)"; \
if ( $(3) ) >build/logs/$(2).log 2>&1; then echo "done in $$(( $$(date +%s) - started )) s"; \
else echo "failed after $$(( $$(date +%s) - started )) s; the last lines of build/logs/$(2).log:"; \
  tail -n 30 build/logs/$(2).log; exit 1; fi
endef

$(VENV)/.installed: pyproject.toml
	$(call step,$(VENV): the project and its tools (first time about 1 min),venv,\
	  $(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install --disable-pip-version-check -e '.[models$(comma)dev]')
	@touch $@

# torch first and pinned: the local CPU wheel, never the registry's CUDA build
$(BUILD_VENV)/.installed: models/build_env.txt
	$(call step,$(BUILD_VENV): torch (CPU) and the exporters for the image models (first time about 1 min),venv-build,\
	  $(PYTHON) -m venv $(BUILD_VENV) \
	  && $(BUILD_VENV)/bin/pip install --disable-pip-version-check torch==2.13.0 \
	  && $(BUILD_VENV)/bin/pip install --disable-pip-version-check -r models/build_env.txt)
	@touch $@

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

dev: models ## run every Knative Service locally behind the gateway on localhost:$(PORT) (DEV_ARGS: more flags)
	$(PY) -m emulators.dev --port $(PORT) $(DEV_ARGS)

image: models ## build the one image (knative/Dockerfile) with podman or docker, whichever answers
	@$(PY) -m emulators.container build

test-image: models ## the image tier: install podman where no engine answers, make the base image where none can be pulled, build, run every Service's container
	@$(PY) -m emulators.container prepare
	$(PY) -m pytest -m image tests/image

bench: models ## benchmark: raw inference floor vs the served function (BENCH_SECONDS=5)
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }; }
	$(PY) -m bench.run

clean: ## remove virtual environments and built models
	rm -rf $(VENV) $(BUILD_VENV) build

include cluster.mk
