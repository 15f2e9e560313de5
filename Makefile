# The two commands of the README: `make demo` and `make test`.
#
# Two supported stacks (README, "Supported versions"), each in a virtualenv:
#   py3.11-django5.2   .venv/                   the primary stack: the whole suite
#   py3.13-django6.1   .venv-py3.13-django6.1/  the end-to-end tests
# `make test` runs both, at once; `make test STACK=py3.13-django6.1` one, and
# ARGS are pytest's (`make test STACK=py3.11-django5.2 ARGS=tests/test_auth.py`).
PYTHON ?= python3
# Python 3.13 from pyenv if it is there (pyenv's python3.13 shim may refuse to
# run when 3.13 is not its selected version), else python3.13 on the PATH.
PYTHON313 ?= $(or $(firstword $(wildcard /root/.pyenv/versions/3.13.*/bin/python3.13)),python3.13)
VENV := .venv
STAMP := $(VENV)/.installed
# The tests also need mysqlclient, which builds against Debian's packages.
TEST_STAMP := $(VENV)/.installed-test
OTHER_VENV := .venv-py3.13-django6.1
OTHER_STAMP := $(OTHER_VENV)/.installed-test
# Which stacks `make test` runs: both unless STACK names one.
STACK ?=

.PHONY: demo test stacks lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,uvloop]' 'Django>=5.2,<5.3'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	bash scripts/services.sh --build-packages
	$(VENV)/bin/pip install -q -e '.[test,uvloop,mysql]' 'Django>=5.2,<5.3'
	touch $(TEST_STAMP)

# The latest Django 6.1 release on Python 3.13.
$(OTHER_STAMP): pyproject.toml
	bash scripts/services.sh --build-packages
	$(PYTHON313) -m venv $(OTHER_VENV)
	$(OTHER_VENV)/bin/pip install -q --upgrade pip
	$(OTHER_VENV)/bin/pip install -q -e '.[test,uvloop,mysql]' 'Django>=6.1,<6.2'
	touch $(OTHER_STAMP)

# Both stacks' virtualenvs (tests/test_cross_versions.py needs the other one).
stacks: $(TEST_STAMP) $(OTHER_STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: stacks
	bash scripts/services.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash scripts/test-stacks.sh $(STACK) $(if $(ARGS),-- $(ARGS))

bench: $(TEST_STAMP)
	bash scripts/services.sh
	$(VENV)/bin/python -m bench $(ARGS)
