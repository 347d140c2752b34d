"""The notebooks run with non-default parameters, fail clearly on bad ones, and export readable offline HTML;
the committed notebooks are the source, paired with Markdown, and were executed on the current data and code."""
import hashlib
import json
import re
import subprocess
import sys

import nbformat
import papermill as pm
import pytest
from papermill.exceptions import PapermillExecutionError

from ivighelpers import analysis as an
from ivighelpers.data import DATA_DIR
from ivighelpers.errors import ParameterError
from ivighelpers.notebook import code_fingerprint
from ivighelpers.report import (DOMAINS, NOTEBOOKS, PRESETS, REPORTS, export_html, external_references, run_domain,
                                run_name)

# rendered text must not show these (raw column codes, Python identifiers, missing-value markers)
FORBIDDEN = [r"\bNaN\b", r"&lt;NA&gt;", r"<NA>", r"\bNone\b", r"\bnan%", r"\bci_lb\b", r"\bci_ub\b", r"\bn_ig\b",
             r"\brob_overall\b", r"\bn1i\b", r"\bn2i\b", r"\bmean_pre\b", r"\bsd_pre\b", r"\bmean_post\b", r"\bpi_lb\b",
             r"\boutcome_code\b", r"\bstudy_id\b", r"rma_glmm", r"InputError", r"Traceback", r"\best\b",
             r"<Figure size", r"\bdtype\b"]


# what each report must say (randomised evidence as randomised evidence) and must not (harms in efficacy words)
REQUIRED_IN = {"strength": ["Dalakas 1993", "15 randomised", "NNTB", "Summary of findings: refractory dermatomyositis",
                            "Observed rates in treated patients (uncontrolled)", "Muscle strength in inclusion body myositis"],
               "ck": ["Miyasaka 2012", "no significant difference"], "safety": ["NNTH", "Events per 100 cycles"],
               "response_course": ["CDASI"]}
FORBIDDEN_IN = {"safety": [r"placebo arms? improved", r"\bNNT\b", r"[Nn]umber needed to treat\b(?! for)",
                           r"little or no difference in (serious|thromboembolic)"],
                "strength": [r"RR 17\.54[^.]*NNT", r"\b1 \(23\)", r"23 \(1 RCT\)"]}


def _results(name):
    return json.loads((REPORTS / "runs" / name / "results.json").read_text())


def _body(html: str) -> str:
    """The rendered report without the appendix (the run stamp lists parameter names on purpose)."""
    text = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    text = re.sub(r"<nav\b.*?</nav>", "", text, flags=re.S)          # the site bar and the table of contents
    return text.split('id="Appendix:-run-stamp"')[0]


def test_other_estimator_and_transform():
    params = {"method": "DL", "transform": "PFT", "test": "knha"}
    run_domain("strength", params, quiet=True)
    res = _results(run_name("strength", params))
    assert res["params"]["method"] == "DL" and res["params"]["transform"] == "PFT"
    got = res["analyses"]["strength_improved"]
    ev = an.load_evidence(params)
    ref = an.proportion_analysis(ev, "s", "s", "strength_improved", population="non_ibm")
    assert got["k"] == ref.k >= 5
    assert got["summary"]["estimate"] == pytest.approx(ref.summary["estimate"], rel=1e-12)
    default = an.proportion_analysis(an.load_evidence({}), "s", "s", "strength_improved", population="non_ibm")
    assert abs(got["summary"]["estimate"] - default.summary["estimate"]) > 1e-4


def test_randomised_trials_only_preset():
    params = dict(PRESETS["rct-only"][0])
    html = run_domain("strength", params, quiet=True).read_text()
    res = _results(run_name("strength", params))
    ev = an.load_evidence(params)
    assert set(ev.studies["design"]) <= {"rct", "crossover_rct"}
    n_rct = int(ev.tables["studies"]["design"].isin(["rct", "crossover_rct"]).sum())
    assert res["k_studies_selected"] == len(ev.studies) == n_rct > 0
    assert "This run:</strong> Only randomised trials, crossover trials." in html
    # the randomised comparisons are all there; the uncontrolled pools are empty (trials never enter them)
    assert res["analyses"]["rct_proderm_tis20"]["estimate"] == pytest.approx(37 / 47 / (21 / 48))
    assert {r["population"] for r in res["protocol_sof"]} == {"dm_pm", "ibm"}
    assert res["analyses"]["strength_improved"]["k"] == 0


def test_filter_leaving_one_study_says_so_and_names_removed_studies():
    params = {"route": "scig", "population": "juvenile"}
    html = run_domain("response_course", params, quiet=True).read_text()
    res = _results(run_name("response_course", params))
    assert res["params"]["route"] == ["SCIg"] and res["params"]["population"] == ["juvenile"]
    ev = an.load_evidence(params)
    assert res["k_studies_selected"] == len(ev.studies) <= 2
    removed = [x for x in ev.filter_log if x[1]]
    assert removed and all(f"removed {n}:" in html for _, n, _ in removed)


@pytest.mark.parametrize("domain", ["evidence", "safety"])
def test_filter_leaving_no_study_renders(domain):
    params = {"designs": ["registry"]}
    html = run_domain(domain, params, quiet=True).read_text()
    res = _results(run_name(domain, params))
    assert res["k_studies_selected"] == 0
    assert "0 of" in html and "included studies are in this selection" in html
    for a in res["analyses"].values():
        if isinstance(a, dict) and "sentence" in a:
            assert "no study in the current selection" in a["sentence"] or "No randomised trial" in a["sentence"]


def test_invalid_value_fails_before_a_kernel_starts():
    with pytest.raises(ParameterError, match=r"method='XX' is not allowed; allowed: FE, DL, REML"):
        run_domain("strength", {"method": "XX"})
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['estimator'\]"):
        run_domain("strength", {"estimator": "DL"})
    with pytest.raises(ParameterError, match=r"domain='mood' is not known"):
        run_domain("mood", {})
    with pytest.raises(ParameterError, match=r"line=.*\['second'\] not allowed; allowed: 'all' or a list of first_line"):
        run_domain("strength", {"line": ["refractory", "second"]})


def test_invalid_value_inside_the_notebook_names_the_parameter(tmp_path):
    with pytest.raises(PapermillExecutionError, match=r"transform='logit' is not allowed; allowed: PLO, PFT, PAS, PR, GLMM"):
        pm.execute_notebook(str(NOTEBOOKS / "01_strength.ipynb"), str(tmp_path / "bad.ipynb"),
                            parameters={"transform": "logit", "run_name": "bad"}, kernel_name="python3",
                            progress_bar=False, cwd=str(NOTEBOOKS))


def test_values_are_case_insensitive_and_lists_accepted():
    p = an.validate_params({"subtypes": "DM", "route": "scig", "line": "[refractory, mixed]", "method": "reml"})
    assert p["subtypes"] == ["dm"] and p["route"] == ["SCIg"] and p["line"] == ["refractory", "mixed"]
    assert p["method"] == "REML"


def test_run_help_lists_every_parameter_and_preset():
    out = subprocess.run([sys.executable, "-m", "ivighelpers", "run", "strength", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for k in an.DEFAULT_PARAMS:
        assert f"  {k} " in out, k
    for k in PRESETS:
        assert f"  {k} " in out, k


def test_run_names_are_built_from_parameters():
    assert run_name("strength", {"method": "DL", "designs": ["rct", "crossover_rct"]}) == \
        "strength__designs-rct+crossover_rct__method-DL"
    assert run_name("ck", {"method": "REML"}) == "ck"


def test_run_names_compare_with_the_notebooks_own_defaults_after_normalisation():
    # the safety notebook's default transform is GLMM, the package's PLO
    assert run_name("safety", {"transform": "PLO"}) == "safety__transform-PLO"
    assert run_name("safety", {"transform": "glmm"}) == "safety"
    assert run_name("strength", {"transform": "PLO"}) == "strength"
    assert run_name("strength", {"method": "reml", "min_n": "1", "designs": "[]", "subtypes": "ALL"}) == "strength"
    assert run_name("strength", {"exclude_high_rob": "no", "level": "0.95"}) == "strength"


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_every_report_opens_with_its_answer_and_reads_clean(domain, tmp_path):
    src = NOTEBOOKS / f"{DOMAINS[domain]}.ipynb"
    copy = tmp_path / src.name
    copy.write_bytes(src.read_bytes())
    path = export_html(copy)
    html = path.read_text()
    assert path.stat().st_size <= 600 * 1024, f"{path.name}: {path.stat().st_size // 1024} KB"
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert "myositis" in title and len(title) > 20
    body = _body(html)
    i_key = body.find("Key messages")
    i_stamp = html.find("Run stamp")
    assert 0 < i_key < i_stamp
    if domain != "evidence":
        assert 0 < body.find("Summary of findings") < body.find("Question and eligibility") < body.find("Limitations") \
            < body.find("References") < i_stamp
    assert html.find("<td>method</td>") > i_stamp       # the parameter table is in the appendix only
    for pat in FORBIDDEN + FORBIDDEN_IN.get(domain, []):
        m = re.search(pat, body)
        assert m is None, f"{domain}: {pat!r} in {body[max(0, m.start() - 80):m.end() + 80]!r}"
    for want in REQUIRED_IN.get(domain, []):
        assert want in body, f"{domain}: {want!r} missing"
    assert external_references(html) == []
    assert "data:image/png;base64" in html
    assert "ivighelpers import" not in html
    # navigation: the landing page and every other report are linked; the sections have a table of contents
    assert 'href="index.html"' in html
    for other in DOMAINS.values():
        if other != DOMAINS[domain]:
            assert f'href="{other}.html"' in html, other
    toc = re.search(r'<nav class="toc".*?</nav>', html, flags=re.S)
    assert toc and all(f'href="#{h}"' in toc.group(0) for h in re.findall(r'<h2 id="([^"]+)"', html))
    assert "@media print" in html and "break-inside: avoid" in html
    alts = re.findall(r'<img alt="([^"]*)"', html)
    kinds = ("Forest plot, ", "Funnel plot, ", "PRISMA 2020 flow diagram: ", "Effect-direction plot: ", "Evidence map: ",
             "Risk-of-bias traffic-light plot (", "Risk-of-bias summary (", "Cumulative meta-analysis by publication year, ",
             "Bar chart: for each summary-of-findings outcome")
    assert alts and all(len(t) > 40 and t.startswith(kinds) for t in alts), [t for t in alts if not t.startswith(kinds)]
    assert all(re.search(r"\d+ stud(y|ies)", t) for t in alts if t.startswith(("Forest plot", "Funnel plot"))), alts


def test_notebooks_are_executed_and_tagged():
    for name in DOMAINS.values():
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "method: str = " in tagged[0].source
        assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), f"{name} is not executed"


def test_markdown_pairs_match_the_notebooks():
    import jupytext
    for name in DOMAINS.values():
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        md = jupytext.read(NOTEBOOKS / "md" / f"{name}.md")
        assert [(c.cell_type, c.source.strip()) for c in nb.cells] == \
               [(c.cell_type, c.source.strip()) for c in md.cells], f"{name}: run `make notebooks` to sync the pair"


def test_committed_notebooks_were_executed_on_the_current_data_and_code():
    """The run stamp records each data file's SHA-256 and the package's code fingerprint: if data/ or
    ivighelpers/ changed after the notebooks were executed, `make notebooks` was not run."""
    want = {f"data/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in [*DATA_DIR.glob("*.csv"), *DATA_DIR.glob("*.yaml")]}
    want["ivighelpers (code)"] = code_fingerprint()
    for name in DOMAINS.values():
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        text = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                         for o in c.get("outputs", []))
        got = dict(re.findall(r"\| (data/\S+|ivighelpers \(code\)) \| `([0-9a-f]{16})` \|", text))
        assert got == want, f"{name} is stale: re-run `make notebooks` (differs: " \
                            f"{sorted(k for k in want if got.get(k) != want[k])})"


# ---- re-runs never touch the review ----------------------------------------------------------

def _tracked_state():
    """git status of the repository and the bytes of the review's own outputs."""
    root = NOTEBOOKS.parent
    status = subprocess.run(["git", "status", "--porcelain", "--", "figures", "data", "notebooks"], cwd=root,
                            capture_output=True, text=True).stdout
    own = [*sorted((root / "figures").rglob("*")), *sorted(REPORTS.glob("*.html")), *sorted(REPORTS.glob("results/*"))]
    return status, {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in own if p.is_file()}


def test_default_equivalent_run_changes_no_tracked_file_and_no_default_output():
    before = _tracked_state()
    html = run_domain("safety", {"method": "reml", "transform": "GLMM", "designs": "[]", "min_n": 1}, quiet=True)
    assert html == REPORTS / "runs" / "safety" / "safety.html"
    assert (REPORTS / "runs" / "safety" / "results.json").is_file()
    assert any((REPORTS / "runs" / "safety" / "figures").rglob("*.png"))
    assert _tracked_state() == before
    assert "reports/runs/safety/results.json" in html.read_text()


def test_non_default_run_writes_only_under_its_run_folder():
    before = _tracked_state()
    html = run_domain("safety", {"transform": "PLO"}, quiet=True)
    assert html.parent.name == "safety__transform-PLO"
    assert _tracked_state() == before
    assert "safety__transform-PLO" in re.search(r"<title>(.*?)</title>", html.read_text()).group(1) or \
        "transform = PLO" in re.search(r"<title>(.*?)</title>", html.read_text()).group(1)


def test_two_identical_runs_in_parallel_both_succeed():
    cmd = [sys.executable, "-m", "ivighelpers", "run", "ck", "-p", "method", "DL"]
    procs = [subprocess.Popen(cmd, cwd=NOTEBOOKS.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    final = REPORTS / "runs" / "ck__method-DL"
    res = json.loads((final / "results.json").read_text())
    assert res["params"]["method"] == "DL"
    assert (final / "ck__method-DL.html").stat().st_size > 10_000
    assert not list((REPORTS / "runs" / ".staging").glob("ck__method-DL.*"))   # no half-written staging left


# ---- every notebook renders on small selections and extreme values -----------------------------

def _selections():
    st = an.load_evidence({}).tables["studies"]
    sizes = sorted(st["n_ig"].dropna().astype(int).unique(), reverse=True)
    return {"0 studies": {"year_min": 2100},
            "1 study": {"min_n": int(sizes[0])},
            "2 studies": {"min_n": int(sizes[1])},
            "low extremes": {"level": 0.01, "ri": -1, "add": 0, "subtype_share": 1, "to": "all", "method": "HS"},
            "high extremes": {"level": 0.999, "ri": 1, "to": "none", "method": "SJ", "test": "knha",
                              "exclude_high_rob": True, "exclude_derived": True}}


def _run_quietly(args):
    domain, params = args
    try:
        html = run_domain(domain, params, quiet=True)
        return domain, params, None, html.read_text()
    except Exception as e:                                   # reported by the test, with the domain and parameters
        return domain, params, f"{type(e).__name__}: {e}", ""


def test_every_notebook_renders_on_0_1_2_study_selections_and_extreme_values():
    from concurrent.futures import ProcessPoolExecutor
    sel = _selections()
    st = an.load_evidence({}).tables["studies"]
    assert (st["n_ig"] >= sel["1 study"]["min_n"]).sum() == 1 and (st["n_ig"] >= sel["2 studies"]["min_n"]).sum() == 2
    jobs = [(d, p) for p in sel.values() for d in DOMAINS]
    with ProcessPoolExecutor(2) as ex:
        results = list(ex.map(_run_quietly, jobs))
    failed = [(d, p, e) for d, p, e, _ in results if e]
    assert not failed, failed
    for d, p, _, html in results:
        body = _body(html)
        k = len(an.load_evidence(p).studies)
        assert f"{k} of {len(st)} included studies are in this selection" in body, (d, p)
        for pat in (r"Traceback", r"\bNaN\b", r"InputError", r"KeyError"):
            assert re.search(pat, body) is None, (d, p, pat)
