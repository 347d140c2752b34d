"""Releases of the living review and what changed between them (issue 17, parts 1-2)."""
import copy
import json
import re

import pytest

from ivighelpers import releases as rel
from ivighelpers.errors import InputError
from ivighelpers.notebook import code_fingerprint, data_fingerprint
from ivighelpers.report import DOMAINS


def _row(**kw):
    base = {"domain": "strength", "analysis": "rct_tis", "outcome": "TIS >= 20 (randomised)", "kind": "comparison",
            "measure": "RR", "k": 1, "participants": 95, "estimate": 1.80, "ci_lb": 1.26, "ci_ub": 2.56, "null": 1.0,
            "declined": False, "certainty": "moderate", "studies": ["aggarwal2022"]}
    return {**base, **kw}


def _release(version, sof, studies=("aggarwal2022",), results=None):
    return {"version": version, "search_date": "2026-11-30", "data": {}, "code": "x",
            "studies": {s: {"label": s, "year": 2022} for s in studies},
            "results": results or {"aggarwal2022-01": {"hash": "a", "study_id": "aggarwal2022", "notes": ""}},
            "sof": sof}


def test_unchanged_release_has_no_changed_conclusion():
    a = _release("2026-12-01", [_row()])
    d = rel.diff(a, copy.deepcopy(a))
    assert [o["changed"] for o in d["outcomes"]] == [False]
    assert not any(o["conclusion_changed"] for o in d["outcomes"])
    assert "Changed conclusions: none" in rel.diff_text(d)


@pytest.mark.parametrize("new,reason", [
    (_row(certainty="low"), "certainty moderate -> low"),
    (_row(estimate=1.30, ci_lb=0.90, ci_ub=1.90), "the CI now crosses the value of no effect"),
    (_row(estimate=0.50, ci_lb=0.30, ci_ub=0.80), "the direction of the effect changed"),
    (_row(estimate=None, ci_lb=None, ci_ub=None, k=0, participants=0), "no longer estimable"),
])
def test_changed_conclusions_are_flagged_with_the_reason(new, reason):
    d = rel.diff(_release("2026-12-01", [_row()]), _release("2027-06-01", [new]))
    o = d["outcomes"][0]
    assert o["changed"] and reason in o["conclusion_changed"]
    assert f"! strength: TIS >= 20 (randomised): {reason}" in rel.diff_text(d)


def test_a_narrower_ci_moves_numbers_but_not_the_conclusion():
    d = rel.diff(_release("a", [_row()]), _release("b", [_row(ci_lb=1.4, ci_ub=2.3, k=2, participants=140)]))
    o = d["outcomes"][0]
    assert o["changed"] and o["conclusion_changed"] == []
    assert "RR 1.80 (1.26 to 2.56), k = 1, 95 participants, certainty moderate -> RR 1.80 (1.40 to 2.30), k = 2, " \
           "140 participants" in rel.diff_text(d)


def test_single_arm_rates_have_no_null_so_only_certainty_and_estimability_count():
    rate = _row(analysis="s", outcome="strength improved", kind="proportion", measure="PLO", estimate=0.71,
                ci_lb=0.64, ci_ub=0.77, null=None, certainty="very low")
    moved = dict(rate, estimate=0.40, ci_lb=0.2, ci_ub=0.6)
    assert rel.conclusion_changes(rate, moved) == []
    assert rel.conclusion_changes(rate, dict(rate, certainty="low")) == ["certainty very low -> low"]


def test_studies_and_rows_added_removed_and_corrected_with_the_reason():
    old = _release("a", [_row()], results={"x-01": {"hash": "1", "study_id": "x", "notes": ""},
                                            "x-02": {"hash": "2", "study_id": "x", "notes": ""}}, studies=("x",))
    new = _release("b", [_row(), _row(analysis="new", outcome="CDASI")], studies=("x", "y"),
                   results={"x-01": {"hash": "1b", "study_id": "x", "notes": "curator: n corrected to 47 (table 2)"},
                            "y-01": {"hash": "3", "study_id": "y", "notes": ""}})
    d = rel.diff(old, new)
    assert d["studies_added"] == ["y"] and d["studies_removed"] == []
    assert d["results_added"] == ["y-01"] and d["results_removed"] == ["x-02"]
    assert d["results_corrected"] == [{"result_id": "x-01", "reason": "curator: n corrected to 47 (table 2)"}]
    assert "new outcome in this version" in next(o for o in d["outcomes"] if o["analysis"] == "new")["conclusion_changed"]


def _fake_build(tmp_path, fingerprint=None, sof=None):
    out = tmp_path / "reports"
    (out / "results").mkdir(parents=True)
    for d in DOMAINS:
        (out / "results" / f"{d}.json").write_text(json.dumps({
            "sof": sof if (sof is not None and d == "strength") else [],
            "fingerprint": {"data": fingerprint or data_fingerprint(), "code": code_fingerprint()}}))
    return out


def test_release_is_written_from_the_build_and_diff_exits_by_conclusion(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rel, "RELEASES", tmp_path / "releases")
    reports = _fake_build(tmp_path, sof=[{k: v for k, v in _row().items() if k != "domain"}])
    path = rel.make_release("2026-12-01", reports=reports)
    r = json.loads(path.read_text())
    assert r["version"] == "2026-12-01" and r["data"] == data_fingerprint() and r["search_date"]
    assert r["sof"][0]["domain"] == "strength" and r["sof"][0]["estimate"] == 1.80
    assert len(r["results"]) > 200 and "aggarwal2022" in r["studies"]
    with pytest.raises(InputError, match="release 2026-12-01 exists"):
        rel.make_release("2026-12-01", reports=reports)
    later = dict(r, version="2027-01-15", sof=[dict(r["sof"][0], certainty="low")])
    (tmp_path / "releases" / "2027-01-15.json").write_text(json.dumps(later))
    assert rel.main_diff(["--since", "2026-12-01", "--to", "2027-01-15"]) == 1
    assert "certainty moderate -> low" in capsys.readouterr().out
    assert rel.main_diff(["--since", "2026-12-01", "--to", "2026-12-01"]) == 0
    assert rel.main_diff(["--since", "1999-01-01"]) == 2
    assert "no release '1999-01-01'" in capsys.readouterr().err


def test_a_build_from_other_data_is_refused(tmp_path):
    reports = _fake_build(tmp_path, fingerprint={"studies.csv": "0" * 16})
    with pytest.raises(InputError, match="made from other data than data/ holds now: run make report"):
        rel.current_review(reports)


def test_the_recorded_releases_are_complete():
    versions = rel.list_releases()
    assert versions, "no release in data/releases"
    for v in versions:
        r = rel.load_release(v)
        assert r["version"] == v and r["sof"] and r["results"] and r["studies"] and r["data"]
        for row in r["sof"]:
            assert {"domain", "analysis", "outcome", "estimate", "ci_lb", "ci_ub", "k", "participants",
                    "certainty"} <= set(row)


def test_landing_page_names_the_version_and_what_changed(tmp_path, monkeypatch):
    from ivighelpers.report import _versions_html
    monkeypatch.setattr(rel, "RELEASES", tmp_path / "releases")
    reports = _fake_build(tmp_path, sof=[{k: v for k, v in _row().items() if k != "domain"}])
    assert "unreleased build (no release recorded yet" in _versions_html(reports)
    first = json.loads(rel.make_release("2026-12-01", reports=reports).read_text())
    page = _versions_html(reports)
    assert "<strong>Version 2026-12-01</strong>" in page and "first release" in page
    second = dict(first, version="2027-03-01", sof=[dict(first["sof"][0], certainty="low", k=2, participants=150)])
    (tmp_path / "releases" / "2027-03-01.json").write_text(json.dumps(second))
    # the current build equals neither release's numbers but has the same data as both: the page compares the
    # latest release with the one before it
    page = _versions_html(reports)
    assert "<h2>What changed since 2026-12-01</h2>" in page
    assert "<strong>Conclusion changed</strong> - TIS &gt;= 20 (randomised) (muscle strength report): certainty moderate -&gt; low" in page
    assert "href='../data/releases/2027-03-01.json'" in page and "href='../data/releases/2026-12-01.json'" in page


def test_a_second_release_on_the_same_day_is_numbered_and_ordered(tmp_path, monkeypatch):
    monkeypatch.setattr(rel, "RELEASES", tmp_path / "releases")
    reports = _fake_build(tmp_path, sof=[{k: v for k, v in _row().items() if k != "domain"}])
    for v in ("2026-12-01", "2026-12-01.2", "2026-12-01.10", "2026-11-30"):
        rel.make_release(v, reports=reports)
    assert rel.list_releases() == ["2026-11-30", "2026-12-01", "2026-12-01.2", "2026-12-01.10"]
    for bad in ("2026-12-01.1", "2026-12-01.02", "2026-13-01", "v2"):
        with pytest.raises(InputError, match=re.escape(f"version={bad!r} must be a date, YYYY-MM-DD, or YYYY-MM-DD.N")):
            rel.make_release(bad, reports=reports)


def test_a_ci_that_comes_to_include_the_minimal_important_difference_changes_the_conclusion():
    a = {"certainty": "moderate", "estimate": -8.2, "ci_lb": -11.9, "ci_ub": -4.5, "null": 0.0, "measure": "MD",
         "mid": 4.0}
    b = dict(a, ci_lb=-11.0, ci_ub=-3.0)
    assert rel.conclusion_changes(a, b) == ["the CI now includes the minimal important difference (4)"]
    r1 = {"certainty": "moderate", "estimate": 1.8, "ci_lb": 1.26, "ci_ub": 2.56, "null": 1.0, "measure": "RR",
          "mid": 100.0, "rd_per_1000": [350.0, 167.0, 532.0]}
    r2 = dict(r1, rd_per_1000=[300.0, 60.0, 540.0])
    assert rel.conclusion_changes(r1, r2) == ["the CI now includes the minimal important difference (100)"]
    assert rel.conclusion_changes(r1, dict(r1)) == []


def test_the_prisma_update_counts_records_and_studies_new_since_the_previous_version():
    old = {"search_date": "2026-11-30", "studies": {"a": {}, "b": {}},
           "screening": {"R1": {"date": "2026-11-01", "stage": "full_text", "decision": "included", "study_id": "a"},
                         "R2": {"date": "2026-11-01", "stage": "full_text", "decision": "included", "study_id": "b"}}}
    new = {"search_date": "2027-01-10", "studies": {"a": {}, "b": {}, "c": {}},
           "screening": {**old["screening"],
                         "R3": {"date": "2027-01-10", "stage": "full_text", "decision": "included", "study_id": "c"},
                         "R4": {"date": "2027-01-10", "stage": "title_abstract", "decision": "excluded", "study_id": ""}}}
    pu = rel.prisma_update(old, new)
    assert pu == {"previous_studies": 2, "new_records": 2, "new_records_excluded": 1, "new_studies_included": ["c"],
                  "total_studies": 3}
    legacy = {k: v for k, v in old.items() if k != "screening"}      # a release written before screening was kept
    assert rel.prisma_update(legacy, new)["new_records"] == 2
