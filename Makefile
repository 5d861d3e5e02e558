# `make demo` and `make test` build the same pinned environment in .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-all lint bench clean gpu-wheels gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mtlstudy demo

# Test files spread over TEST_WORKERS processes (pytest-xdist), each file whole in one,
# each process (and what it starts) on one OpenMP thread: the suite's models are tiny, and
# two processes of two threads each on two cores take 40 % longer.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-all: $(STAMP)
	$(PY) -m pytest -m ""

bench: $(STAMP)
	$(VENV)/bin/mtlstudy bench overhead

# Wheels a bare GPU machine lacks, into .whl/ (ignored by git; carried to the machine).
gpu-wheels:
	PYTHON=$(PYTHON) scripts/gpu_wheels.sh

# On a machine with a GPU: the gpu tests, a short training of each architecture and
# bench step, figures in $(GPU_CHECK_OUT). No GPU: one line, non-zero.
GPU_CHECK_OUT ?= gpu-check.json
gpu-check:
	PYTHON=$(PYTHON) scripts/gpu_check.sh $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) results .pytest_cache
