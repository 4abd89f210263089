# zpydb developer commands. `make run` and `make test` work on a machine with only Python 3.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# Two stamps: `make run` installs only what running needs (zpydb and its dependencies);
# `make test` adds the test and bench extras (pytest, RelStorage, matplotlib, redis...).
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test install install-test serve certs bench bench-full postgres redis chromium clean torture web

# Create the virtualenv and install zpydb (editable) when the packaging files change;
# var/zeo is where zeo_configs/zeo.conf keeps its data, so plain
# `.venv/bin/runzeo -C zeo_configs/zeo.conf` works from the repo root.
$(RUN_STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	mkdir -p var/zeo
	touch $(RUN_STAMP)

# The same virtualenv plus the test, bench and web extras.
$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench,web]'
	touch $(TEST_STAMP)

# `make run` plus the web extra (Starlette, uvicorn) for `make web`.
WEB_STAMP := $(VENV)/.installed-web
$(WEB_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install -q -e '.[web]'
	touch $(WEB_STAMP)

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

# Open the zpydb shell on the embedded default database (./var/Data.fs).
run: $(RUN_STAMP)
	$(BIN)/zpydb shell

# PostgreSQL server binaries for the RelStorage tests (installed with apt when missing).
postgres:
	bash scripts/ensure-postgres.sh

# Headless Chromium and chromedriver for the console tests (installed with apt when missing).
chromium:
	bash scripts/ensure-chromium.sh

# The whole test suite: core, ZEO (real runzeo), PostgreSQL (real server), files, web
# (real uvicorn, the console in real headless Chromium), bench smoke.
test: $(TEST_STAMP) postgres redis chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Redis is a benchmark peer; the bench smoke test in `make test` runs it too.
redis:
	bash scripts/ensure-redis.sh

# The database over HTTP on 127.0.0.1:8110: REST and the console at / (docs/web.md).
# WEB_ARGS passes options, e.g. make web WEB_ARGS="var/Data.fs --tokens tokens.json".
web: $(WEB_STAMP)
	$(BIN)/zpydb web $(WEB_ARGS)

# The read-write ZEO server on 127.0.0.1:8100 (zeo_configs/zeo.conf).
serve: $(RUN_STAMP)
	$(BIN)/zpydb serve

# Development CA, server and client certificates for zeo_configs/zeo-tls.conf.
certs: $(RUN_STAMP)
	$(BIN)/zpydb certs certs

bench: $(TEST_STAMP) postgres redis
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-full:
	$(MAKE) bench BENCH_ARGS=--full

# The long reliability suite (tests/test_reliability.py with ZPYDB_TORTURE=1): 50 server kills,
# 50 writer kills, 150 Ctrl-Cs per backend...; its figures go to var/reliability.jsonl and are
# printed as the table of docs/reliability.md.
torture: $(TEST_STAMP)
	mkdir -p var && rm -f var/reliability.jsonl
	ZPYDB_TORTURE=1 ZPYDB_RELIABILITY_RESULTS=var/reliability.jsonl \
		$(BIN)/python -m pytest -o timeout=1500 --junitxml=var/reliability.xml \
		tests/test_reliability.py $(PYTEST_ARGS); status=$$?; \
		$(BIN)/python -m tests.reliability.report var/reliability.jsonl var/reliability.xml; \
		exit $$status

clean:
	rm -rf $(VENV) var build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
