# Front door. `make test` and `make report` each create .venv (Python 3.11) and install the project first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test report parity bench data-summary clean help

help:
	@echo "make test    - set up .venv and run the whole test suite"
	@echo "make report  - set up .venv and build the review (notebooks, HTML, figures) under reports/"
	@echo "make parity  - metafor parity report"
	@echo "make bench   - speed benchmarks"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

report: $(STAMP)
	$(PY) -m ivighelpers report

parity: $(STAMP)
	$(PY) -m ivighelpers.parity

bench: $(STAMP)
	$(PY) benchmarks/bench_meta.py

data-summary: $(STAMP)
	$(PY) -m ivighelpers.data summary

clean:
	rm -rf $(VENV) reports
