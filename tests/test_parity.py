"""Every metafor reference case, every field present, within the issue's tolerances."""
import filecmp
import json

import pytest

from ivighelpers import parity

CASES = list(parity.load_cases())
EXTRA = list(parity.load_cases(parity.EXTRA))
SHARED = parity.REPO.parent / "shared" / "reference" / "metafor"


def test_all_reference_files_are_loaded():
    files = {stem for stem, _ in CASES}
    assert files == {"binary", "continuous", "moderators", "prepost", "proportions"}
    assert len(CASES) == 342


@pytest.mark.parametrize("stem,case", CASES, ids=[c["id"] for _, c in CASES])
def test_case_matches_metafor(stem, case):
    result = parity.run_case(stem, case)
    assert result.comparisons, "no field was compared"
    bad = [c for c in result.comparisons if not c.ok]
    assert not bad, "\n".join(f"{c.section}.{c.key}: expected {c.expected}, got {c.got} "
                              f"(rel. error {c.rel_error:.2e} > {c.tol:g})" for c in bad[:10])


@pytest.mark.parametrize("stem,case", EXTRA, ids=[c["id"] for _, c in EXTRA])
def test_project_case_matches_metafor(stem, case):
    """k = 2 leave-one-out/influence and to="none" cases, computed by metafor 3.8-1 (generate.R beside them)."""
    result = parity.run_case(stem, case)
    sections = {c.section for c in result.comparisons}
    assert "expected" in sections and "escalc" in sections
    if "influence" in case:
        assert {"influence", "leave_one_out"} <= sections
    bad = [c for c in result.comparisons if not c.ok]
    assert not bad, "\n".join(f"{c.section}.{c.key}: expected {c.expected}, got {c.got}" for c in bad[:10])


def test_extra_cases_cover_k2_under_both_tests_and_missing_effect_sizes():
    ids = {c["id"] for _, c in EXTRA}
    assert {"synthetic-k2-PLO-REML-z", "synthetic-k2-PLO-REML-knha", "synthetic-k2-MD-REML-knha"} <= ids
    none_cases = [c for _, c in EXTRA if (c["escalc"].get("options") or {}).get("to") == "none"]
    assert none_cases and all(None in c["yi"] for c in none_cases)
    assert json.loads((parity.EXTRA / "extra.json").read_text())["generator"].startswith("metafor 3.8")


def test_vendored_reference_is_loaded_without_shared(monkeypatch, tmp_path):
    # a clone without ../shared reads tests/reference/metafor: point the lookup at a repo-less location
    monkeypatch.delenv("IVIG_REFERENCE_DIR", raising=False)
    monkeypatch.setattr(parity, "REPO", tmp_path / "clone")
    monkeypatch.setattr(parity, "VENDORED", parity.VENDORED)
    assert parity.reference_dir() == parity.VENDORED
    assert len(list(parity.load_cases())) == 342


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared beside this clone")
def test_vendored_reference_equals_shared():
    shared = sorted(p.name for p in SHARED.glob("*.json"))
    vendored = sorted(p.name for p in parity.VENDORED.glob("*.json"))
    assert shared == vendored
    match, mismatch, errors = filecmp.cmpfiles(SHARED, parity.VENDORED, shared, shallow=False)
    assert not mismatch and not errors, f"tests/reference/metafor differs from ../shared: {mismatch or errors}"


def test_every_expected_key_is_compared():
    # a case whose expected block holds a key we silently skip would pass vacuously
    for stem, case in CASES[:: 7]:
        result = parity.run_case(stem, case)
        compared = {(c.section, c.key.split(".")[0]) for c in result.comparisons}
        for key in case["expected"]:
            if key in ("coefficients", "subgroups"):
                continue
            assert ("expected", key) in compared, (case["id"], key)


def test_report_prints_per_file_line():
    results = [parity.run_case(s, c) for s, c in CASES[:3]]
    text = parity.report(results)
    assert "binary" in text and "max rel. error" in text


def test_rel_error_flags_missing_and_mismatch():
    assert parity._rel_error(None, None) == 0.0
    assert parity._rel_error([], None) == 0.0
    assert parity._rel_error(1.0, None) == float("inf")
    assert parity._rel_error(None, 1.0) == float("inf")
    assert parity._rel_error(2.0, 2.0000001) == pytest.approx(5e-8)
    assert parity._rel_error([1, 2], [1, 2, 3]) == float("inf")
