# Two entry points: `make demo` (the main job) and `make test` (install everything, run every check).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INTEGRATIONS := $(sort $(dir $(wildcard integrations/*/pyproject.toml)))
STAMP := $(VENV)/.installed

.PHONY: demo test lint pytest docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install when any pyproject changes.
$(STAMP): $(BIN)/python pyproject.toml $(wildcard integrations/*/pyproject.toml)
	$(BIN)/python -m pip install --quiet -e ".[cli,dev,docs]" $(foreach d,$(INTEGRATIONS),-e "$(d:%/=%)[test]")
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check --no-cache .

pytest: $(STAMP)
	$(BIN)/pytest -q tests
	@for d in $(INTEGRATIONS); do echo "== $$d"; $(BIN)/pytest -q $$d/tests || exit 1; done

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

test: lint pytest docs

# Benchmarks: their extras (bench/requirements.txt) go into .venv only here, never into `make test`.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/bench_core.py
	$(BIN)/python bench/bench_langchain.py $(BENCH_ARGS)
	$(BIN)/python bench/bench_llamaindex.py $(BENCH_ARGS)
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) site agentaudit.db agentaudit.db-*
