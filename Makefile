# The project's interface: `make run` starts the system, `make test` proves it.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Set to a MySQL/MariaDB URL (mysql+pymysql://root@127.0.0.1:3306/test) to test on it.
export TEST_DATABASE_URL
# The same for `make bench`.
export BENCH_DATABASE_URL

.PHONY: install install-dev chromium run test unit soak bench lint sql screenshots check up down clean

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

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { echo "installing chromium for the browser tests"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq chromium; }

run: install  ## the orchestrator and services A, B, C on SQLite (var/*.db); Ctrl-C stops all four
	mkdir -p var
	honcho start

test: install-dev chromium  ## unit and integration tests (SQLite; TEST_DATABASE_URL=... for MySQL/MariaDB)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

unit: install-dev  ## the fast tests alone: pure logic and in-process, no processes started (seconds)
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

# The randomised soak, longer than the one `make test` runs: override any of these.
SOAK_SAGAS ?= 3000
SOAK_CLIENTS ?= 16
SOAK_KILL_EVERY ?= 3
soak: install-dev  ## thousands of sagas, random faults, the orchestrator killed every few seconds
	SOAK_SAGAS=$(SOAK_SAGAS) SOAK_CLIENTS=$(SOAK_CLIENTS) SOAK_KILL_EVERY=$(SOAK_KILL_EVERY) \
	  $(PYTHON) -m pytest tests/faults/test_soak.py -s $(PYTEST_ARGS)

bench: install-dev  ## throughput and latency, orchestrated against the bare chain (see README)
	$(PYTHON) -m scripts.bench $(BENCH_ARGS)

lint: install-dev
	ruff check .
	mypy
	$(PYTHON) -m scripts.schema --check

check: install  ## consistency check of the running system (same settings as the orchestrator)
	$(PYTHON) -m orchestrator.check

sql: install-dev  ## regenerate sql/ from the SQLAlchemy tables
	$(PYTHON) -m scripts.schema

screenshots: install-dev chromium  ## redraw docs/screenshots/*.png from a live run
	$(PYTHON) -m scripts.screenshots

up:  ## the whole system on MySQL 8 in containers
	docker compose up --build

down:
	docker compose down --volumes

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
