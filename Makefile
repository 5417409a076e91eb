# make demo: set up and run the main job on the built-in demo data (a bundle trained on demo data).
# make test: set up and run the test suite.
# Uses the active virtual environment, or creates .venv. Installs the CPU build of torch 2.13.0 only
# when no torch is installed, so a user's CUDA build is left alone.

SHELL := /bin/bash
PYTHON ?= python3
TORCH_CPU := torch==2.13.0

ifdef VIRTUAL_ENV
ENV_DIR := $(VIRTUAL_ENV)
else
ENV_DIR := .venv
endif
PY := $(ENV_DIR)/bin/python
STAMP := $(ENV_DIR)/.s4mi_monai_installed

.PHONY: install demo test clean

$(PY):
	$(PYTHON) -m venv $(ENV_DIR)

$(STAMP): $(PY) requirements.txt pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_CPU)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

DEMO_BUNDLE := cass_isic

demo: $(STAMP)
	$(PY) -m monai.bundle run training --config_file bundles/$(DEMO_BUNDLE)/configs/train.json

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf demo_data .pytest_cache
