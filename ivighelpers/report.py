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
    """Execute every notebook (two at a time), export HTML, write the landing page, parity and data summaries."""
    from . import parity
    from .data import load_all, summary_text
    REPORTS.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    names = [DOMAINS[d] for d in DOMAINS]
    failures = []
    with ProcessPoolExecutor(max_workers=workers, initializer=_quiet_stderr) as ex:
        futs = {ex.submit(_execute_timed, NOTEBOOKS / f"{n}.ipynb", REPORTS / f"{n}.ipynb", {}): n for n in names}
        for i, fut in enumerate(as_completed(futs), 1):
            n = futs[fut]
            err, secs = fut.result()
            if err:
                failures.append(n)
            else:
                export_html(REPORTS / f"{n}.ipynb")
            status = "ok" if err is None else f"FAILED: {err}"
            print(f"[{i}/{len(names)}] {n}: {status} ({secs:.1f} s; {time.perf_counter() - t0:.1f} s elapsed)", flush=True)
    results = parity.run_all()
    (REPORTS / "parity.txt").write_text(parity.report(results) + "\n")
    tables = load_all()
    (REPORTS / "data_summary.txt").write_text(summary_text(tables) + "\n")
    write_index(names, failures, tables)
    print(f"review built in {time.perf_counter() - t0:.1f} s: {REPORTS.relative_to(ROOT)}/index.html", flush=True)
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
    checked = validate_params(params)
    params = {k: checked[k] for k in params}      # normalised values of the parameters given; notebook defaults otherwise
    name = run_name(domain, params)
    out = REPORTS / "runs" / name
    out.mkdir(parents=True, exist_ok=True)
    nb_out = out / f"{name}.ipynb"
    with _stderr_silenced():
        err, secs = _execute_timed(NOTEBOOKS / f"{DOMAINS[domain]}.ipynb", nb_out, {**params, "run_name": name})
    if err:
        raise RuntimeError(f"{DOMAINS[domain]} failed with {params}: {err} (see {nb_out})")
    html = export_html(nb_out)
    if not quiet:
        print(f"{name}: {html.relative_to(ROOT)} ({secs:.1f} s); results: reports/results/{name}.json")
    return html


def run_name(domain: str, params: dict) -> str:
    """A file-system-safe name made of the domain and the non-default parameters (normalised), sorted."""
    try:
        checked = validate_params(params)
        params = {k: checked[k] for k in params}
    except ParameterError:
        pass
    parts = [domain]
    for k in sorted(params):
        v = params[k]
        if v == DEFAULT_PARAMS.get(k):
            continue
        v = "+".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        parts.append(f"{k}-{re.sub(r'[^A-Za-z0-9.+_-]', '_', v)}")
    return "__".join(parts)


CSS = """
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; font-size: 14px; line-height: 1.45;
       color: #1b1f23; max-width: 1180px; margin: 24px auto; padding: 0 20px; }
h1 { font-size: 26px; margin: 0.4em 0 0.3em; } h2 { font-size: 21px; margin-top: 1.6em; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 17px; margin-top: 1.4em; } h4 { font-size: 15px; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 12.5px; }
th, td { border: 1px solid #d0d7de; padding: 4px 7px; vertical-align: top; text-align: left; }
th { background: #f2f5f8; } tr:nth-child(even) td { background: #fafbfc; }
td { max-width: 360px; overflow-wrap: break-word; }
img { max-width: 100%; height: auto; margin: 0.4em 0; }
code { background: #f2f5f8; padding: 0 3px; border-radius: 3px; font-size: 12.5px; }
sup { font-size: 10px; } .jp-OutputArea-output pre, pre { white-space: pre-wrap; font-size: 12px; }
a { color: #0a58ca; } .anchor-link { display: none; }
@media print { body { max-width: none; } }
"""


def export_html(nb_path: Path, title: str | None = None) -> Path:
    """HTML without code cells' input, with outputs (tables, figures, run stamp), a real <title>, a small
    stylesheet of its own (nbconvert's 'basic' template: no inline JupyterLab CSS) and no external URLs."""
    import html as _html

    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:                      # figures: an <img> with the figure's title as alternative text
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data:
                alt = _html.escape(out.get("metadata", {}).get("alt", "Figure"), quote=True)
                out["data"] = {"text/html": f'<img alt="{alt}" src="data:image/png;base64,{data["image/png"].strip()}">'}
    exp = HTMLExporter(template_name="basic")
    exp.exclude_input = True
    exp.exclude_input_prompt = True
    exp.exclude_output_prompt = True
    body, _ = exp.from_notebook_node(nb)
    title = title or nb.metadata.get("title") or Path(nb_path).stem
    page = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{_html.escape(title)}</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
    page = strip_external(page)
    path = Path(nb_path).with_suffix(".html")
    path.write_text(page, encoding="utf-8")
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
    import logging

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    logging.getLogger("papermill").setLevel(logging.ERROR)   # no "Unable to parse line" / "unknown parameter" noise
    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", progress_bar=False,
                            cwd=str(NOTEBOOKS), execution_timeout=600, log_output=False)
        return None
    except PapermillExecutionError as e:
        return f"{e.ename}: {e.evalue}"


def _execute_timed(src, dst, params):
    t = time.perf_counter()
    err = _execute(src, dst, params)
    return err, time.perf_counter() - t


def _quiet_stderr():
    """Worker initializer: the kernels' start-up warnings (e.g. 'running over TCP without encryption') go to
    /dev/null; failures still reach the user as the papermill error each worker returns."""
    import os
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 2)


class _stderr_silenced:
    def __enter__(self):
        import os
        sys.stderr.flush()
        self._saved = os.dup(2)
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 2)
        os.close(fd)

    def __exit__(self, *exc):
        import os
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        return False


def write_index(names, failures, tables) -> Path:
    """Landing page: the review's title, the date the evidence was searched up to, the summary of findings across
    all domains (from each report's results JSON) and links to every report."""
    import html as _html
    import json
    search_to = str(tables["search_log"]["date"].max())
    titles = {"00_evidence_base": "The evidence base (PRISMA flow, studies, risk of bias)",
              "01_strength": "Muscle strength", "02_ck": "Creatine kinase", "03_steroid_sparing": "Steroid-sparing effect",
              "04_safety": "Safety", "05_response_course": "Response course, skin, dysphagia, lung"}
    rows = []
    for n in names:
        domain = [d for d, v in DOMAINS.items() if v == n][0]
        path = REPORTS / "results" / f"{domain}.json"
        if n in failures or not path.is_file():
            continue
        for r in json.loads(path.read_text()).get("summary_of_findings", []):
            rows.append((titles[n], n, r))
    cells = "".join(
        f"<tr><td><a href='{n}.html'>{_html.escape(t)}</a></td><td>{_html.escape(r['Outcome'])}</td>"
        f"<td>{_html.escape(r['Studies (patients)'])}</td><td>{_html.escape(r['Effect'])}</td>"
        f"<td>{_html.escape(r['Certainty'])}</td><td>{_html.escape(r['What this means'])}</td></tr>" for t, n, r in rows)
    links = "".join(f"<li><a href='{n}.html'>{_html.escape(titles.get(n, n))}</a>"
                    f"{' (failed to build)' if n in failures else ''}</li>" for n in names)
    st = tables["studies"]
    page = (f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<title>Immunoglobulin (IVIG and SCIg) in idiopathic inflammatory myopathies: a living meta-analysis</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n"
            "<h1>Immunoglobulin (IVIG and SCIg) in idiopathic inflammatory myopathies</h1>\n"
            f"<p><em>A living systematic review and meta-analysis. Evidence searched up to {search_to}; "
            f"{len(st)} studies, {int(st['n_ig'].sum())} patients treated with immunoglobulin (where printed). "
            "Every number is computed from the study-level data in <code>data/</code>.</em></p>\n"
            f"<h2>Reports</h2>\n<ul>{links}</ul>\n"
            "<h2>Summary of findings across domains</h2>\n<table><thead><tr><th>Report</th><th>Outcome</th>"
            "<th>Studies (patients)</th><th>Effect</th><th>Certainty (GRADE)</th><th>What this means</th></tr></thead>"
            f"<tbody>{cells}</tbody></table>\n<p>Single-arm rates are the proportion of treated patients, not "
            "treatment effects. Reasons for each certainty rating are footnoted in each report.</p>\n"
            "<p><a href='parity.txt'>metafor parity report</a> &middot; <a href='data_summary.txt'>data summary</a></p>\n"
            "</body>\n</html>\n")
    path = REPORTS / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


PRESETS = {
    "refractory-dm": ({"subtypes": ["dm"], "line": ["refractory", "mixed"]},
                      "dermatomyositis (>= 80% of a study's patients, or DM results), refractory or mixed line"),
    "rct-only": ({"designs": ["rct", "crossover_rct"]}, "randomised trials only (parallel and crossover)"),
    "scig": ({"route": ["SCIg"]}, "subcutaneous immunoglobulin only"),
    "ivig": ({"route": ["IVIG"]}, "intravenous immunoglobulin only"),
    "juvenile": ({"population": ["juvenile"]}, "juvenile dermatomyositis and other paediatric studies"),
    "low-risk-of-bias": ({"exclude_high_rob": True}, "studies not at high/serious/critical overall risk of bias"),
}


def main_run(argv) -> int:
    """``python -m ivighelpers run DOMAIN [--preset NAME] [-p NAME VALUE ...] [-f params.yaml]``."""
    import argparse

    import yaml

    from .analysis import PARAM_HELP
    plist = "\n".join(f"  {k:<17} {PARAM_HELP[k]} (default: {DEFAULT_PARAMS[k]!r})" for k in DEFAULT_PARAMS)
    pre = "\n".join(f"  {k:<17} {v[1]}: {v[0]}" for k, v in PRESETS.items())
    ap = argparse.ArgumentParser(
        prog="python -m ivighelpers run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one domain report with other parameters; outputs go to reports/runs/<name>/ (HTML, notebook, "
                    "figures) and reports/results/<name>.json, named after the non-default parameters.",
        epilog=f"domains:\n  {', '.join(DOMAINS)}\n\nparameters (-p NAME VALUE; values are case-insensitive; list "
               f"filters take 'a,b' or '[a, b]'):\n{plist}\n\npresets (--preset NAME; -p overrides):\n{pre}\n\n"
               "examples:\n  python -m ivighelpers run strength --preset refractory-dm\n"
               "  python -m ivighelpers run safety -p method DL -p route scig\n"
               "  python -m ivighelpers run ck -p line '[refractory, mixed]'")
    ap.add_argument("domain", choices=list(DOMAINS), metavar="DOMAIN", help=f"one of {', '.join(DOMAINS)}")
    ap.add_argument("--preset", choices=list(PRESETS), help="a clinically meaningful selection (see below)")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="parameter; repeatable")
    ap.add_argument("-f", help="YAML file of parameters (-p overrides it)")
    a = ap.parse_args(argv)
    params = dict(PRESETS[a.preset][0]) if a.preset else {}
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
