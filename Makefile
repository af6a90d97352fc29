# Two entry points: `make demo` (the main job) and `make test` (install everything, run every check).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INTEGRATIONS := $(sort $(dir $(wildcard integrations/*/pyproject.toml)))
STAMP := $(VENV)/.installed
# The demo's own, smaller install (the core, its command, the LangChain adapter and
# LangChain): `make demo` on a fresh clone installs only what the demo imports.
DEMO_STAMP := $(VENV)/.demo-installed

.PHONY: demo test lint pytest docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Everything `make test` needs: every extra of the core, the dev and docs tools, and each
# integration with its test extra. Re-installs when any pyproject changes.
$(STAMP): $(BIN)/python pyproject.toml $(wildcard integrations/*/pyproject.toml)
	$(BIN)/python -m pip install --quiet -e ".[all,dev,docs]" $(foreach d,$(INTEGRATIONS),-e "$(d:%/=%)[test]")
	touch $(STAMP)

$(DEMO_STAMP): $(BIN)/python pyproject.toml integrations/langchain/pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[cli]" -e integrations/langchain
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check --no-cache .

pytest: $(STAMP) /usr/bin/chromium
	$(BIN)/pytest -q tests
	@for d in $(INTEGRATIONS); do echo "== $$d"; $(BIN)/pytest -q $$d/tests || exit 1; done

# The viewer's browser tests (tests/ui) drive Debian's Chromium; installed when missing.
/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

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
