# `make demo` and `make test` build the same pinned environment in .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mtlstudy demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ""

bench: $(STAMP)
	$(VENV)/bin/mtlstudy bench overhead

clean:
	rm -rf $(VENV) results .pytest_cache
