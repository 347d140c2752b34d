"""Build the review: execute the notebooks with papermill and export HTML for reviewers.

- ``build_report()`` (``make report``): every notebook in ``notebooks/`` is executed (two at a time) into
  ``reports/<name>.ipynb`` and exported to ``reports/<name>.html``; figures go to ``figures/<domain>/``,
  key results to ``reports/results/<domain>.json``; the metafor parity report and the data summary are
  written beside them.
- ``run_domain(domain, params)`` (``python -m ivighelpers run strength -p method DL``): one notebook with
  other parameters; the outputs are named after the parameters, so nothing is overwritten.
- ``export_html(nb_path)``: HTML with code hidden, run stamp and parameters shown, figures embedded, and no
  script or style fetched from the network.
"""

from __future__ import annotations

import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from .analysis import DEFAULT_PARAMS, validate_params
from .errors import ParameterError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
REPORTS = ROOT / "reports"
DOMAINS = {"evidence": "00_evidence_base", "strength": "01_strength", "ck": "02_ck", "steroid": "03_steroid_sparing",
           "safety": "04_safety", "response_course": "05_response_course"}


def build_report(workers: int = 2) -> int:
    """Execute every notebook (in parallel), export HTML, write parity and data summaries."""
    from . import parity
    from .data import load_all, summary_text
    REPORTS.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    names = [DOMAINS[d] for d in DOMAINS]
    failures = []
    with ProcessPoolExecutor(max_workers=workers) as ex:
        futs = {ex.submit(_execute, NOTEBOOKS / f"{n}.ipynb", REPORTS / f"{n}.ipynb", {}): n for n in names}
        for i, fut in enumerate(as_completed(futs), 1):
            n = futs[fut]
            err = fut.result()
            status = "ok" if err is None else f"FAILED: {err}"
            if err:
                failures.append(n)
            print(f"[{i}/{len(names)}] {n}: {status} ({time.perf_counter() - t0:.1f} s)", flush=True)
    for n in names:
        if n not in failures:
            export_html(REPORTS / f"{n}.ipynb")
    results = parity.run_all()
    (REPORTS / "parity.txt").write_text(parity.report(results) + "\n")
    (REPORTS / "data_summary.txt").write_text(summary_text(load_all()) + "\n")
    _write_index(names, failures)
    print(f"review built in {time.perf_counter() - t0:.1f} s: {REPORTS.relative_to(ROOT)}/index.html")
    return 1 if failures or not all(r.ok for r in results) else 0


def run_domain(domain: str, params: dict, quiet: bool = False) -> Path:
    """Run one domain notebook with ``params``; returns the path of the HTML.

    Parameters are validated before a kernel starts (a bad value fails at once with the allowed values).
    """
    if domain not in DOMAINS:
        raise ParameterError(f"domain={domain!r} is not known; allowed: {', '.join(DOMAINS)}")
    unknown = set(params) - set(DEFAULT_PARAMS)
    if unknown:
        raise ParameterError(f"unknown parameter(s) {sorted(unknown)}; allowed: {', '.join(DEFAULT_PARAMS)}")
    validate_params(params)
    name = run_name(domain, params)
    out = REPORTS / "runs" / name
    out.mkdir(parents=True, exist_ok=True)
    nb_out = out / f"{name}.ipynb"
    err = _execute(NOTEBOOKS / f"{DOMAINS[domain]}.ipynb", nb_out, {**params, "run_name": name})
    if err:
        raise RuntimeError(f"{DOMAINS[domain]} failed with {params}: {err} (see {nb_out})")
    html = export_html(nb_out)
    if not quiet:
        print(f"{name}: {html.relative_to(ROOT)}; results: reports/results/{name}.json")
    return html


def run_name(domain: str, params: dict) -> str:
    """A file-system-safe name made of the domain and the non-default parameters, sorted."""
    parts = [domain]
    for k in sorted(params):
        v = params[k]
        if v == DEFAULT_PARAMS.get(k):
            continue
        v = "+".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        parts.append(f"{k}-{re.sub(r'[^A-Za-z0-9.+_-]', '_', v)}")
    return "__".join(parts)


def export_html(nb_path: Path) -> Path:
    """HTML without code cells' input, with outputs (run stamp, tables, figures) and no external URLs."""
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(nb_path, as_version=4)
    exp = HTMLExporter(template_name="lab")
    exp.exclude_input = True
    exp.exclude_input_prompt = True
    exp.exclude_output_prompt = True
    body, _ = exp.from_notebook_node(nb)
    body = strip_external(body)
    path = Path(nb_path).with_suffix(".html")
    path.write_text(body, encoding="utf-8")
    return path


_EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>", re.I)
_EXTERNAL_LINK = re.compile(r"<link[^>]*\bhref=[\"']https?://[^>]*>", re.I)
_MATHJAX_BLOCK = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S | re.I)
_SCRIPT_BLOCK = re.compile(r"<script\b[^>]*>.*?</script>", re.S | re.I)


def _drop_networked_scripts(html: str) -> str:
    """Inline scripts that load code from the network (e.g. the template's mermaid loader) are removed."""
    return _SCRIPT_BLOCK.sub(lambda m: "" if re.search(r"https?://", m.group(0)) else m.group(0), html)


def strip_external(html: str) -> str:
    """Remove every script or stylesheet that would be fetched from the network (the report must open offline)."""
    html = _MATHJAX_BLOCK.sub("", html)
    html = _EXTERNAL_SCRIPT.sub("", html)
    html = _EXTERNAL_LINK.sub("", html)
    return _drop_networked_scripts(html)


def external_references(html: str) -> list[str]:
    """Scripts or styles the HTML would load from the network (for tests)."""
    refs = re.findall(r"<script[^>]*\bsrc=[\"'](https?://[^\"']+)", html, re.I)
    refs += re.findall(r"<link[^>]*\bhref=[\"'](https?://[^\"']+)", html, re.I)
    refs += re.findall(r"@import\s+(?:url\()?[\"']?(https?://[^\"')]+)", html, re.I)
    for block in _SCRIPT_BLOCK.findall(html):             # URLs inside inline scripts (dynamic imports)
        refs += re.findall(r"https?://[^\s\"'`)]+", block)
    return refs


# ---------------------------------------------------------------------------------------------

def _execute(src: Path, dst: Path, params: dict) -> str | None:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", progress_bar=False,
                            cwd=str(NOTEBOOKS), execution_timeout=600)
        return None
    except PapermillExecutionError as e:
        return f"{e.ename}: {e.evalue}"


def _write_index(names, failures):
    items = "\n".join(f'<li><a href="{n}.html">{n}</a>{" (failed)" if n in failures else ""}</li>' for n in names)
    (REPORTS / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>IVIG/SCIg in myositis: living meta-analysis</title>"
        f"<h1>Immunoglobulin in idiopathic inflammatory myopathies</h1><ul>{items}</ul>"
        "<p><a href='parity.txt'>metafor parity report</a> &middot; <a href='data_summary.txt'>data summary</a></p>\n")


def main_run(argv) -> int:
    """``python -m ivighelpers run DOMAIN [-p NAME VALUE ...] [-f params.yaml]``."""
    import argparse
    import yaml
    ap = argparse.ArgumentParser(prog="python -m ivighelpers run")
    ap.add_argument("domain", help=f"one of {', '.join(DOMAINS)}")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="parameter (YAML value: -p designs '[rct, crossover_rct]'); repeatable")
    ap.add_argument("-f", help="YAML file of parameters (-p overrides it)")
    a = ap.parse_args(argv)
    params = {}
    if a.f:
        params.update(yaml.safe_load(Path(a.f).read_text()) or {})
    for k, v in a.p:
        params[k] = yaml.safe_load(v)
    try:
        run_domain(a.domain, params)
    except (ParameterError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
