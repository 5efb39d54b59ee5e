# `make demo` and `make test` work on a fresh machine: they create .venv and install kiln first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kiln-installed
JOBS   ?= 2

MODELS ?= .cache/models

.PHONY: demo test test-models lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m ruff check kiln tests benchmarks examples
	$(BIN)/python -m pytest -q -n $(JOBS) --durations=10 -m "not models"

# the real pretrained models of tests/models/MANIFEST.json, fetched into $(MODELS) once
test-models: $(STAMP)
	$(BIN)/python tests/models/fetch.py $(MODELS)
	KILN_MODELS=$(MODELS) $(BIN)/python -m pytest -q -n $(JOBS) -m models tests/models

# one table: kiln vs numpy/OpenBLAS and ONNX Runtime (GEMM, int8, norms, real models)
bench: $(STAMP)
	$(BIN)/python -m benchmarks.cpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
