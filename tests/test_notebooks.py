"""The notebooks run with non-default parameters, fail clearly on bad ones, and export offline HTML."""
import json

import papermill as pm
import pytest
from papermill.exceptions import PapermillExecutionError

from ivighelpers import analysis as an
from ivighelpers.errors import ParameterError
from ivighelpers.report import DOMAINS, NOTEBOOKS, REPORTS, export_html, external_references, run_domain, run_name

RESPONDERS = [("strength", "responders"), ("response", "responders")]


def _results(name):
    return json.loads((REPORTS / "results" / f"{name}.json").read_text())


def test_other_estimator_and_transform():
    params = {"method": "DL", "transform": "PFT", "test": "knha"}
    run_domain("strength", params, quiet=True)
    res = _results(run_name("strength", params))
    assert res["params"]["method"] == "DL" and res["params"]["transform"] == "PFT"
    got = res["analyses"]["strength_responders"]
    ev = an.load_evidence(params)
    ref = an.proportion_analysis(ev, "s", "s", RESPONDERS)
    assert got["k"] == ref.k >= 10
    assert got["summary"]["estimate"] == pytest.approx(ref.summary["estimate"], rel=1e-12)
    # and it differs from the default REML/PLO run, so the parameters really reached the notebook
    default = an.proportion_analysis(an.load_evidence({}), "s", "s", RESPONDERS)
    assert abs(got["summary"]["estimate"] - default.summary["estimate"]) > 1e-4


def test_randomised_trials_only():
    params = {"designs": ["rct", "crossover_rct"]}
    run_domain("strength", params, quiet=True)
    res = _results(run_name("strength", params))
    ev = an.load_evidence(params)
    assert set(ev.studies["design"]) <= {"rct", "crossover_rct"}
    got = res["analyses"]["strength_responders"]
    assert set(got["studies"]) <= set(ev.studies["study_id"])
    n_rct = int(ev.tables["studies"]["design"].isin(["rct", "crossover_rct"]).sum())
    assert res["k_studies_selected"] == len(ev.studies) == n_rct > 0


def test_filter_leaving_one_study_says_so():
    params = {"route": "SCIg", "population": "juvenile"}
    html = run_domain("strength", params, quiet=True)
    res = _results(run_name("strength", params))
    got = res["analyses"]["strength_responders"]
    assert got["k"] <= 1
    assert ("only one study" in got["sentence"]) or ("no study" in got["sentence"])
    assert got["sentence"] in html.read_text()


@pytest.mark.parametrize("domain", ["evidence", "safety"])
def test_filter_leaving_no_study_renders(domain):
    params = {"designs": ["registry"]}
    html = run_domain(domain, params, quiet=True).read_text()
    res = _results(run_name(domain, params))
    assert res["k_studies_selected"] == 0
    assert "Studies in this selection:** 0 of" in html or "Studies in this selection:</strong> 0 of" in html
    for a in res["analyses"].values():
        if isinstance(a, dict) and "sentence" in a:
            assert "no study in the current selection" in a["sentence"]


def test_invalid_value_fails_before_a_kernel_starts():
    with pytest.raises(ParameterError, match=r"method='XX' is not allowed; allowed: FE, DL, REML"):
        run_domain("strength", {"method": "XX"})
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['estimator'\]"):
        run_domain("strength", {"estimator": "DL"})
    with pytest.raises(ParameterError, match=r"domain='mood' is not known"):
        run_domain("mood", {})


def test_invalid_value_inside_the_notebook_names_the_parameter(tmp_path):
    with pytest.raises(PapermillExecutionError, match=r"transform='logit' is not allowed; allowed: PLO, PFT, PAS, PR, GLMM"):
        pm.execute_notebook(str(NOTEBOOKS / "01_strength.ipynb"), str(tmp_path / "bad.ipynb"),
                            parameters={"transform": "logit", "run_name": "bad"}, kernel_name="python3",
                            progress_bar=False, cwd=str(NOTEBOOKS))


def test_run_names_are_built_from_parameters():
    assert run_name("strength", {"method": "DL", "designs": ["rct", "crossover_rct"]}) == \
        "strength__designs-rct+crossover_rct__method-DL"
    assert run_name("ck", {"method": "REML"}) == "ck"


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_every_notebook_exports_offline_html_with_run_stamp(domain, tmp_path):
    src = NOTEBOOKS / f"{DOMAINS[domain]}.ipynb"
    copy = tmp_path / src.name
    copy.write_bytes(src.read_bytes())
    html = export_html(copy).read_text()
    assert "Run stamp" in html and "SHA-256" in html and "git commit" in html
    assert "| method |" not in html and "<td>method</td>" in html     # parameters shown as a table
    assert external_references(html) == []
    assert "data:image/png;base64" in html                              # figures embedded
    assert "ivighelpers import" not in html                             # code hidden


def test_notebooks_have_a_tagged_parameters_cell():
    import nbformat
    for name in DOMAINS.values():
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "method: str = " in tagged[0].source
        assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), f"{name} is not executed"
