# Every target installs what it needs itself: `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: install install-base run test test-fast bench lint services clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(VENV)/.base: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.full: $(VENV)/.base setup.cfg
	$(PIP) install -q -e '.[aws,kcl,test,lint]'
	touch $@

install-base: $(VENV)/.base
install: $(VENV)/.full

# Redis and Memcached for the cache tests (the test fixtures start them; this only installs),
# Java for the KCL daemon, Graphviz's dot to draw `fsmlog graph` output in tests/unit/test_graph_dot.py.
services:
	@command -v redis-server >/dev/null && command -v memcached >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server memcached)
	@command -v java >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless)
	@command -v dot >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphviz)
	@# the console's browser tests drive Debian's chromium through Playwright (no browser download)
	@test -x /usr/bin/chromium || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-dejavu-core)

# The example order pipeline, end to end, on the embedded SQLite backend (no AWS).
run: install-base
	rm -f .fsmlog/run.db .fsmlog/run.db-wal .fsmlog/run.db-shm
	FSMLOG_SETTINGS=examples/orders/settings.yaml $(VENV)/bin/fsmlog --db .fsmlog/run.db \
	  run examples/orders/fsm.yaml --machine order --count 5 \
	  --context '{"sku": "book-42", "quantity": 2, "amount": "39.90", "customer": "ada@example.com"}'

test: install services lint
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not integration and not kcl and not slow" $(PYTEST_ARGS)

bench: install
	@for b in fold embedded handler aws replay; do \
	  echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

# ruff, the layering, mypy over the five packages (setup.cfg [mypy]), and no settings/engine/log typed Any
lint: install
	$(VENV)/bin/ruff check .
	$(PY) .ci/layers.py .
	$(PY) -m mypy
	$(PY) .ci/typed_params.py .

clean:
	rm -rf $(VENV) .fsmlog *.egg-info .pytest_cache .hypothesis .mypy_cache
