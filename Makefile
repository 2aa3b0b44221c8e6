# The two commands the README opens with: `make demo` and `make test`. Each sets up its own
# virtualenv on first use (editable install with the test extras), then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
# fast-reid itself, for the parity tests: 1.4.0 pins torch==1.13.1 but runs on ours, so no deps
	$(PY) -m pip install --quiet --no-deps fastreid==1.4.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) tools/compress.py --config-file configs/synthetic/demo.yml

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf output .pytest_cache
