# Every target sets up what it needs: a .venv built with the machine's python3 and
# the pinned requirements (requirements.txt + constraints.txt).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.8
export AIRFLOW_HOME ?= $(CURDIR)/.local/airflow
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
# The browser tests drive Debian's Chromium (never a downloaded browser build).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: help install run test lint sandbox up up-celery bench bench-latency lock proto dist screenshots clean

help:
	@echo "make run      run the import DAG once end to end (sandbox + SQLite) and print what it loaded"
	@echo "make test     run the whole test suite"
	@echo "make sandbox  start the local Salesforce sandbox on https://localhost:8443"
	@echo "make up       airflow standalone + sandbox, UI on http://localhost:8080"
	@echo "make up-celery  CeleryExecutor on this host (Redis, PostgreSQL, two workers) + sandbox, UI on http://127.0.0.1:8080"
	@echo "make bench    benchmark the pipeline at 10k and 100k orders against PostgreSQL (BENCH_ARGS=...)"
	@echo "make bench-latency  seconds from an order's activation to its write-back COMPLETE, events on vs the schedule alone (BENCH_ARGS=...)"
	@echo "make lint     ruff"
	@echo "make lock     re-resolve constraints.txt from requirements.txt"
	@echo "make proto    regenerate the committed Pub/Sub API stubs from include/salesforce_pubsub_api/pubsub_api.proto"
	@echo "make dist     build the wheel and the sdist into dist/ (python -m build)"
	@echo "make screenshots  refresh docs/screenshots/ from the browser test of the External Orders view"

# The editable install puts include/ on sys.path; setuptools leaves its build metadata
# (include/*.egg-info) there, which Python would see as a second copy of the package, and
# Airflow would load the plugin entry point twice: it is removed.
# --compile-bytecode: imports then read .pyc files written once here, even where
# PYTHONDONTWRITEBYTECODE is set (importing Airflow from source costs seconds per process).
$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt -c constraints.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	rm -rf include/*.egg-info
	touch $(STAMP)

install: $(STAMP)

# Skipped when the file exists: installs Chromium once per machine.
$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

# One pytest worker per core; a test file stays on one worker (its module-scoped sandbox and
# Airflow deployments are started once), and the slowest tests are listed at the end.
PYTEST_ARGS ?= -n auto --dist loadfile --durations=15

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

screenshots: $(STAMP) $(CHROMIUM)
	UI_SCREENSHOT_DIR=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest -q tests/ui/test_external_orders_page.py tests/ui/test_links_inside_airflow.py

lint: $(STAMP)
	$(BIN)/ruff check .

run: $(STAMP)
	$(BIN)/python -m salesforce_orders_local.demo $(RUN_ARGS)

sandbox: $(STAMP)
	$(BIN)/python -m salesforce_sandbox serve --port 8443 --orders 500 --seed 7

up: $(STAMP)
	$(BIN)/python -m salesforce_orders_local.standalone $(UP_ARGS)

up-celery: $(STAMP)
	$(BIN)/python -m salesforce_orders_local.celery_deployment up $(UP_ARGS)

bench: $(STAMP)
	$(BIN)/python -m salesforce_orders_local.bench $(BENCH_ARGS)

bench-latency: $(STAMP)
	$(BIN)/python -m salesforce_orders_local.bench_latency $(BENCH_ARGS)

lock: $(STAMP)
	$(BIN)/uv pip compile requirements.txt --python $(BIN)/python --no-header --no-annotate -o constraints.txt

# The stubs are committed: nothing compiles at run time. -I include makes the generated modules
# import each other as salesforce_pubsub_api.pubsub_api_pb2.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I include --python_out=include --pyi_out=include --grpc_python_out=include include/salesforce_pubsub_api/pubsub_api.proto

dist: $(STAMP)
	$(BIN)/python -m build --installer uv --outdir dist .
	rm -rf include/*.egg-info

clean:
	rm -rf $(VENV) .local .pytest_cache dist
