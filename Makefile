# Set-up and the two entry points of the README. `make demo` trains the embedded
# default (procedural data, no download); `make test` runs the default test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/shapes
DEMO_CONFIG ?= configs/shapes.py
# The default suite is compile-bound: one pytest-xdist worker per core, whole files per
# worker (their module fixtures train once). `make test TEST_WORKERS=0` runs in-process.
TEST_WORKERS ?= 2

.PHONY: install demo test test-slow benchmark clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m experiments.main --config=$(DEMO_CONFIG) --workdir=$(WORKDIR)

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

test-slow: install
	$(PY) -m pytest -q -m slow tests

benchmark: install
	$(PY) benchmarks/unet_step.py

clean:
	rm -rf $(VENV) build *.egg-info
