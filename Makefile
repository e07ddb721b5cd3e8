# Set-up and the two entry points of the README. `make demo` trains the embedded
# default (procedural data, no download); `make test` runs the default test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/shapes
DEMO_CONFIG ?= configs/shapes.py

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
	$(PY) -m pytest -q -m "not slow" tests

test-slow: install
	$(PY) -m pytest -q -m slow tests

benchmark: install
	$(PY) benchmarks/unet_step.py

clean:
	rm -rf $(VENV) build *.egg-info
