# Every target installs what it needs itself: `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: install install-base run test test-fast test-pythons bench lint services clean

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
	@$(MAKE) --no-print-directory test-pythons

test-fast: install
	$(PY) -m pytest -q $(FAST) $(PYTEST_ARGS)

# The fast suite on the oldest and the newest Python that fsmlog supports (Lambda's 3.10 to 3.13)
# found on this machine (.ci/find_python.sh: pyenv, /usr/bin, PATH), each in its own .venv-X.Y.
# A supported version the machine lacks is named and skipped. Hypothesis runs its quick profile
# here: the properties are searched in depth on .venv's Python; this is about the language.
SUPPORTED_PYTHONS := 3.10 3.11 3.12 3.13
FAST := -m "not integration and not kcl and not slow"
test-pythons:
	@first=; last=; for v in $(SUPPORTED_PYTHONS); do \
	  if [ -n "$$(.ci/find_python.sh $$v)" ]; then first=$${first:-$$v}; last=$$v; \
	  else echo "test-pythons: Python $$v is not on this machine: skipped"; fi; done; \
	for v in $$(printf '%s\n' $$first $$last | uniq); do \
	  py=$$(.ci/find_python.sh $$v); venv=.venv-$$v; echo "test-pythons: fast suite on $$py"; \
	  if [ ! $$venv/.installed -nt setup.cfg ] || [ ! $$venv/.installed -nt pyproject.toml ]; then \
	    { [ -x $$venv/bin/python ] || $$py -m venv $$venv; } && \
	    PIP_DISABLE_PIP_VERSION_CHECK=1 $$venv/bin/python -m pip install -q -e '.[aws,test]' && \
	    touch $$venv/.installed || exit 1; fi; \
	  HYPOTHESIS_PROFILE=quick $$venv/bin/python -m pytest -q -x -p no:cacheprovider $(FAST) || exit 1; done

bench: install
	@for b in fold embedded handler aws replay console testing; do \
	  echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

# ruff, the layering, mypy over the five packages (setup.cfg [mypy]), and no settings/engine/log typed Any
lint: install
	$(VENV)/bin/ruff check .
	$(PY) .ci/layers.py .
	$(PY) -m mypy
	$(PY) .ci/typed_params.py .

clean:
	rm -rf $(VENV) .venv-3.* .fsmlog *.egg-info .pytest_cache .hypothesis .mypy_cache
