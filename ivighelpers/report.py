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

import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .analysis import DEFAULT_PARAMS, validate_params
from .errors import InputError, ParameterError
from .data import treated_patients

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
REPORTS = ROOT / "reports"
DOMAINS = {"evidence": "00_evidence_base", "strength": "01_strength", "ck": "02_ck", "steroid": "03_steroid_sparing",
           "safety": "04_safety", "response_course": "05_response_course"}


def build_report(workers: int = 2) -> int:
    """Build the whole review, atomically: the data are validated once before any notebook starts (one message,
    exit 2); every notebook (two at a time, each in a process forked from this warm one: ``execute``) executes
    into a private staging folder; only when all succeeded do
    the staged reports replace ``reports/`` (keeping ``reports/runs/``) and the staged figures replace
    ``figures/<domain>/``. A failure leaves the previous build and figures untouched and says so; the failed
    notebooks are kept in ``build/failed/`` for inspection. SIGTERM or Ctrl-C stops every worker and removes
    the staging folder."""
    if os.environ.get("IVIG_DATA_DIR"):
        print(f"error: IVIG_DATA_DIR is set ({os.environ['IVIG_DATA_DIR']}); the review is built from data/ only. "
              "Unset it, or run one report on the copy with `python -m ivighelpers run <domain>`.", file=sys.stderr)
        return 2
    from . import parity
    from .data import load_all, summary_text
    from .errors import DataValidationError
    try:
        tables = load_all()
    except DataValidationError as e:
        print(f"error: the data do not validate, nothing was built (reports/ is unchanged):\n  {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    names = [DOMAINS[d] for d in DOMAINS]
    stage = Path(tempfile.mkdtemp(prefix=".reports-build-", dir=ROOT))
    stage.chmod(0o755)
    failures = []
    try:
        with _stop_children_on_signal():
            from .execute import run_notebooks
            order = list(DOMAINS.items())
            done = [0]

            def report_one(i, err, secs):
                d, n = order[i]
                done[0] += 1
                if err:
                    failures.append((n, err))
                status = "ok" if err is None else f"FAILED: {err}"
                print(f"[{done[0]}/{len(names)}] {n}: {status} ({secs:.1f} s; {time.perf_counter() - t0:.1f} s elapsed)",
                      flush=True)

            run_notebooks([(NOTEBOOKS / f"{n}.ipynb", stage / f"{n}.ipynb", {"output_dir": str(stage / "_out" / d)}, {})
                           for d, n in order], workers=workers, on_done=report_one)
        if failures:
            kept = ROOT / "build" / "failed"
            kept.mkdir(parents=True, exist_ok=True)
            for n, _ in failures:
                if (stage / f"{n}.ipynb").is_file():
                    shutil.copy2(stage / f"{n}.ipynb", kept / f"{n}.ipynb")
            print(f"error: {len(failures)} of {len(names)} notebooks failed ({', '.join(n for n, _ in failures)}); the "
                  f"previous build in reports/ and figures/ is unchanged. Failed notebooks: build/failed/", file=sys.stderr)
            return 1
        results = parity.run_all()
        (stage / "parity.txt").write_text(parity.report(results) + "\n")
        (stage / "data_summary.txt").write_text(summary_text(tables) + "\n")
        (stage / "results").mkdir()
        for d in DOMAINS:
            shutil.copy2(stage / "_out" / d / "results.json", stage / "results" / f"{d}.json")
        write_index(names, tables, out=stage)
        _publish_build(stage)
        stage = None
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    print(f"review built in {time.perf_counter() - t0:.1f} s: {REPORTS.relative_to(ROOT)}/index.html", flush=True)
    return 0 if all(r.ok for r in results) else 1


def run_domain(domain: str, params: dict, quiet: bool = False) -> Path:
    """Run one domain notebook with ``params``; returns the path of the HTML.

    Parameters are validated before the notebook starts (a bad value fails at once with the allowed values). The run
    is named after its effective parameters that differ from the notebook's own defaults (after normalisation),
    and writes only under ``reports/runs/<name>/`` (notebook, HTML, figures, results.json), never to the review
    itself; it executes in a private staging folder that replaces ``reports/runs/<name>/`` only when complete,
    so identical runs in parallel do not collide.
    """
    if domain not in DOMAINS:
        raise ParameterError(f"domain={domain!r} is not known; allowed: {', '.join(DOMAINS)}")
    unknown = set(params) - set(DEFAULT_PARAMS)
    if unknown:
        raise ParameterError(f"unknown parameter(s) {sorted(unknown)}; allowed: {', '.join(DEFAULT_PARAMS)}")
    changed = effective_changes(domain, params)
    name = run_name(domain, params)
    runs = REPORTS / "runs"
    stage_root = runs / ".staging"
    stage_root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=stage_root))
    stage.chmod(0o755)
    try:
        nb_out = stage / f"{name}.ipynb"
        from .execute import run_notebooks
        with _stop_children_on_signal():
            [(err, secs)] = run_notebooks([(NOTEBOOKS / f"{DOMAINS[domain]}.ipynb", nb_out,
                                            {**changed, "run_name": name, "output_dir": str(stage)},
                                            {"title": _run_title(domain, name, changed), "home": "../../"})], workers=1)
        if err:
            kept = runs / ".failed"
            kept.mkdir(exist_ok=True)
            if nb_out.is_file():
                shutil.copy2(nb_out, kept / f"{name}.ipynb")
            raise RuntimeError(f"{DOMAINS[domain]} failed with {changed}: {err} "
                               f"(see {(kept / (name + '.ipynb')).relative_to(ROOT)})")
        final = _publish_run(stage, runs / name)
        stage = None
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    html = final / f"{name}.html"
    if not quiet:
        print(f"{name}: {html.relative_to(ROOT)} ({secs:.1f} s); results: "
              f"{(final / 'results.json').relative_to(ROOT)}")
    return html


def execute_in_place() -> int:
    """``make notebooks``: execute every notebook in ``notebooks/`` in place (the committed source, with figures
    written to ``figures/<domain>/``), two at a time."""
    from .execute import run_notebooks
    names = list(DOMAINS.values())
    failed = []

    def report_one(i, err, secs):
        print(f"executed {names[i]} ({secs:.1f} s)" if err is None else f"error: {names[i]} failed: {err}", flush=True)
        if err:
            failed.append(names[i])

    with _stop_children_on_signal():
        run_notebooks([(NOTEBOOKS / f"{n}.ipynb", NOTEBOOKS / f"{n}.ipynb", {}, None) for n in names], workers=2,
                      on_done=report_one)
    return 1 if failed else 0


def notebook_defaults(domain: str) -> dict:
    """The parameter defaults written in the domain notebook's ``parameters`` cell (e.g. safety's GLMM)."""
    import ast
    import json
    nb = json.loads((NOTEBOOKS / f"{DOMAINS[domain]}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    out = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out[node.target.id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return {k: v for k, v in out.items() if k in DEFAULT_PARAMS}


def effective_changes(domain: str, params: dict) -> dict:
    """The parameters whose normalised value differs from the notebook's own (normalised) default."""
    base = validate_params(notebook_defaults(domain))
    eff = validate_params({**{k: base[k] for k in DEFAULT_PARAMS}, **params})
    return {k: eff[k] for k in DEFAULT_PARAMS if eff[k] != base[k]}


def run_name(domain: str, params: dict) -> str:
    """A file-system-safe name: the domain and the effective parameters that differ from the notebook's defaults
    (normalised: ``-p method reml`` and ``-p designs '[]'`` are the default), sorted by name."""
    try:
        changed = effective_changes(domain, params)
    except ParameterError:
        changed = params
    parts = [domain]
    for k in sorted(changed):
        v = changed[k]
        v = "+".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        parts.append(f"{k}-{re.sub(r'[^A-Za-z0-9.+_-]', '_', v)}")
    return "__".join(parts)


def _run_title(domain, name, changed) -> str:
    words = ", ".join(f"{k} = {'+'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in changed.items())
    return (f"{TITLES[DOMAINS[domain]]}: immunoglobulin in myositis, re-run with {words}" if words else
            f"{TITLES[DOMAINS[domain]]}: immunoglobulin in myositis, re-run with the default parameters")


def _publish_run(stage: Path, final: Path) -> Path:
    """Move a complete run folder into place; a lock per run name serialises identical runs (the last wins)."""
    import fcntl
    lock = final.parent / f".{final.name}.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            old = None
            if final.exists():
                old = final.with_name(f".{final.name}.old.{os.getpid()}")
                os.rename(final, old)
            os.rename(stage, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return final


def _publish_build(stage: Path) -> None:
    """Replace reports/ by the staged build (keeping reports/runs/) and figures/<domain>/ by the staged figures."""
    for d in DOMAINS:
        src = stage / "_out" / d / "figures" / d
        dst = ROOT / "figures" / d
        if dst.exists():
            for f in dst.iterdir():
                if f.is_file():
                    f.unlink()
        dst.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            for f in sorted(src.iterdir()):
                shutil.copy2(f, dst / f.name)
    shutil.rmtree(stage / "_out")
    old = None
    if REPORTS.exists():
        if (REPORTS / "runs").exists():
            os.rename(REPORTS / "runs", stage / "runs")
        old = ROOT / f".reports-old-{os.getpid()}"
        os.rename(REPORTS, old)
    os.rename(stage, REPORTS)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _stop_children_on_signal:
    """While active, SIGTERM (like Ctrl-C) stops this process's children (the notebooks' processes) and raises
    KeyboardInterrupt here, so that the caller's clean-up (staging folders) runs and nothing keeps executing."""

    def __enter__(self):
        self._old = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._handler)
        return self

    @staticmethod
    def _handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, exc_type, exc, tb):
        signal.signal(signal.SIGTERM, self._old)
        if exc_type is KeyboardInterrupt:
            _kill_children()
            print("interrupted: every notebook's process was stopped; no partial output was published", file=sys.stderr)
        return False


def _kill_children():
    import psutil
    me = psutil.Process()
    kids = me.children(recursive=True)
    for p in kids:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(kids, timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


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
a { color: #0a58ca; }
.anchor-link { margin-left: 0.35em; color: #8c959f; text-decoration: none; font-weight: normal; font-size: 0.8em; }
.anchor-link:hover { color: #0a58ca; }
nav.site { font-size: 13px; padding: 6px 0 8px; border-bottom: 1px solid #d0d7de; margin-bottom: 10px; }
nav.site a { margin-right: 0.9em; } nav.site .here { font-weight: bold; margin-right: 0.9em; }
nav.toc { font-size: 13px; background: #f6f8fa; border: 1px solid #d0d7de; padding: 6px 14px; margin: 12px 0; }
nav.toc ol { margin: 4px 0; padding-left: 1.4em; columns: 2; } nav.toc li { margin: 1px 0; }
@media print {
  body { max-width: none; margin: 0; font-size: 11px; } nav.site, nav.toc, .anchor-link { display: none; }
  table, img, figure, pre { break-inside: avoid; page-break-inside: avoid; }
  h2, h3, h4 { break-after: avoid; page-break-after: avoid; } tr { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


def export_html(nb_path: Path, title: str | None = None, home: str | None = None) -> Path:
    """HTML without code cells' input, with outputs (tables, figures, run stamp), a real <title>, a small
    stylesheet of its own (nbconvert's 'basic' template: no inline JupyterLab CSS) and no external URLs; a bar
    linking the landing page and the other reports (``home``: the folder of index.html relative to this page,
    default the same folder, so a run under reports/runs/<name>/ uses "../../"), a table of contents of the
    sections, and visible heading anchors."""
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
    body = _navigation(body, Path(nb_path).stem, "" if home is None else home)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{_html.escape(title)}</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
    page = strip_external(page)
    path = Path(nb_path).with_suffix(".html")
    path.write_text(page, encoding="utf-8")
    return path


def _navigation(body: str, name: str, home: str) -> str:
    """Insert the site bar before the first heading and a table of contents of the h2 sections after the first
    paragraph that follows the title."""
    import html as _html
    current = name if name in DOMAINS.values() else DOMAINS.get(name.split("__")[0])   # a run: its domain
    links = [f'<a href="{home}index.html">All reports (summary of findings)</a>']
    for n in DOMAINS.values():
        label = _html.escape(SHORT_TITLES[n])
        links.append(f'<span class="here">{label}</span>' if n == current else f'<a href="{home}{n}.html">{label}</a>')
    bar = '<nav class="site" aria-label="Reports">' + "".join(links) + "</nav>\n"
    heads = re.findall(r'<h2 id="([^"]+)">(.*?)<a class="anchor-link"', body)
    toc = ""
    if len(heads) >= 3:
        items = "".join(f'<li><a href="#{hid}">{text}</a></li>' for hid, text in heads)
        toc = f'<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>{items}</ol></nav>\n'
    m = re.search(r"<h1\b", body)
    if not m:
        return bar + toc + body
    body = body[:m.start()] + bar + body[m.start():]
    end_h1 = body.find("</h1>", m.start())
    end_p = body.find("</p>", end_h1)
    cut = end_p + 4 if 0 <= end_p - end_h1 < 2000 else end_h1 + 5
    return body[:cut] + toc + body[cut:]


SHORT_TITLES = {"00_evidence_base": "Evidence base", "01_strength": "Strength", "02_ck": "Creatine kinase",
                "03_steroid_sparing": "Steroid-sparing", "04_safety": "Safety",
                "05_response_course": "Response course, skin, dysphagia, lung"}


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
    """Execute one notebook (in a forked child, see ``execute``); ``None`` or the error."""
    from .execute import run_notebooks
    return run_notebooks([(src, dst, params, None)], workers=1)[0][0]


TITLES = {"00_evidence_base": "The evidence base (PRISMA flow, studies, risk of bias)",
          "01_strength": "Muscle strength", "02_ck": "Creatine kinase", "03_steroid_sparing": "Steroid-sparing effect",
          "04_safety": "Safety", "05_response_course": "Response course, skin, dysphagia, lung"}


def write_index(names, tables, out: Path | None = None) -> Path:
    """Landing page: the review's title, the date the evidence was searched up to, the summary of findings across
    all domains (from each report's results JSON) and links to every report."""
    import html as _html
    import json
    search_to = str(tables["search_log"]["date"].max())
    out = REPORTS if out is None else out
    titles = TITLES
    rows, prot = [], []
    for n in names:
        domain = [d for d, v in DOMAINS.items() if v == n][0]
        path = out / "results" / f"{domain}.json"
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        for r in res.get("observed_rates", []):
            if not str(r.get("Studies (patients)", "0")).startswith("0"):
                rows.append((titles[n], n, r))
        prot += [(titles[n], n, r) for r in res.get("protocol_sof", [])]
    e = _html.escape
    cells = "".join(
        f"<tr><td><a href='{n}.html'>{e(t)}</a></td><td>{e(r['Outcome'])}</td>"
        f"<td>{e(r['Studies (patients)'])}</td><td>{e(r['Observed rate'])}</td>"
        f"<td>{e(r['Certainty'])}</td><td>{e(r['What this means'])}</td></tr>" for t, n, r in rows)
    sof_html = ""
    for pop in tables["protocol"].populations:
        rr = sorted([x for x in prot if x[2]["population"] == pop.id], key=lambda x: x[2]["rank"])
        notes, body = [], ""
        for t, n, r in rr:
            marks = []
            for x in r["Reasons"]:
                notes.append(x)
                marks.append(str(len(notes)))
            cert = e(r["Certainty"] or "no evidence") + (f" <sup>{','.join(marks)}</sup>" if marks else "")
            body += (f"<tr><td>{e(r['Outcome (follow-up)'])}<br><small>{e(r['Importance'])}; "
                     f"<a href='{n}.html'>{e(t)}</a></small></td><td>{e(r['Participants (studies)'])}</td>"
                     f"<td>{e(r['Relative effect'])}</td><td>{e(r['Risk with comparator'])}</td>"
                     f"<td>{e(r['Risk with immunoglobulin'])}</td><td>{cert}</td><td>{e(r['What happens'])}</td>"
                     f"<td><small>{e(r['Comments'])}</small></td></tr>")
        foot = "".join(f"<li>{e(x[0].upper() + x[1:])}</li>" for x in notes)
        sof_html += (f"<h2>Summary of findings: {e(pop.label)}</h2>\n<p><strong>Question:</strong> {e(pop.question)} "
                     f"<strong>Comparator:</strong> {e(pop.comparator)}. Outcomes and their ranking are the protocol's "
                     "(<code>data/protocol.yaml</code>); certainty is the review team's recorded judgement "
                     "(<code>data/grade.csv</code>).</p>\n"
                     + (("<table><thead><tr><th>Outcome (follow-up)</th><th>Participants (studies)</th>"
                         "<th>Relative effect</th><th>Risk with comparator</th><th>Risk with immunoglobulin</th>"
                         f"<th>Certainty (GRADE)</th><th>What happens</th><th>Comments</th></tr></thead><tbody>{body}"
                         "</tbody></table>\n" + (f"<ol class='footnotes'>{foot}</ol>\n" if foot else ""))
                        if body else "<p>Not in this build.</p>\n"))
    links = "".join(f"<li><a href='{n}.html'>{_html.escape(titles.get(n, n))}</a>"
                    "</li>" for n in names)
    st = tables["studies"]
    page = (f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<title>Immunoglobulin (IVIG and SCIg) in idiopathic inflammatory myopathies: a living meta-analysis</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n"
            "<h1>Immunoglobulin (IVIG and SCIg) in idiopathic inflammatory myopathies</h1>\n"
            f"<p><em>A living systematic review and meta-analysis. Evidence searched up to {search_to}; "
            f"{len(st)} reports of {treated_patients(st)[1]} cohorts, {treated_patients(st)[0]:,} patients treated with "
            "immunoglobulin (each cohort counted once; where printed). "
            "Every number is computed from the study-level data in <code>data/</code>.</em></p>\n"
            f"{_versions_html(out)}"
            f"<h2>Reports</h2>\n<ul>{links}</ul>\n"
            f"{sof_html}"
            "<h2>Observed rates in treated patients (uncontrolled)</h2>\n<p>Proportions of treated patients in "
            "uncontrolled studies: they include the natural course and concurrent treatment, are not treatment "
            "effects, and never enter a summary of findings.</p>\n<table><thead><tr><th>Report</th><th>Outcome</th>"
            "<th>Studies (patients)</th><th>Observed rate</th><th>Certainty (GRADE)</th><th>What this means</th></tr></thead>"
            f"<tbody>{cells}</tbody></table>\n<p>Reasons for each certainty rating are footnoted in each report.</p>\n"
            "<p><a href='parity.txt'>metafor parity report</a> &middot; <a href='data_summary.txt'>data summary</a></p>\n"
            "</body>\n</html>\n")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _versions_html(out: Path) -> str:
    """The version of the review on the landing page, links to the releases, and 'What changed since <previous>'
    (conclusions first), computed by ``releases.diff``."""
    import html as _html

    from . import releases as rel
    versions = rel.list_releases()
    try:
        now = rel.current_review(out)
    except InputError as e:                         # a build without results cannot be compared; say so
        return f"<p><em>Version not determined ({_html.escape(str(e))}).</em></p>\n"
    if not versions:
        return ("<p><strong>Version:</strong> unreleased build (no release recorded yet; "
                "<code>python -m ivighelpers release</code> records one).</p>\n")
    latest = rel.load_release(versions[-1])
    same = latest["data"] == now["data"]
    links = ", ".join(f"<a href='../data/releases/{v}.json'>{v}</a>" for v in reversed(versions))
    head = (f"<p><strong>Version {versions[-1]}</strong> (evidence searched up to {latest['search_date']}). "
            if same else f"<p><strong>Unreleased build</strong>: the data changed since version {versions[-1]}. ")
    head += f"Releases: {links}.</p>\n"
    if same and len(versions) == 1:
        return head + "<p>This is the first release; there is no earlier version to compare with.</p>\n"
    old, new, label = ((rel.load_release(versions[-2]), latest, versions[-2]) if same else (latest, now, versions[-1]))
    d = rel.diff(old, new)
    where = {d: TITLES[n].split(" (")[0].lower() for d, n in DOMAINS.items()}
    items = [f"<li><strong>Conclusion changed</strong> - {_html.escape(o['outcome'])} ({where.get(o['domain'], o['domain'])} report): "
             f"{_html.escape('; '.join(o['conclusion_changed']))}</li>" for o in d["outcomes"] if o["conclusion_changed"]]
    items += [f"<li>{_html.escape(o['outcome'])} ({where.get(o['domain'], o['domain'])} report): {_html.escape(rel._fmt_row(o['old']))} &rarr; "
              f"{_html.escape(rel._fmt_row(o['new']))}</li>" for o in d["outcomes"]
              if o["changed"] and not o["conclusion_changed"]]
    for what, key in (("Studies added", "studies_added"), ("Studies removed", "studies_removed")):
        if d[key]:
            items.append(f"<li>{what}: {_html.escape(', '.join(d[key]))}</li>")
    n_rows = len(d["results_added"]) + len(d["results_removed"]) + len(d["results_corrected"])
    if n_rows:
        items.append(f"<li>Result rows: {len(d['results_added'])} added, {len(d['results_removed'])} removed, "
                     f"{len(d['results_corrected'])} corrected (<code>python -m ivighelpers diff</code> lists them "
                     "with the reasons)</li>")
    pu = d["prisma_update"]
    items.append(f"<li>Search updated to {_html.escape(str(d['search'][1]))} (previously {_html.escape(str(d['search'][0]))}): "
                 f"{pu['previous_studies']} studies in version {label}; {pu['new_records']} new records screened since, "
                 f"{pu['new_records_excluded']} excluded, {len(pu['new_studies_included'])} new "
                 f"{'study' if len(pu['new_studies_included']) == 1 else 'studies'} included; "
                 f"{pu['total_studies']} studies now (PRISMA 2020 flow for updates)</li>")
    body = "".join(items)
    return head + f"<h2>What changed since {label}</h2>\n<ul>{body}</ul>\n"


PRESETS = {
    "refractory-dm": ({"subtypes": ["dm"], "line": ["refractory", "mixed"]},
                      "dermatomyositis (>= 80% of a study's patients, or DM results), refractory or mixed line"),
    "rct-only": ({"designs": ["rct", "crossover_rct"]}, "randomised trials only (parallel and crossover)"),
    "scig": ({"route": ["SCIg"]}, "subcutaneous immunoglobulin only"),
    "ivig": ({"route": ["IVIG"]}, "intravenous immunoglobulin only"),
    "juvenile": ({"population": ["juvenile"]}, "juvenile dermatomyositis and other paediatric studies"),
    "low-risk-of-bias": ({"exclude_high_rob": True}, "studies not at high/serious/critical overall risk of bias"),
    "primary-sources": ({"exclude_secondary": True}, "only numbers read on the study's own pages (no news, manufacturer "
                        "or other reviews' pages)"),
}


def main_run(argv) -> int:
    """``python -m ivighelpers run DOMAIN [--preset NAME] [-p NAME VALUE ...] [-f params.yaml]``."""
    import argparse

    from .analysis import PARAM_HELP
    domain_hint = next((a for a in argv if a in DOMAINS), None)
    defaults = {**DEFAULT_PARAMS, **notebook_defaults(domain_hint)} if domain_hint else DEFAULT_PARAMS
    whose = f"the {domain_hint} notebook's defaults" if domain_hint else "defaults"
    plist = "\n".join(f"  {k:<17} {PARAM_HELP[k]} (default: {_show(defaults[k])})" for k in DEFAULT_PARAMS)
    pre = "\n".join(f"  {k:<17} {v[1]}: {v[0]}" for k, v in PRESETS.items())
    ap = argparse.ArgumentParser(
        prog="python -m ivighelpers run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one domain report with other parameters; outputs go to reports/runs/<name>/ (HTML, notebook, "
                    "figures, results.json), named after the parameters that differ from the notebook's defaults. "
                    "The review itself (reports/*.html, figures/) is never changed by a run.",
        epilog=f"domains:\n  {', '.join(DOMAINS)}\n\nparameters (-p NAME VALUE; {whose}; values are case-insensitive; "
               f"list filters take 'a,b' or '[a, b]'):\n{plist}\n\npresets (--preset NAME; -p overrides):\n{pre}\n\n"
               "examples:\n  python -m ivighelpers run strength --preset refractory-dm\n"
               "  python -m ivighelpers run safety -p method DL -p route scig\n"
               "  python -m ivighelpers run ck -p line '[refractory, mixed]'\n"
               "  python -m ivighelpers run strength -f my_params.yaml   (a YAML mapping: name: value)")
    ap.add_argument("domain", choices=list(DOMAINS), metavar="DOMAIN", help=f"one of {', '.join(DOMAINS)}")
    ap.add_argument("--preset", choices=list(PRESETS), help="a clinically meaningful selection (see below)")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="parameter; repeatable")
    ap.add_argument("-f", metavar="FILE", help="YAML file of parameters (-p overrides it)")
    a = ap.parse_args(argv)
    try:
        params = dict(PRESETS[a.preset][0]) if a.preset else {}
        if a.f:
            params.update(read_param_file(a.f))
        for k, v in a.p:
            params[k] = v                      # a string: validate_params converts it by the parameter's type
        run_domain(a.domain, params)
    except (ParameterError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130                               # the notebook is stopped and the staging folder removed
    return 0


def read_param_file(path) -> dict:
    """Parameters from a YAML mapping, every value read as text (so 'no' stays 'no', not False) and converted by
    the parameter's declared type in ``validate_params``; problems name the file and what is expected."""
    import yaml
    p = Path(path)
    if not p.is_file():
        raise ParameterError(f"-f {path}: no such file")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    except UnicodeDecodeError as e:
        raise ParameterError(f"-f {path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParameterError(f"-f {path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None or data == "":
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"-f {path}: must be a YAML mapping of parameter names to values (e.g. 'method: DL'), "
                             f"not a {type(data).__name__}")
    return data


def _show(v):
    return "+".join(map(str, v)) if isinstance(v, list) else repr(v)
