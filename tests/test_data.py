"""The evidence base: validation of the real files and of deliberately broken copies."""
import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ivighelpers.data import DATA_DIR, DOMAINS, SCHEMA, load_all, load_table, prisma_counts, summary_text
from ivighelpers.errors import DataValidationError


@pytest.fixture(scope="module")
def tables():
    return load_all()


def test_real_data_is_valid_and_large_enough(tables):
    st = tables["studies"]
    assert len(st) >= 40
    assert st["study_id"].is_unique
    assert set(tables["outcomes"]["domain"]) <= set(DOMAINS)
    # every domain the seeds name has data
    for dom in ("strength", "ck", "steroid", "safety", "response", "relapse", "time_to_response", "skin", "dysphagia", "lung"):
        assert (tables["outcomes"]["domain"] == dom).any(), dom


def test_every_row_has_a_source_and_location(tables):
    for name in ("studies", "outcomes", "risk_of_bias", "published_estimates"):
        df = tables[name]
        assert (df["source"].str.len() > 0).all(), name
    assert (tables["outcomes"]["location"].str.len() > 0).all()


def test_every_study_has_risk_of_bias_with_overall(tables):
    rob = tables["risk_of_bias"]
    assert set(rob["study_id"]) == set(tables["studies"]["study_id"])
    overall = rob[rob["domain"].str.lower() == "overall"]
    assert set(overall["study_id"]) == set(tables["studies"]["study_id"])


def test_prisma_counts_add_up(tables):
    p = prisma_counts(tables)
    assert p["records_screened"] + p["duplicates_removed"] == p["records_screened_rows"]
    assert p["records_excluded"] + p["records_included"] + p["studies_awaiting"] == p["records_screened"]
    assert sum(p["exclusion_reasons"].values()) == p["records_excluded"]
    assert p["studies_included"] == len(tables["studies"])


def test_derived_values_are_flagged(tables):
    oc = tables["outcomes"]
    raw = load_table("outcomes")
    derived = oc["derived"] != ""
    assert derived.any()
    # a derived count was empty in the source file and a percentage was printed
    cnt = oc["derived"].str.contains("count_from_percent")
    assert raw.loc[cnt, "events"].isna().all() and raw.loc[cnt, "percent"].notna().all()
    assert (oc.loc[~derived, "events"].fillna(-1) == raw.loc[~derived, "events"].astype("Float64").fillna(-1)).all()


def test_loading_never_modifies_the_files():
    def digest():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(DATA_DIR.glob("*.csv"))}
    before = digest()
    load_all()
    assert digest() == before


def test_summary_mentions_counts(tables):
    text = summary_text(tables)
    assert f"Studies included: {len(tables['studies'])}" in text
    assert "PRISMA" in text


def test_data_dictionary_documents_every_column():
    readme = (DATA_DIR / "README.md").read_text()
    for name, schema in SCHEMA.items():
        assert f"## {name}.csv" in readme
        for col in schema:
            assert f"| {col} |" in readme, (name, col)


# ---- deliberately broken copies -------------------------------------------------------------

@pytest.fixture
def copy(tmp_path):
    for p in [*DATA_DIR.glob("*.csv"), *DATA_DIR.glob("*.yaml")]:
        shutil.copy(p, tmp_path / p.name)
    return tmp_path


def _edit(path: Path, row: int, col: str, value):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row, col] = value
    df.to_csv(path, index=False)


@pytest.mark.parametrize("table,row,col,value,message", [
    ("outcomes", 0, "events", "999", r"outcomes.csv: row 2, column events: events \(999\) > n"),
    ("outcomes", 3, "source", "", r"outcomes.csv: row 5, column source: value required"),
    ("outcomes", 3, "source", "my memory", r"outcomes.csv: row 5, column source: 'my memory' must be PMID"),
    ("outcomes", 1, "sd_pre", "-2", r"outcomes.csv: row 3, column sd_pre: '-2' must be >= 0"),
    ("outcomes", 2, "n", "twelve", r"outcomes.csv: row 4, column n: 'twelve' must be a number"),
    ("outcomes", 2, "n", "12.5", r"outcomes.csv: row 4, column n: '12.5' must be a whole number"),
    ("outcomes", 0, "domain", "mood", r"outcomes.csv: row 2, column domain: 'mood' allowed: strength, ck"),
    ("outcomes", 0, "percent", "120", r"outcomes.csv: row 2, column percent: '120' must be <= 100"),
    ("studies", 0, "design", "anecdote", r"studies.csv: row 2, column design: 'anecdote' allowed: rct"),
    ("studies", 0, "n_ig", "100000", r"studies.csv: row 2, column n_ig: 100000 > n_total"),
    ("studies", 1, "study_id", "Bad ID", r"studies.csv: row 3, column study_id: 'Bad ID' must be lowercase"),
    ("risk_of_bias", 0, "judgement", "fine", r"risk_of_bias.csv: row 2, column judgement: 'fine' allowed"),
    ("outcomes", 2, "n", "0", r"outcomes.csv: row 4, column n: '0' must be >= 1"),
    ("studies", 0, "cohort_id", "ancona_typo", r"studies.csv: row 2, column cohort_id: 'ancona_typo' is neither the "
                                                r"study's own id .* nor a cohort_id listed in cohorts.csv"),
    ("studies", 0, "year", "2029", r"studies.csv: row 2, column year: 2029 is after the date the search ran up to"),
])
def test_broken_copy_fails_with_file_row_column(copy, table, row, col, value, message):
    _edit(copy / f"{table}.csv", row, col, value)
    with pytest.raises(DataValidationError, match=message):
        load_all(copy)


def test_outcome_pointing_to_unknown_study(copy):
    df = pd.read_csv(copy / "outcomes.csv", dtype=str, keep_default_na=False)
    df.loc[0, "study_id"] = "nobody2099"
    df.loc[0, "result_id"] = "nobody2099-01"
    df.to_csv(copy / "outcomes.csv", index=False)
    with pytest.raises(DataValidationError, match=r"outcomes.csv: row 2, column study_id: 'nobody2099' is not a study_id"):
        load_all(copy)


def test_duplicate_study_id(copy):
    df = pd.read_csv(copy / "studies.csv", dtype=str, keep_default_na=False)
    df = pd.concat([df, df.iloc[[0]]])
    df.to_csv(copy / "studies.csv", index=False)
    with pytest.raises(DataValidationError, match=rf"studies.csv: row {len(df) + 1}, column study_id: duplicate ID"):
        load_all(copy)


def test_subtype_counts_exceeding_total(copy):
    df = pd.read_csv(copy / "studies.csv", dtype=str, keep_default_na=False)
    i = df.index[df["n_total"] != ""][0]
    df.loc[i, "n_dm"] = str(int(df.loc[i, "n_total"]) + 1)
    df.to_csv(copy / "studies.csv", index=False)
    with pytest.raises(DataValidationError, match=rf"studies.csv: row {i + 2}, column n_dm..n_other: subtype counts add up"):
        load_all(copy)


def test_missing_and_unknown_columns(copy):
    df = pd.read_csv(copy / "search_log.csv", dtype=str, keep_default_na=False)
    df.drop(columns=["query"]).to_csv(copy / "search_log.csv", index=False)
    with pytest.raises(DataValidationError, match=r"search_log.csv: missing column\(s\) query"):
        load_all(copy)
    df.assign(colour="red").to_csv(copy / "search_log.csv", index=False)
    with pytest.raises(DataValidationError, match=r"search_log.csv: unknown column\(s\) colour"):
        load_all(copy)


def test_unparseable_csv(copy):
    (copy / "studies.csv").write_text('study_id,title\n"unterminated,quote\n')
    with pytest.raises(DataValidationError, match=r"studies.csv"):
        load_all(copy)


# ---- round 2 structure: cohorts, outcome vocabulary, extraction levels --------------------------

def _row_of(path, col, value):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return int(df.index[df[col] == value][0])


@pytest.mark.parametrize("table,col,value,message", [
    ("outcomes", "outcome_code", "feeling_better", r"outcomes.csv: row 2, column outcome_code: 'feeling_better' allowed: tis_minimal"),
    ("outcomes", "outcome_code", "", r"outcomes.csv: row 2, column outcome_code: value required"),
    ("outcomes", "subgroup", "martians", r"outcomes.csv: row 2, column subgroup: 'martians' allowed: all, dm"),
    ("outcomes", "extraction_level", "memory", r"outcomes.csv: row 2, column extraction_level: 'memory' allowed: abstract, tables, full_text"),
    ("outcomes", "direction", "sideways", r"outcomes.csv: row 2, column direction: 'sideways' allowed: increase"),
    ("studies", "cohort_id", "", r"studies.csv: row 2, column cohort_id: value required"),
    ("studies", "extraction_level", "skimmed", r"studies.csv: row 2, column extraction_level: 'skimmed' allowed"),
])
def test_round2_columns_are_validated(copy, table, col, value, message):
    _edit(copy / f"{table}.csv", 0, col, value)
    with pytest.raises(DataValidationError, match=message):
        load_all(copy)


def test_outcome_code_must_belong_to_the_row_domain(copy):
    i = _row_of(copy / "outcomes.csv", "outcome_code", "ck_level")
    _edit(copy / "outcomes.csv", i, "outcome_code", "ae_headache")
    with pytest.raises(DataValidationError, match=rf"outcomes.csv: row {i + 2}, column outcome_code: 'ae_headache' "
                                                  r"belongs to domain 'safety', but the row's domain is 'ck'"):
        load_all(copy)


def test_grouped_report_needs_a_reason(copy):
    co = pd.read_csv(copy / "cohorts.csv", dtype=str, keep_default_na=False)
    gone = co.iloc[0]
    co.iloc[1:].to_csv(copy / "cohorts.csv", index=False)
    i = _row_of(copy / "studies.csv", "study_id", gone["study_id"])
    with pytest.raises(DataValidationError, match=rf"studies.csv: row {i + 2}, column cohort_id: {gone['study_id']} shares "
                                                  rf"cohort '{gone['cohort_id']}' with another report but has no row in "
                                                  r"cohorts.csv giving the reason"):
        load_all(copy)


def test_cohort_row_must_agree_with_studies(copy):
    _edit(copy / "cohorts.csv", 0, "cohort_id", "elsewhere")
    with pytest.raises(DataValidationError, match=r"cohorts.csv: row 2, column cohort_id: 'elsewhere' but studies.csv gives"):
        load_all(copy)


def test_every_overlap_named_in_the_issues_has_a_decision(tables):
    cid = tables["studies"].set_index("study_id")["cohort_id"]
    pairs = tables["cohort_pairs"]
    dec = {frozenset((a, b)): d for a, b, d in zip(pairs["study_a"], pairs["study_b"], pairs["decision"])}
    # issue 15: palermo_nd is a multicentre hf-SCIg series, not the Ancona cohort; the NIH IBM trials; Paris reports
    for a, b, want in (("palermo_nd", "danieli2011", "possible_overlap"), ("palermo_nd", "barsotti_nd", "possible_overlap"),
                       ("palermo_nd", "anon_jcm2020_hmgcr", "possible_overlap"), ("dalakas1997", "dalakas2001", "possible_overlap"),
                       ("cherin2015", "cherin2016", "same_cohort"), ("cherin1994", "cherin2002", "possible_overlap"),
                       ("almayouf2000", "lang1991", "same_cohort"), ("manlhiot2008", "almayouf2000", "same_cohort"),
                       ("ma2023", "ualberta_nd", "possible_overlap")):
        assert dec[frozenset((a, b))] == want, (a, b)
    assert cid["palermo_nd"] != cid["danieli2011"] and cid["danieli2011"] == cid["danieli2022"] == cid["gambini2014"]
    assert (pairs["reason"].str.len() > 30).all() and (tables["cohorts"]["reason"].str.len() > 40).all()


def test_a_pair_decision_that_disagrees_with_the_cohort_ids_is_refused(copy):
    i = _row_of(copy / "cohort_pairs.csv", "decision", "same_cohort")
    _edit(copy / "cohort_pairs.csv", i, "decision", "distinct")
    with pytest.raises(DataValidationError, match=rf"cohort_pairs.csv: row {i + 2}, column decision: 'distinct', but "
                                                  r"studies.csv gives .*the same cohort shares one cohort_id"):
        load_all(copy)


def test_a_possible_overlap_in_a_pool_gets_a_sensitivity_analysis_without_the_smaller(tables):
    from ivighelpers import analysis as an
    ev = an.load_evidence({}, tables=tables)
    a = an.proportion_analysis(ev, "x", "any improvement", "any_improvement", population="non_ibm")
    ids = set(a.data["study_id"])
    assert {"cherin1994", "cherin2002"} <= ids                        # a possible overlap: both analysed
    row = a.sensitivity[a.sensitivity["analysis"].str.startswith("without the smaller report")]
    assert len(row) == 1 and "Cherin 1994" in row["analysis"].iloc[0] and row["k"].iloc[0] == a.k - 1
    assert any("Possible overlap of patients" in n and "Cherin 1994 and Cherin 2002" in n for n in a.notes)


def test_audit_fixes_hold(tables):
    oc = tables["outcomes"].set_index("result_id")
    # duplicate rows became one row each
    for gone in ("dobloug2012-05", "dobloug2012-06", "lim2021-01", "lim2021-06", "bounfour2014-07", "bounfour2014-08"):
        assert gone not in oc.index
    # the Taiwan 1997 renal row counts episodes, not patients and not infusions (audit v3: the 2 episodes had been
    # stored as n_infusions)
    renal = oc[(oc["study_id"] == "anon_pmid9151463") & (oc["outcome_code"] == "ae_renal")]
    assert len(renal) == 1 and pd.isna(renal["events"].iloc[0]) and renal["n_events"].iloc[0] == 2
    assert pd.isna(renal["n_infusions"].iloc[0])
    # hoff2021 is a combined pulse-methylprednisolone + IVIG arm
    assert (oc.loc[oc["study_id"] == "hoff2021", "combined_regimen"].str.contains("methylprednisolone")).all()
    # Lang 1991 is included
    assert "lang1991" in set(tables["studies"]["study_id"])


def test_prisma_stages_add_up(tables):
    p = prisma_counts(tables)
    assert p["records_screened"] + p["duplicates_removed"] == p["records_screened_rows"]
    assert p["records_screened"] - p["excluded_title_abstract"] == p["reports_sought"]
    assert p["reports_sought"] - p["reports_not_retrieved"] == p["reports_assessed"]
    assert p["reports_assessed"] - p["excluded_full_text"] == p["records_included"] + p["studies_awaiting"]
    assert p["studies_awaiting"] == 2 and set(p["awaiting"]) == {"Sharf 2024", "Wang 2022"}
    assert sum(p["reasons_title_abstract"].values()) == p["excluded_title_abstract"]
    assert all(not k.startswith(("other:", "no_", "not_")) for k in p["exclusion_reasons"])   # plain words, not codes


def test_summary_reports_cohort_merging_and_levels(tables):
    from ivighelpers.data import summary_text
    txt = summary_text(tables)
    assert "before -> after merging reports of one cohort" in txt
    assert "Studies with result rows read at each level:" in txt


def _rows_text(path):
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_header_only_outcomes_is_refused(copy):
    lines = _rows_text(copy / "outcomes.csv")
    (copy / "outcomes.csv").write_text(lines[0], encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"outcomes.csv: has a header but no rows; at least one result row"):
        load_all(copy)


def test_empty_file_is_refused_with_what_it_needs(copy):
    (copy / "studies.csv").write_bytes(b"")
    with pytest.raises(DataValidationError, match=r"studies.csv: the file is empty; it needs the header row of studies "
                                                  r"\(study_id, first_author"):
        load_all(copy)


def test_semicolon_delimited_file_says_so(copy):
    df = pd.read_csv(copy / "cohorts.csv", dtype=str, keep_default_na=False)
    df.to_csv(copy / "cohorts.csv", index=False, sep=";")
    with pytest.raises(DataValidationError, match=r"cohorts.csv: row 1: the header is separated by semicolons"):
        load_all(copy)


def test_non_utf8_byte_names_the_row(copy):
    lines = _rows_text(copy / "studies.csv")
    raw = "".join(lines[:3]).encode("utf-8") + "".join(lines[3]).encode("latin-1").replace(b",", b",\xe9", 1) \
        + "".join(lines[4:]).encode("utf-8")
    (copy / "studies.csv").write_bytes(raw)
    with pytest.raises(DataValidationError, match=r"studies.csv: row 4: byte 0xe9 is not UTF-8 text; save the file as UTF-8"):
        load_all(copy)


def test_unbalanced_quote_names_the_row(copy):
    lines = _rows_text(copy / "cohorts.csv")
    lines[2] = lines[2].replace(",", ',"', 1)
    (copy / "cohorts.csv").write_text("".join(lines), encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"cohorts.csv: row \d+: a quoted field is not closed"):
        load_all(copy)


# ---- the meaning-level audit (issue 15): the record, and the classes a machine can catch ----------------------

AUDIT = DATA_DIR / "extraction" / "audit_v3" / "audit.csv"


def test_the_audit_lists_every_row_and_its_changes_hold(tables):
    au = pd.read_csv(AUDIT, dtype=str, keep_default_na=False)
    raw = pd.read_csv(DATA_DIR / "outcomes.csv", dtype=str, keep_default_na=False).set_index("result_id")
    assert set(raw.index) <= set(au["result_id"])                # every row re-read
    assert set(au["verdict"]) <= {"ok", "change", "exclude", "unverifiable"}
    assert set(au["decision"]) <= {"keep", "apply", "reject"}
    changes = au[au["decision"] == "apply"]
    assert len(changes) >= 60 and (changes["error_class"] != "").all() and (changes["reason"].str.len() > 20).all()
    for a in changes.itertuples():                                # each applied change is what the data hold
        if a.result_id in raw.index:
            assert raw.at[a.result_id, a.field] == a.new, (a.result_id, a.field)
            assert "[audit v3 2026-12-01: " + a.field in raw.at[a.result_id, "notes"]
    # the classes the issue names, fixed where they occurred
    oc = tables["outcomes"].set_index("result_id")
    for rid in ("aggarwal2022-50", "aggarwal2022-51", "aggarwal2022-52", "aggarwal2022-r2-41", "aggarwal2022-r2-42",
                "ma2023-04", "hoff2021-r2-01"):
        assert oc.at[rid, "outcome_code"] == "other", rid
    assert oc.at["danieli2022-03", "outcome_code"] == "dysphagia_score" and pd.isna(oc.at["danieli2022-03", "n"])
    assert oc.at["walter2000-05", "outcome_code"] == "other" and oc.at["walter2000-05", "measure"] != "ae_infection"
    assert pd.isna(oc.at["anon_pedres1997-r2-01", "n"]) and pd.isna(oc.at["bounfour2014-06", "n"])
    assert oc.at["levy2010-r2-01", "combined_regimen"].startswith("IVIG and/or methotrexate")


def test_every_row_names_the_kind_of_page_its_number_was_read_on(tables):
    from ivighelpers.data import SECONDARY_SOURCES, SOURCE_TYPES
    st = tables["outcomes"]["source_type"]
    assert st.isin(SOURCE_TYPES).all()
    prim = tables["outcomes"].set_index("result_id")["source_type"]
    assert prim["aggarwal2022-01"] == "news" and prim["dalakas1993-12"] == "other_review"
    assert set(SECONDARY_SOURCES) == {"news", "manufacturer", "other_review"}


def test_a_binary_code_holding_an_effect_estimate_is_refused(copy):
    i = _row_of(copy / "outcomes.csv", "result_id", "hoff2021-r2-01")
    _edit(copy / "outcomes.csv", i, "outcome_code", "complete_response")    # as it was before the audit
    with pytest.raises(DataValidationError, match=rf"outcomes.csv: row {i + 2}, column estimate: 'complete_response' "
                                                  r"counts patients .* effect estimate .* under 'other'"):
        load_all(copy)


def test_a_binary_code_holding_a_score_is_refused(copy):
    i = _row_of(copy / "outcomes.csv", "result_id", "giannini2021-01")
    _edit(copy / "outcomes.csv", i, "outcome_code", "dysphagia_improved")
    _edit(copy / "outcomes.csv", i, "mean_post", "12")
    with pytest.raises(DataValidationError, match=rf"row {i + 2}, column mean_post: 'dysphagia_improved' counts patients"
                                                  r".* a score belongs under a continuous code"):
        load_all(copy)


def test_episodes_stored_as_infusions_are_refused(copy):
    i = _row_of(copy / "outcomes.csv", "result_id", "anon_pmid9151463-r2-02")
    _edit(copy / "outcomes.csv", i, "n_infusions", "2")                     # the 2 fever episodes, as first entered
    with pytest.raises(DataValidationError, match=rf"row {i + 2}, column n_infusions: 2 infusions < n = 7 .*belong in "
                                                  "n_events"):
        load_all(copy)


def test_the_same_events_twice_under_one_code_are_refused(copy):
    i = _row_of(copy / "outcomes.csv", "result_id", "aggarwal2022-r2-32")    # drug-related thromboembolic, placebo
    _edit(copy / "outcomes.csv", i, "outcome_code", "ae_thromboembolic")    # beside the all-causality row r2-30
    with pytest.raises(DataValidationError, match=r"'ae_thromboembolic' twice for study 'aggarwal2022', arm 'placebo'.*"
                                                  "second causality basis"):
        load_all(copy)
