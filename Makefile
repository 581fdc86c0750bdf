# The project's interface: `make run` starts the system, `make test` proves it.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Set to a MySQL/MariaDB URL (mysql+pymysql://root@127.0.0.1:3306/test) to test on it.
export TEST_DATABASE_URL
# The same for `make bench`.
export BENCH_DATABASE_URL

.PHONY: install install-dev test-tools run test unit soak bench lint sql screenshots check up up-observability down clean

$(VENV)/.run-deps: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-deps: $(VENV)/.run-deps requirements-dev.txt
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.run-deps
install-dev: $(VENV)/.dev-deps

# What the tests run besides Python, from Debian's packages when missing: Chromium for the
# browser tests (Playwright never downloads a browser here), docker-compose to resolve
# docker-compose.yml as compose does, promtool (package prometheus) to check ops/prometheus.
# The tests also need RabbitMQ on 127.0.0.1:5672 (TEST_BROKER_URL to point elsewhere).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-tools:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then echo "installing$$missing for the tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

run: install  ## the orchestrator and services A, B, C on SQLite (var/*.db), restarted if one dies; Ctrl-C stops all four
	$(PYTHON) -m scripts.run

# The tests mostly wait (on processes, timeouts, recovery), so several run at once; a test
# file stays on one worker, with the systems its tests share.
TEST_WORKERS ?= 4
test: install-dev test-tools  ## unit and integration tests (SQLite; TEST_DATABASE_URL=... for MySQL/MariaDB)
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

unit: install-dev  ## the fast tests alone: pure logic and in-process, no processes started (seconds)
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

# The randomised soak, longer than the one `make test` runs: override any of these.
SOAK_SAGAS ?= 3000
SOAK_CLIENTS ?= 16
SOAK_KILL_EVERY ?= 3
soak: install-dev  ## thousands of sagas, random faults, the orchestrator killed every few seconds
	SOAK_SAGAS=$(SOAK_SAGAS) SOAK_CLIENTS=$(SOAK_CLIENTS) SOAK_KILL_EVERY=$(SOAK_KILL_EVERY) \
	  $(PYTHON) -m pytest tests/faults/test_soak.py -s $(PYTEST_ARGS)

bench: install-dev  ## both saga models against the bare chain, on SQLite and on MariaDB (BENCH_DATABASE_URL), in one run
	$(PYTHON) -m scripts.bench $(BENCH_ARGS)

lint: install-dev
	ruff check .
	mypy
	$(PYTHON) -m scripts.schema --check

check: install  ## consistency check of the running system (same settings as the orchestrator)
	$(PYTHON) -m orchestrator.check

sql: install-dev  ## regenerate sql/ from the SQLAlchemy tables
	$(PYTHON) -m scripts.schema

screenshots: install-dev test-tools  ## redraw docs/screenshots/*.png from a live run
	$(PYTHON) -m scripts.screenshots

up:  ## the whole system on MySQL 8 in containers (writes .env with fresh secrets if there is none)
	python3 scripts/write_env.py
	docker compose up --build

up-observability:  ## the same, with Prometheus, Grafana and Jaeger (traces exported to it)
	python3 scripts/write_env.py
	OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318 docker compose --profile observability up --build

down:
	docker compose --profile observability down --volumes

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
