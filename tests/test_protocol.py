"""The protocol (data/protocol.yaml) and the recorded GRADE judgements (data/grade.csv) drive the summaries of
findings: validated with messages naming file, population/outcome (or row) and key (or column); a missing
judgement falls back to the rule and says so; a judgement that differs from the rule says what the rule
suggested; at most 7 outcomes per population, single-arm rates never among them."""
import re
import shutil

import pandas as pd
import pytest

from ivighelpers import analysis as an
from ivighelpers import grade as gr
from ivighelpers import sof
from ivighelpers.data import DATA_DIR, load_all
from ivighelpers.errors import DataValidationError
from ivighelpers.protocol import DOWN, MAX_OUTCOMES, load_judgements, load_protocol


@pytest.fixture(scope="module")
def ev():
    return an.load_evidence({})


@pytest.fixture(scope="module")
def rows(ev):
    return {(r.population, r.outcome.id): r for r in sof.protocol_sof(ev)}


def _copy(tmp_path):
    d = tmp_path / "data"
    shutil.copytree(DATA_DIR, d)
    return d


def _refused(tmp_path, name, find, replace, message):
    """A copy of data/ with one edit in ``name`` is refused with ``message``."""
    d = _copy(tmp_path)
    _edit(d, name, find, replace)
    with pytest.raises(DataValidationError, match=re.escape(message)):
        load_all(d)


def _edit(d, name, find, replace):
    p = d / name
    text = p.read_text()
    assert find in text, find
    p.write_text(text.replace(find, replace, 1))


# ---- the summary of findings -------------------------------------------------------------------

def test_one_summary_of_findings_per_population_with_at_most_seven_ranked_outcomes(ev, rows):
    proto = ev.tables["protocol"]
    assert [p.id for p in proto.populations] == ["dm_pm", "ibm", "jdm"]
    for p in proto.populations:
        got = [r for (pid, _), r in rows.items() if pid == p.id]
        assert 1 <= len(got) <= MAX_OUTCOMES
        assert [r.outcome.rank for r in got] == sorted(r.outcome.rank for r in got)
    # every row rests on comparative evidence or says there is none; no single-arm rate is a row
    for r in rows.values():
        assert all(t.comparison_id in r.outcome.evidence for t in r.results)
        if not r.results:
            assert r.relative_text() == "not measured" and "No randomised or controlled study" in r.statement


def test_the_refractory_dm_answer_is_the_randomised_one(rows):
    tis = rows[("dm_pm", "tis_response")]
    assert tis.studies_text() == "95 (1 RCT)"
    assert tis.relative_text().startswith("RR 1.80 (95% CI 1.26 to 2.56)")
    ctrl, ig = tis.risk_texts()
    assert ctrl == f"{1000 * 21 / 48:.0f} per 1,000"                # the placebo arm's risk, 21 of 48
    assert ig.startswith(f"{1000 * 37 / 47:.0f} per 1,000: 350 more per 1,000 (167 more to 532 more)")
    assert tis.grade["certainty"] == "moderate" and tis.statement.startswith("Immunoglobulin probably increases")
    te = rows[("dm_pm", "thromboembolic_events")]
    ctrl, ig = te.risk_texts()
    assert ctrl == "0 of 48 (no events)" and "0 per 1,000" not in ig          # never '0 per 1,000'
    assert te.grade["certainty"] == "very low" and te.statement.startswith("We are very uncertain")
    skin = rows[("dm_pm", "skin")]
    assert skin.risk_texts()[1].startswith("MD 8.2 lower") and skin.grade["certainty"] == "moderate"
    ibm = rows[("ibm", "muscle_strength")]
    assert ibm.k == 3 and ibm.participants == 77 and ibm.grade["certainty"] == "low"
    assert ibm.statement == "Immunoglobulin may result in little or no difference in muscle strength."


def test_a_judgement_that_differs_from_the_rule_says_what_the_rule_suggested(rows):
    r = rows[("dm_pm", "muscle_strength")]
    assert r.grade["differs"] == ["imprecision"] and r.grade["judged"]
    note = next(x for x in r.grade["footnotes"] if x.startswith("imprecision"))
    assert note.startswith("imprecision: very serious: 41 participants in two trials")
    assert "(recorded judgement; the rule suggested serious: 41 participants in 2 trials, not pooled" in note


def test_a_missing_judgement_falls_back_to_the_rule_marked_not_yet_judged(ev, rows):
    r = rows[("dm_pm", "tis_response")]
    suggestion = sof._with_mid(r.results[0], r.outcome.mid)
    g = gr.apply(suggestion, None, "dm_pm", "tis_response")
    assert not g["judged"] and g["certainty"] == suggestion["certainty"] == "moderate"
    assert g["footnotes"][0].startswith("imprecision: serious (the rule's suggestion; not yet judged)")
    assert g["footnotes"][-1].startswith("not yet judged by the review team for risk of bias")
    # one domain judged more severely than the rule: the certainty follows the judgement
    j = pd.DataFrame([{"population": "dm_pm", "outcome": "tis_response", "domain": "risk_of_bias",
                       "judgement": "serious", "reason": "unblinding by infusion reactions", "rule_suggestion": "not_serious",
                       "date": "2026-12-01", "judged_by": "test"}])
    g = gr.apply(suggestion, j, "dm_pm", "tis_response")
    assert g["certainty"] == "low" and g["differs"] == ["risk_of_bias"] and not g["judged"]
    assert any(x.startswith("risk of bias: serious: unblinding by infusion reactions (recorded judgement; the rule "
                            "suggested not serious") for x in g["footnotes"])


def test_a_judgement_made_under_another_rule_suggestion_asks_to_be_re_judged(rows):
    r = rows[("dm_pm", "tis_response")]
    suggestion = sof._with_mid(r.results[0], r.outcome.mid)
    j = pd.DataFrame([{"population": "dm_pm", "outcome": "tis_response", "domain": "imprecision",
                       "judgement": "serious", "reason": "small trial", "rule_suggestion": "very_serious",
                       "date": "2026-01-01", "judged_by": "test"}])
    g = gr.apply(suggestion, j, "dm_pm", "tis_response")
    assert g["stale"] == ["imprecision"]
    assert any("(very serious then, serious now): re-judge" in x for x in g["footnotes"])


def test_the_minimal_important_difference_can_rate_imprecision_down(rows):
    sae = rows[("dm_pm", "serious_adverse_events")]
    dom = sof._with_mid(sae.results[0], 20)["domains"]["imprecision"]
    assert "minimal important difference (20 per 1,000)" in dom["reason"]
    tis = rows[("dm_pm", "tis_response")]
    assert sof._with_mid(tis.results[0], 100) == tis.results[0].grade      # interval wholly above the MID
    wide = sof._with_mid(tis.results[0], 300)["domains"]["imprecision"]     # a MID inside the interval
    assert wide["levels"] == 1 and "(+167 to +532 per 1,000)" in wide["reason"]


def test_every_sof_outcome_with_evidence_is_judged_in_every_domain(rows):
    for r in rows.values():
        if r.results:
            assert r.grade["judged"], (r.population, r.outcome.id)
            assert set(r.grade["recorded"]) >= set(DOWN)


# ---- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize("find,replace,message", [
    ("      - id: skin\n", "      - id: tis_response\n",
     "protocol.yaml: population 'dm_pm', outcome 3, key 'id': 'tis_response' listed twice"),
    ("        importance: important\n        label: \"Glucocorticoid-sparing\"",
     "        importance: optional\n        label: \"Glucocorticoid-sparing\"",
     "protocol.yaml: population 'dm_pm', outcome 4 ('glucocorticoid_sparing'), key 'importance': 'optional'"),
    ("evidence: [proderm_tis20]", "evidence: [proderm_tis99]",
     "key 'evidence': 'proderm_tis99' is not a comparison_id of randomised.csv or nonrandomised.csv"),
    ("evidence: [proderm_tis20]", "evidence: [dalakas1997_mrc]",
     "key 'evidence': 'dalakas1997_mrc' is a comparison in population 'ibm', not 'dm_pm'"),
    ("        mid: 100\n", "        mid: -5\n", "key 'mid': a number > 0 or null; got -5"),
    ("        report: strength\n", "        report: mood\n", "key 'report': 'mood' (allowed: strength, ck"),
])
def test_broken_protocol_names_file_population_outcome_and_key(tmp_path, find, replace, message):
    _refused(tmp_path, "protocol.yaml", find, replace, message)


def test_more_than_seven_outcomes_is_refused(tmp_path):
    d = _copy(tmp_path)
    p = d / "protocol.yaml"
    text = p.read_text()
    block = text[text.index("      - id: infusion_reactions"):text.index("\n  - id: ibm")]
    p.write_text(text.replace(block, block + "\n" + block.replace("infusion_reactions", "eighth").replace(
        "rank: 7", "rank: 8"), 1))
    with pytest.raises(DataValidationError, match=re.escape(
            "protocol.yaml: population 'dm_pm', key 'outcomes': 1 to 7 outcomes (GRADE: at most 7 per summary of "
            "findings); got 8")):
        load_all(d)


@pytest.mark.parametrize("find,replace,message", [
    ("dm_pm,tis_response,risk_of_bias", "dm_pm,tis_reply,risk_of_bias",
     "grade.csv: row 2, column outcome: 'tis_reply' is not an outcome of population 'dm_pm' in protocol.yaml"),
    ("dm_pm,tis_response,risk_of_bias", "dm_pm,tis_response,bias",
     "grade.csv: row 2, column domain: 'bias' is not a GRADE domain (allowed: risk_of_bias, inconsistency"),
    ("dm_pm,tis_response,risk_of_bias,not_serious", "dm_pm,tis_response,risk_of_bias,minor",
     "grade.csv: row 2, column judgement: 'minor' is not a judgement for risk_of_bias (allowed: not_serious, "
     "serious, very_serious)"),
    ("dm_pm,tis_response,risk_of_bias", "adults,tis_response,risk_of_bias",
     "grade.csv: row 2, column population: 'adults' is not a population of protocol.yaml"),
    ("dm_pm,tis_response,inconsistency", "dm_pm,tis_response,risk_of_bias",
     "grade.csv: row 3: a second judgement for dm_pm / tis_response / risk_of_bias"),
    (",URL:https://training.cochrane.org/handbook/current/chapter-14\n", ",Cochrane handbook\n",
     "grade.csv: row 2, column source: 'Cochrane handbook' is not PMID:<digits>, DOI:10.<...> or URL:<address>"),
    ("aggarwal2022-01; aggarwal2022-02,", "aggarwal2022-01; aggarwal2022-99,",
     "grade.csv: row 2, column rows: 'aggarwal2022-99' is not a result_id in outcomes.csv"),
])
def test_broken_judgements_name_file_row_and_column(tmp_path, find, replace, message):
    _refused(tmp_path, "grade.csv", find, replace, message)


def test_a_judgement_without_its_reason_is_refused(tmp_path):
    d = _copy(tmp_path)
    df = pd.read_csv(d / "grade.csv", dtype=str, keep_default_na=False)
    df.loc[4, "reason"] = " "
    df.to_csv(d / "grade.csv", index=False)
    with pytest.raises(DataValidationError, match=re.escape("grade.csv: row 6, column reason: a judgement needs its "
                                                            "reason")):
        load_judgements(load_protocol(d / "protocol.yaml"), d / "grade.csv")


def test_the_rules_the_protocol_declares_are_the_rules_the_code_applies(ev):
    rules = ev.tables["protocol"].rules
    from ivighelpers import trials as tr
    assert rules["decline_i2"] == an.DECLINE_I2 and rules["decline_pi_share"] == 0.5
    assert tuple(rules["imprecision"]["rr_thresholds"]) == tr.RR_THRESHOLDS
    assert rules["imprecision"]["optimal_information_size_events"] == 300
    assert rules["imprecision"]["optimal_information_size_participants"] == 400
    assert rules["subgroups"] == list(an.SUBGROUP_VARIABLES)
    # the statements the rules make about themselves, in their docstrings
    assert "fewer than 30 events two levels" in tr.suggest_grade.__doc__
    assert "k >= 10" in gr.suggest.__doc__


def test_the_landing_page_has_one_summary_of_findings_per_population_and_the_observed_rates_apart(ev, tmp_path):
    import json
    import re as _re

    from ivighelpers.report import DOMAINS, write_index
    (tmp_path / "results").mkdir()
    for domain in DOMAINS:
        rows = sof.protocol_sof(ev, report=domain)
        (tmp_path / "results" / f"{domain}.json").write_text(json.dumps({
            "protocol_sof": sof.results_rows(rows, ev.tables["protocol"]),
            "observed_rates": [{"Outcome": "strength improved (uncontrolled)", "Studies (patients)": "7 (218)",
                                "Observed rate": "71.0%", "Certainty": "very low", "What this means": "..."}]
            if domain == "strength" else []}))
    page = write_index(list(DOMAINS.values()), ev.tables, out=tmp_path).read_text()
    heads = _re.findall(r"<h2>Summary of findings: ([^<]+)</h2>", page)
    assert heads == [p.label for p in ev.tables["protocol"].populations]
    tables = _re.findall(r"<h2>Summary of findings: .*?<tbody>(.*?)</tbody>", page, flags=_re.S)
    assert [t.count("<tr>") for t in tables] == [len(p.outcomes) for p in ev.tables["protocol"].populations]
    assert all(t.count("<tr>") <= MAX_OUTCOMES for t in tables)
    assert "sign test" not in "".join(tables) and "strength improved (uncontrolled)" not in "".join(tables)
    assert page.index("Observed rates in treated patients (uncontrolled)") > page.index("Summary of findings: juvenile")

