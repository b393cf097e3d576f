# Two entry points for a newcomer: `make demo` and `make test`. Both create .venv if needed (idempotent).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs bench bench-smoke bench-peer clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,bench,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m statemap.demo

lint: $(STAMP)
	$(BIN)/ruff check statemap tests bench conftest.py
	$(BIN)/mypy --strict statemap

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

# The documentation site (mkdocs-material + mkdocstrings) into site/; strict: a broken reference fails.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --smoke

bench-peer: $(STAMP)
	$(BIN)/python -m bench.run --peer

clean:
	rm -rf $(VENV)
