# `make demo` and `make test` work on a fresh machine: they create .venv and install kiln first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kiln-installed
JOBS   ?= 2

MODELS ?= .cache/models
ARM_RUNTIME ?= .cache/arm-runtime

.PHONY: demo test fuzz test-models test-torch torch-tools test-arm arm-tools test-report report-tools lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# the examples on real models (tests/test_examples.py) need three of MANIFEST.json's models (71 MB)
test: $(STAMP)
	$(BIN)/python tests/models/fetch.py $(MODELS) paraphrase_minilm_l3 ppocr_mobile_v2_cls silero_vad_16k_sequence
	$(BIN)/python -m ruff check kiln tests benchmarks examples
	KILN_MODELS=$(MODELS) $(BIN)/python -m pytest -q -n $(JOBS) --durations=10 -m "not models and not arm and not report and not torch"

# differential fuzzing: N random graphs compiled for x86 against the reference interpreter
# (make test runs 200); the same N every time, KILN_FUZZ_SEED=<int> draws another sequence
N ?= 1000
fuzz: $(STAMP)
	KILN_FUZZ_EXAMPLES=$(N) $(BIN)/python -m pytest -q -n $(JOBS) \
		--hypothesis-show-statistics tests/fuzz/test_fuzz.py

# the real pretrained models of tests/models/MANIFEST.json, fetched into $(MODELS) once
test-models: $(STAMP)
	$(BIN)/python tests/models/fetch.py $(MODELS)
	KILN_MODELS=$(MODELS) $(BIN)/python -m pytest -q -n $(JOBS) -m models tests/models

# PyTorch's CPU wheel (~200 MB), installed where missing: from download.pytorch.org or
# pip's own find-links; an index that cannot be reached is skipped at once, not retried
torch-tools: $(STAMP)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch \
		--index-url https://download.pytorch.org/whl/cpu --retries 0 --timeout 10

# the torch frontend, and the tests that compare kiln with torch
test-torch: torch-tools
	$(BIN)/python -m pytest -q -n $(JOBS) -m torch tests

# Debian's qemu-user, g++-aarch64-linux-gnu and cmake, installed where missing
arm-tools:
	command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-g++ >/dev/null && \
		command -v cmake >/dev/null || \
		(apt-get update -q && apt-get install -y -q qemu-user g++-aarch64-linux-gnu cmake)

# aarch64 libraries under qemu-aarch64, run by the cross-built C++ runner: fetches the aarch64
# TVM runtime and the two real models it runs (MobileNetV3, the silero LSTM) once
test-arm: $(STAMP) arm-tools
	$(BIN)/python tests/arm/fetch_runtime.py $(ARM_RUNTIME)
	$(BIN)/python tests/models/fetch.py $(MODELS) ppocr_mobile_v2_cls silero_vad_16k_sequence
	KILN_ARM_RUNTIME=$(ARM_RUNTIME) KILN_MODELS=$(MODELS) \
		$(BIN)/python -m pytest -q -n $(JOBS) -m arm tests/arm

# Debian's Graphviz (kiln report draws the graph with dot), Chromium and ChromeDriver
report-tools:
	command -v dot >/dev/null && command -v chromium >/dev/null && \
		command -v chromedriver >/dev/null || \
		(apt-get update -q && apt-get install -y -q graphviz chromium chromium-driver)

# kiln report on a small graph, MiniLM-L3 and MobileNetV3, each page opened in headless Chromium
test-report: $(STAMP) report-tools
	$(BIN)/python tests/models/fetch.py $(MODELS) paraphrase_minilm_l3 ppocr_mobile_v2_cls
	KILN_MODELS=$(MODELS) $(BIN)/python -m pytest -q -n $(JOBS) -m report tests/report

# one table: kiln vs numpy/OpenBLAS and ONNX Runtime (GEMM, int8, norms, real models)
bench: $(STAMP)
	$(BIN)/python -m benchmarks.cpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
