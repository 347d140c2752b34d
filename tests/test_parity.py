"""Every metafor reference case, every field present, within the issue's tolerances."""
import pytest

from ivighelpers import parity

CASES = list(parity.load_cases())


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
