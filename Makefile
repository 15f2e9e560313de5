# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# The tests also need mysqlclient, which builds against Debian's packages.
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,uvloop]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	bash scripts/services.sh --build-packages
	$(VENV)/bin/pip install -q -e '.[test,uvloop,mysql]'
	touch $(TEST_STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(TEST_STAMP)
	bash scripts/services.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest

bench: $(TEST_STAMP)
	bash scripts/services.sh
	$(VENV)/bin/python -m bench $(ARGS)
