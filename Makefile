# Every target bootstraps its own environment: a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: setup test test-fast lint reports lab local clean notebooks bench test-load lambda

# pytest-xdist workers for `make test` (auto: one per core). Each worker has its own engine processes; a module's
# tests (and a notebook's cells, which share one kernel) stay on one worker (--dist loadscope).
TEST_WORKERS ?= auto
REPORT_JOBS ?= 2
LOAD_ENGINES ?= moto,dynalite

setup: $(STAMP)

# Re-installs only when pyproject.toml changes (a no-op in well under a second otherwise).
# dynalite (the second local engine) comes from tools/dynalite with the node that pip installed.
$(STAMP): pyproject.toml tools/dynalite/package.json tools/dynalite/package-lock.json
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev]'
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/npm ci --prefix tools/dynalite --no-audit --no-fund --loglevel=error
	touch $(STAMP)

# ruff, then the import layers (tests/layers.py: no circle, no arrow running up, siblings independent).
lint: setup
	$(BIN)/ruff check payment_examples tests notebooks
	$(BIN)/ruff format --check payment_examples tests notebooks
	$(BIN)/python -m tests.layers

# Unit and integration tests, strict nbval over the committed notebooks, and papermill runs of two of them with
# the CI parameters (tests/notebooks). One pytest run, one summary line. The notebooks come first: the
# longest groups start first, so no worker is left with one at the end.
test: setup lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope notebooks tests \
		--nbval --nbval-sanitize-with notebooks/sanitize.cfg

# While working: tests/ but the tests marked slow (integration tests on the engine processes, the runs of real
# notebooks, the benchmark runner, the unit tests that take seconds); no nbval. `make test` runs them all.
test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope tests -m "not slow"

# The main job: run every notebook on the embedded engine into reports/ (executed .ipynb, .html, every chart as a
# PNG, and reports/index.html, whose path it prints last), REPORT_JOBS at a time (each with its own kernel and
# engine; a line per notebook as it ends, with its duration, and the total at the end). A failed notebook fails
# the target, naming the cell.
# SCENARIOS=notebooks/params/scenarios.yaml also renders that file's notebook once per scenario, with a comparison
# chart (reports/scenarios/).
reports: setup
	$(BIN)/payment-examples reports --params notebooks/params/report.yaml --output reports --jobs $(REPORT_JOBS) \
		$(if $(SCENARIOS),--scenarios $(SCENARIOS))

# Performance against the brief's targets on moto and dynalite, next to raw boto3 (writes tests/benchmarks/).
bench: setup
	$(BIN)/python -m tests.benchmarks.run

# The load test on moto and dynalite: 10,000 payments with a card from 16 threads and a storm of 1,000 keys x 8
# copies; exact counts (exit 1 on a mismatch), writes tests/load/RESULTS.md and results.json.
test-load: setup
	$(BIN)/python -m tests.load.run --engines $(LOAD_ENGINES)

# The Lambda code artifact for template.yaml (CodeUri: build/lambda): the package and its runtime dependencies
# only, as binary wheels for the functions' platform (arm64, Python 3.11). Then: sam deploy --guided.
LAMBDA_PLATFORM ?= manylinux2014_aarch64
lambda: setup
	rm -rf build/lambda build/wheels
	$(BIN)/pip wheel $(PIP_FLAGS) --no-deps . -w build/wheels
	$(BIN)/pip install $(PIP_FLAGS) --target build/lambda --platform $(LAMBDA_PLATFORM) --implementation cp \
		--python-version 3.11 --only-binary=:all: build/wheels/payment_examples-*.whl

lab: setup
	$(BIN)/jupyter lab notebooks

# The embedded engine in the foreground (for JupyterLab users pointing notebooks at a shared engine).
local: setup
	$(BIN)/payment-examples local

clean:
	rm -rf $(VENV) reports build .pytest_cache .ruff_cache .hypothesis tools/dynalite/node_modules
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# For authors: format and re-execute the committed notebooks in place (not papermill: sources keep their own
# parameter cell). Commit the result; `make test` checks it with strict nbval.
notebooks: setup
	$(BIN)/ruff format notebooks
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.kernel_manager_class=payment_examples.reports.kernels.AsyncIpcKernelManager notebooks/*.ipynb
