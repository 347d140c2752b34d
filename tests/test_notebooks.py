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


def _results(name):
    return json.loads((REPORTS / "results" / f"{name}.json").read_text())


def _body(html: str) -> str:
    """The rendered report without the appendix (the run stamp lists parameter names on purpose)."""
    text = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    return text.split("Appendix: run stamp")[0]


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
    assert res["analyses"]["rct_tis"]["k"] == 1


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
    for pat in FORBIDDEN:
        m = re.search(pat, body)
        assert m is None, f"{domain}: {pat!r} in {body[max(0, m.start() - 80):m.end() + 80]!r}"
    assert external_references(html) == []
    assert "data:image/png;base64" in html
    assert "ivighelpers import" not in html


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
    want = {f"data/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in DATA_DIR.glob("*.csv")}
    want["ivighelpers (code)"] = code_fingerprint()
    for name in DOMAINS.values():
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        text = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                         for o in c.get("outputs", []))
        got = dict(re.findall(r"\| (data/\S+|ivighelpers \(code\)) \| `([0-9a-f]{16})` \|", text))
        assert got == want, f"{name} is stale: re-run `make notebooks` (differs: " \
                            f"{sorted(k for k in want if got.get(k) != want[k])})"
