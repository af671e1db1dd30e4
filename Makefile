# The two commands of the README quick start are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow test-ci-slow test-all lint typecheck bench audit proto

$(VENV)/.setup-stamp: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(VENV)/.setup-stamp

demo: setup
	$(BIN)/pura demo

# `make test`: lint, types and the fast suite. The slow suite (Ray clusters, kill -9 of servers
# and workers, full-size LFW runs, the benchmark smoke run) is `make test-slow`; `make test-all`
# runs both, as CI does (.ci/run).
test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy pura clients/pura_client
	$(BIN)/pytest -q -m "not slow"

test-slow: setup
	$(BIN)/pytest -q -m slow

test-all: test test-slow

# The slow tests CI runs after the fast suite (real processes killed with -9, the soak, the LFW
# sweep through the product pipeline): ~11 min on 2 busy cores. The whole slow suite is longer than
# CI's 90 minutes on a busy 2-core machine; run `make test-slow` before a release.
CI_SLOW := tests/service/test_crash.py tests/service/test_crash_b.py \
	tests/service/test_hostile.py::test_soak_enroll_delete_identify_with_hostile_items \
	tests/service/test_lfw_sweep.py tests/service/test_relayout_nodes.py
test-ci-slow: setup
	$(BIN)/pytest -q -m slow $(CI_SLOW)

bench: setup
	$(BIN)/python -m bench run --sizes 1000,10000 --out bench/results/

audit: setup
	$(BIN)/pura-audit all --out audit-report

proto: setup
	$(BIN)/python scripts/gen_protos.py
