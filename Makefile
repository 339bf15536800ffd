# The same targets run locally and in CI (.ci/run calls `make test`).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-unit bench drill check lint typecheck clean gpu-wheels gpu-validate gpu-dry-run

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
	bash scripts/ensure-browser.sh
	bash scripts/ensure-compose.sh $(PY)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m unit

bench: $(STAMP)
	$(BIN)/python -m bench.dispatch
	$(BIN)/python -m bench.preempt
	$(BIN)/python -m bench.infer
	$(BIN)/python -m bench.serve
	$(BIN)/python -m bench.policy
	$(BIN)/python -m bench.critical_start
	$(BIN)/python -m bench.simulate
	$(BIN)/python -m bench.autoscale
	$(BIN)/python -m bench.queue_view
	$(BIN)/python -m bench.cli
	$(BIN)/python -m bench.eta
	$(BIN)/python -m bench.quotas
	$(BIN)/python -m bench.notify
	$(BIN)/python -m bench.gangs
	$(BIN)/python -m bench.defrag

# Issue #17 (docs/reliability.md): every drill at full size (tens of minutes); DRILLS="crash s3" runs some.
drill: $(STAMP)
	$(BIN)/python -m bench.drills $(DRILLS)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy yoloq tasks workers routing infra celeryconfig.py

check: lint typecheck
	$(BIN)/python -m pytest -q -m unit --cov=routing --cov-branch --cov-fail-under=100 tests/unit

# Issue #8 (docs/gpu-validation.md): the wheels the GPU machine lacks, one device call per chunk, kept out of git.
gpu-wheels: $(STAMP)
	bash scripts/gpu-wheels.sh $(BIN)/python

# On the device machine (its python3 holds torch + CUDA; no venv there): stage, install, validate; JSON under $$OUT.
gpu-validate:
	bash scripts/gpu-validate.sh $(GPU_ARGS)

# The same driver on a machine without a GPU: tiny sizes, simulated inventory; proves the script, not a GPU figure.
gpu-dry-run: $(STAMP)
	bash scripts/gpu-validate.sh --cpu-dry-run

clean:
	rm -rf $(VENV) .venv-compose .pytest_cache .mypy_cache .ruff_cache *.egg-info
