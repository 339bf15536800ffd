# The same targets run locally and in CI (.ci/run calls `make test`).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-unit bench check lint typecheck clean

# Create/refresh the virtualenv whenever pyproject.toml changes: a fresh machine needs nothing else.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,infer,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m workers.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m unit

bench: $(STAMP)
	$(BIN)/python -m bench.dispatch
	$(BIN)/python -m bench.preempt
	$(BIN)/python -m bench.infer
	$(BIN)/python -m bench.policy
	$(BIN)/python -m bench.critical_start
	$(BIN)/python -m bench.simulate

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy yoloq tasks workers routing infra celeryconfig.py

check: lint typecheck
	$(BIN)/python -m pytest -q -m unit --cov=routing --cov-branch --cov-fail-under=100 tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
