# analytics-gateway: the front door. Every target creates or reuses .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SOURCES := gateway schema resolvers loaders domain workers bench
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BROWSER_STAMP := $(VENV)/.browser-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CHROMIUM := /usr/bin/chromium

.DEFAULT_GOAL := help
.PHONY: help install run test test-browser test-infra lint format schema graphiql-assets dashboard-assets stop services bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install the project with its dev and embedded extras

run: $(STAMP) ## start PostgreSQL and Redis (embedded unless DATABASE_URL/REDIS_URL are set), migrate, seed demo data, serve API and worker
	$(PY) -m gateway dev

test: $(STAMP) ## run the test suite against real PostgreSQL and Redis
	$(PY) -m pytest $(PYTEST_ARGS)

$(BROWSER_STAMP): $(STAMP)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m pip install --quiet -e '.[dev,embedded,browser]'
	@rm -f $(VENV)/.browser-* && touch $@

test-browser: $(BROWSER_STAMP) ## the example dashboard in Debian's chromium (Playwright; apt-get installs chromium when missing)
	@test -x $(CHROMIUM) || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q \
		&& DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q chromium; }
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m pytest tests/browser $(PYTEST_ARGS)

test-infra: $(STAMP) ## validate infra/ with nginx, promtool, compose, systemd, k8s schemas; backup/restore; smoke tests
	bash infra/scripts/test-infra.sh

lint: $(STAMP) ## ruff, mypy and the one-way layers contract (lint-imports; see docs/architecture.md)
	$(PY) -m ruff check $(SOURCES) tests
	$(PY) -m mypy $(SOURCES)
	$(VENV)/bin/lint-imports

format: $(STAMP) ## ruff format and fix imports
	$(PY) -m ruff check --fix --select I $(SOURCES) tests
	$(PY) -m ruff format $(SOURCES) tests

schema: $(STAMP) ## rewrite schema.graphql from the code
	$(PY) -c "from schema.schema import schema; open('schema.graphql', 'w').write(schema.as_str() + '\n')"

graphiql-assets: $(STAMP) ## re-fetch GraphiQL's vendored assets with npm pack and verify their integrity (gateway/http/static/graphiql/README.md)
	$(PY) gateway/http/static/graphiql/update.py

dashboard-assets: $(STAMP) ## re-fetch the dashboard's vendored uPlot and graphql-ws with npm pack and verify them (gateway/http/static/dashboard/vendor/README.md)
	$(PY) gateway/http/static/dashboard/vendor/update.py

bench: $(STAMP) ## benchmarks vs bare baselines into bench-results/ (BENCH_QUICK=1, BENCH_USERS=N, BENCH_LARGE=1; see docs/performance.md)
	$(PY) -m bench.run

services: $(STAMP) ## start the embedded PostgreSQL and Redis (reused when running)
	$(PY) -m gateway services start

stop: ## stop the embedded PostgreSQL and Redis
	@if [ -x $(PY) ]; then $(PY) -m gateway services stop; fi

clean: stop ## stop services and delete .data/ and .venv/
	rm -rf .data $(VENV)
