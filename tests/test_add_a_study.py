"""Adding a study end to end, as data/README.md walks through it: extract to the templates, check, merge into
(a temporary copy of) data/, rebuild the affected report, diff. The diff names the new study and the summary-of-
findings row it moved. The review's own data/ and reports/ are never touched."""
import hashlib
import shutil

import pandas as pd
import pytest

from ivighelpers import extraction as ex
from ivighelpers import releases as rel
from ivighelpers.data import DATA_DIR, main as data_main
from ivighelpers.errors import DataValidationError
from ivighelpers.report import NOTEBOOKS, _execute


def _data_hashes():
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(DATA_DIR.glob("*.*"))}


def test_the_templates_are_the_schema_and_their_example_passes_the_check(tmp_path, capsys):
    assert (ex.TEMPLATE_DIR / "README.md").read_text() == ex.templates_readme()
    for name in ex.TABLES:
        t = pd.read_csv(ex.TEMPLATE_DIR / f"{name}.csv", dtype=str, keep_default_na=False)
        assert list(t.columns) == list(ex.dm.SCHEMA[name]), name
    assert data_main(["check", str(ex.TEMPLATE_DIR)]) == 0
    assert "extraction is valid: 1 outcomes row, 1 risk_of_bias row, 1 screening row, 1 studies row would be " \
           "added" in capsys.readouterr().out
    assert ex.EXAMPLE_ID not in pd.read_csv(DATA_DIR / "studies.csv", dtype=str)["study_id"].tolist()


def test_the_check_names_the_file_row_and_column(tmp_path):
    folder = tmp_path / "new"
    shutil.copytree(ex.TEMPLATE_DIR, folder)
    o = pd.read_csv(folder / "outcomes.csv", dtype=str, keep_default_na=False)
    o.loc[0, "events"] = "25"
    o.to_csv(folder / "outcomes.csv", index=False)
    with pytest.raises(DataValidationError, match=r"^outcomes.csv: row 2, column events: events \(25\) > n \(20\)"):
        ex.check(folder)
    shutil.copy(ex.TEMPLATE_DIR / "outcomes.csv", folder / "outcomes.csv")
    (folder / "screening.csv").unlink()          # an included study needs its screening record
    with pytest.raises(DataValidationError, match=r"after appending the extraction to a copy of data/: screening.csv: "
                                                  r"included study\(ies\) without an 'included' screening record: "
                                                  + ex.EXAMPLE_ID):
        ex.check(folder)
    (folder / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataValidationError, match=r"notes.csv: not a table of the review"):
        ex.check(folder)


def test_adding_a_study_moves_its_summary_row_and_diff_says_so(tmp_path, monkeypatch):
    before = _data_hashes()
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    # 1. extract: the template's example study, an uncontrolled series of 20 refractory DM/PM patients
    folder = tmp_path / "extraction"
    shutil.copytree(ex.TEMPLATE_DIR, folder)
    # 2-3. check and merge into the copy
    added = ex.merge(folder, data)
    assert added == {"outcomes": 1, "risk_of_bias": 1, "screening": 1, "studies": 1}
    # 4. rebuild the affected report on the copy (kernels read IVIG_DATA_DIR) and on the original
    out_old, out_new = tmp_path / "old", tmp_path / "new"
    nb = NOTEBOOKS / "01_strength.ipynb"
    assert _execute(nb, tmp_path / "old.ipynb", {"run_name": "e2e_old", "output_dir": str(out_old)}) is None
    monkeypatch.setenv("IVIG_DATA_DIR", str(data))
    assert _execute(nb, tmp_path / "new.ipynb", {"run_name": "e2e_new", "output_dir": str(out_new)}) is None
    monkeypatch.delenv("IVIG_DATA_DIR")
    # 5. diff
    d = rel.diff(rel.snapshot({"strength": out_old / "results.json"}, DATA_DIR),
                 rel.snapshot({"strength": out_new / "results.json"}, data))
    assert d["studies_added"] == [ex.EXAMPLE_ID] and d["results_added"] == [f"{ex.EXAMPLE_ID}-01"]
    row = next(o for o in d["outcomes"] if o["analysis"] == "strength_improved")
    assert row["changed"] and row["new"]["k"] == row["old"]["k"] + 1
    assert row["new"]["participants"] == row["old"]["participants"] + 20
    assert ex.EXAMPLE_ID in row["new"]["studies"]
    # the randomised summary of findings did not move: an uncontrolled series is not comparative evidence
    tis = next(o for o in d["outcomes"] if o["analysis"] == "dm_pm:tis_response")
    assert not tis["changed"]
    assert _data_hashes() == before                 # the review's own data/ never changed


def test_the_review_is_never_built_from_a_copy(tmp_path, monkeypatch, capsys):
    from ivighelpers.report import build_report
    monkeypatch.setenv("IVIG_DATA_DIR", str(tmp_path))
    assert build_report() == 2
    assert "IVIG_DATA_DIR is set" in capsys.readouterr().err
