# Front door. `make test` and `make report` each create .venv (Python 3.11) and install the project first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test report notebooks run parity bench bench-report data-summary clean help
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg

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
	$(PY) -m pytest -q tests notebooks $(NBVAL)

report: $(STAMP)
	$(PY) -m ivighelpers report

# re-execute the committed notebooks in place (after changing data/ or ivighelpers/), then commit them
notebooks: $(STAMP)
	$(PY) scripts/build_notebooks.py
	cd notebooks && for nb in 0*.ipynb; do ../$(PY) -m papermill -k python3 --no-progress-bar $$nb $$nb || exit 1; done

# one domain with other parameters: make run DOMAIN=strength ARGS="-p method DL -p designs rct"
run: $(STAMP)
	$(PY) -m ivighelpers run $(DOMAIN) $(ARGS)

parity: $(STAMP)
	$(PY) -m ivighelpers.parity

bench: $(STAMP)
	$(PY) benchmarks/bench_meta.py

bench-report: $(STAMP)
	$(PY) benchmarks/bench_report.py

data-summary: $(STAMP)
	$(PY) -m ivighelpers.data summary

clean:
	rm -rf $(VENV) reports
