# resnet-lab: `make serve` and `make test` set everything up on a fresh machine with the Python pyproject.toml asks.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON_VERSION := $(shell sed -n 's/^requires-python = ">=\([0-9.]*\),.*/\1/p' pyproject.toml)
PYTHON ?= $(shell command -v python$(PYTHON_VERSION) || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000
# pip repeats a harmless warning for each package mirror that lacks a project; keep real errors.
PIP_QUIET := { grep -v "is ignored: it is neither a file nor a directory" || true; }
CHECK_PYTHON := $(PYTHON) -c 'import sys; v = "$(PYTHON_VERSION)"; assert "%d.%d" % sys.version_info[:2] == v, "resnet-lab needs Python " + v'
# Installed stamps: the server alone (what it imports: no torch, no CUDA stack), and everything (training, export,
# detection, tests, batch jobs), which includes the server.
SERVER := $(BIN)/.serve-installed
EVERYTHING := $(BIN)/.installed

.PHONY: venv test lint serve image summary data clean

$(SERVER): pyproject.toml
	$(CHECK_PYTHON)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e . 2>&1 | $(PIP_QUIET)
	$(BIN)/python -c 'import bentoml, onnxruntime, openvino'
	touch $@

$(EVERYTHING): pyproject.toml
	$(CHECK_PYTHON)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[train,dev,detection-fast,batch]' 2>&1 | $(PIP_QUIET)
	$(BIN)/python -c 'import torch, torchvision, onnxruntime, openvino, bentoml'
	touch $@ $(SERVER)

venv: $(EVERYTHING)

lint: venv
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# CIFAR-10 and COCO val2017 photos from their public hosts into data/ (then: export RESNET_LAB_DATA=$PWD/data).
data: venv
	$(BIN)/python -m training.download_data --output-dir data

summary: venv
	$(BIN)/python -m models.summary

# Model: RESNET_LAB_MODEL (a .onnx file or a model-store tag), else inference/default_model/model.onnx.
serve: $(SERVER)
	$(BIN)/bentoml serve --host $(HOST) --port $(PORT)

# The CPU container image resnet-lab:cpu from the bento: docker where it runs, else podman (deploy/image/build.sh).
image: $(SERVER)
	deploy/image/build.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
