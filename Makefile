# The two commands of the README quick start are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck bench audit proto

$(VENV)/.setup-stamp: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(VENV)/.setup-stamp

demo: setup
	$(BIN)/pura demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy pura clients/pura_client
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python -m bench run --sizes 1000,10000 --out bench/results/

audit: setup
	$(BIN)/pura-audit all --out audit-report

proto: setup
	$(BIN)/python scripts/gen_protos.py
