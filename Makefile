# Front door. `make test` and `make report` each create .venv (Python 3.11) and install the project first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test report notebooks run server-stop parity bench bench-glmm bench-report data-summary clean help
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg

help:
	@echo "make test         - set up .venv and run the whole test suite (what CI runs)"
	@echo "make report       - set up .venv and build the review (notebooks, HTML, figures) under reports/"
	@echo "make notebooks    - sync the notebook/Markdown pairs and re-execute the notebooks in place"
	@echo "make run DOMAIN=strength ARGS='-p method DL'  - one domain with other parameters (reports/runs/)"
	@echo "make server-stop  - stop the warm process that serves re-runs (it also leaves after 15 min idle)"
	@echo "make parity       - metafor parity report (every reference case, largest relative error)"
	@echo "make bench        - engine speed benchmarks"
	@echo "make bench-glmm   - GLMM speed and accuracy (vs the previous implementation, and metafor if R is here)"
	@echo "make bench-report - review build time and HTML sizes"
	@echo "make data-summary - what the dataset holds, per domain"
	@echo "make clean        - remove .venv and reports/"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e ".[test]"   # no setuptools banners in the build log
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests notebooks $(NBVAL)

report: $(STAMP)
	$(PY) -m ivighelpers report

# The notebooks are the source (edit them in JupyterLab, or their MyST copies in notebooks/md/). After changing a
# notebook, data/ or ivighelpers/: sync the pair, re-execute in place, commit both (nbval and a test check this).
notebooks: $(STAMP)
	cd notebooks && ../$(VENV)/bin/jupytext --sync --quiet 0*.ipynb
	$(PY) -m ivighelpers notebooks
	cd notebooks && ../$(VENV)/bin/jupytext --sync --quiet 0*.ipynb

# one domain with other parameters: make run DOMAIN=strength ARGS="-p method DL -p designs rct"
run: $(STAMP)
	$(PY) -m ivighelpers run $(DOMAIN) $(ARGS)

# re-runs are served by a warm process (ivighelpers/server.py); this stops it (IVIG_SERVER=0: none is started)
server-stop: $(STAMP)
	$(PY) -m ivighelpers server stop

parity: $(STAMP)
	$(PY) -m ivighelpers.parity

bench: $(STAMP)
	$(PY) benchmarks/bench_meta.py

# GLMM vs the previous implementation and (when Rscript with metafor, lme4 and jsonlite is installed) metafor
bench-glmm: $(STAMP)
	$(PY) benchmarks/bench_glmm.py

bench-report: $(STAMP)
	$(PY) benchmarks/bench_report.py

data-summary: $(STAMP)
	$(PY) -m ivighelpers.data summary

clean:
	@if [ -x $(PY) ]; then $(PY) -m ivighelpers server stop; fi
	rm -rf $(VENV) reports
