"""Load, validate and summarise the evidence base in ``data/``.

``load_all()`` reads every curated file, checks it against ``SCHEMA`` (columns, types, allowed values,
events <= n, subgroup counts <= totals, a source on every row, unique IDs, every outcome and judgement
pointing to an existing study) and returns DataFrames. A problem raises ``DataValidationError`` naming
file, row (as in a spreadsheet: the header is row 1) and column. Files are only read, never written.

``python -m ivighelpers.data summary`` prints what the dataset holds; ``... validate`` only checks.
"""

from __future__ import annotations

import copy
import io
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .derive import derive_outcomes
from .errors import DataValidationError
from .vocabulary import EXTRACTION_LEVELS, OUTCOMES, SUBGROUPS

# The review's data; IVIG_DATA_DIR points a session (and the notebooks it runs) at another copy, e.g. to try an
# extraction on a temporary copy before merging it (data/README.md, "Adding a study"). ``data_dir()`` reads it
# when called (a notebook's process is forked from one that may have set it later); DATA_DIR is its value at import.
REVIEW_DATA = Path(__file__).resolve().parent.parent / "data"


def data_dir() -> Path:
    """The data folder in use: ``$IVIG_DATA_DIR`` if set, else the review's ``data/``."""
    return Path(os.environ.get("IVIG_DATA_DIR") or REVIEW_DATA)


DATA_DIR = data_dir()
_data_dir_now = data_dir          # for functions whose parameter is called data_dir

DOMAINS = ("strength", "ck", "steroid", "immunosuppressant", "safety", "response", "relapse",
           "time_to_response", "skin", "dysphagia", "lung", "function", "mortality")
EFFICACY_DOMAINS = ("strength", "response")   # a strength-specific response may be filed under either
# the kind of page a number was read on; the last three are secondary (they quote the study: a sensitivity
# analysis leaves them out, parameter exclude_secondary)
SOURCE_TYPES = ("journal_abstract", "journal_full_text", "journal_table", "abstract_index", "registry_results",
                "congress_abstract", "companion_paper", "thesis_or_repository", "other", "news", "manufacturer",
                "other_review")
SECONDARY_SOURCES = ("news", "manufacturer", "other_review")
SOURCE_WORDS = {"journal_abstract": "journal abstract", "journal_full_text": "journal full text",
                "journal_table": "journal table", "abstract_index": "index page reproducing the abstract",
                "registry_results": "registry results", "congress_abstract": "congress abstract",
                "companion_paper": "companion paper of the same study", "thesis_or_repository": "repository record",
                "other": "other page", "news": "news page", "manufacturer": "manufacturer's page",
                "other_review": "another review"}
SOURCE_RE = re.compile(r"^(PMID:\d+|DOI:10\.\S+|URL:https?://\S+)$")
IDENT_RE = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class Col:
    type: str                  # str | int | float | enum | ident | source
    required: bool = False
    allowed: tuple = ()
    min: float | None = None
    max: float | None = None


SCHEMA = {
    "studies": {
        "study_id": Col("ident", True), "first_author": Col("str"), "year": Col("int", min=1950, max=2030),
        "title": Col("str"), "journal": Col("str"), "pmid": Col("int"), "doi": Col("str"), "url": Col("str", True),
        "design": Col("enum", True, ("rct", "crossover_rct", "prospective_open", "retrospective_cohort", "case_series",
                                     "nonrandomized_controlled", "registry")),
        "country": Col("str"), "setting": Col("enum", True, ("single_centre", "multicentre", "registry", "unclear")),
        "population": Col("enum", True, ("adult", "juvenile", "mixed", "unclear")),
        "n_total": Col("int", min=1), "n_ig": Col("int", min=1),
        **{c: Col("int", min=0) for c in ("n_dm", "n_pm", "n_ibm", "n_imnm", "n_asyns", "n_jdm", "n_cadm", "n_other")},
        "route": Col("enum", True, ("IVIG", "SCIg", "both")), "product": Col("str"), "regimen": Col("str"),
        "line": Col("enum", True, ("first_line", "refractory", "maintenance", "mixed", "unclear")),
        "comparator": Col("str"), "follow_up_months": Col("float", min=0),
        "cohort_id": Col("ident", True), "concomitant": Col("str"),
        "extraction_level": Col("enum", True, EXTRACTION_LEVELS),
        "source": Col("source", True), "location": Col("str", True), "notes": Col("str"), "extraction_batches": Col("str"),
    },
    "outcomes": {
        "result_id": Col("str", True), "study_id": Col("ident", True), "domain": Col("enum", True, DOMAINS),
        "measure": Col("ident", True), "definition": Col("str"),
        "arm": Col("enum", True, ("ig", "placebo", "control", "ig_then_placebo", "placebo_then_ig")),
        "timepoint": Col("str"), "timepoint_months": Col("float", min=0), "n": Col("int", min=1),
        "events": Col("int", min=0), "percent": Col("float", min=0, max=100), "unit": Col("str"),
        **{c: Col("float") for c in ("mean_pre", "mean_post", "mean_change", "median_pre", "q1_pre", "q3_pre",
                                     "min_pre", "max_pre", "median_post", "q1_post", "q3_post", "min_post",
                                     "max_post", "estimate", "ci_lb", "ci_ub")},
        **{c: Col("float", min=0) for c in ("sd_pre", "sd_post", "sd_change")},
        "p_value": Col("str"), "ci_level": Col("float", min=0, max=1), "n_infusions": Col("int", min=0),
        "n_events": Col("int", min=0),
        "source": Col("source", True), "url": Col("str", True), "location": Col("str", True), "notes": Col("str"),
        "outcome_code": Col("enum", True, tuple(OUTCOMES)), "subgroup": Col("enum", True, SUBGROUPS),
        "comparison": Col("str"), "combined_regimen": Col("str"),
        "direction": Col("enum", False, ("increase", "decrease", "no_change")),
        "extraction_level": Col("enum", True, EXTRACTION_LEVELS), "quote": Col("str"),
        "source_type": Col("enum", True, SOURCE_TYPES),
    },
    "cohorts": {
        "cohort_id": Col("ident", True), "study_id": Col("ident", True), "reason": Col("str", True),
        "source": Col("source", True),
    },
    "registered_trials": {
        "registry_id": Col("str", True), "trial": Col("str", True), "acronym": Col("str"), "title": Col("str"),
        "population": Col("str"), "intervention": Col("str"), "comparator": Col("str"), "design": Col("str"),
        "target_n": Col("str"), "status": Col("str"), "start": Col("str"), "completion": Col("str"),
        "results_posted": Col("str"), "last_checked_source": Col("str"), "quote": Col("str"),
        "source": Col("source", True), "date_searched": Col("str", True),
    },
    "cohort_pairs": {
        "study_a": Col("ident", True), "study_b": Col("ident", True),
        "decision": Col("enum", True, ("same_cohort", "possible_overlap", "distinct")), "reason": Col("str", True),
        "quote": Col("str"), "where_read": Col("str"), "source": Col("source", True),
    },
    "ipd": {
        "study_id": Col("ident", True), "patient": Col("str", True), "subtype": Col("str"), "variable": Col("str", True),
        "timepoint": Col("str", True), "timepoint_months": Col("float", min=0), "value": Col("float"), "unit": Col("str"),
        "source": Col("source", True), "url": Col("str", True), "location": Col("str", True), "quote": Col("str"),
    },
    "risk_of_bias": {
        "study_id": Col("ident", True), "tool": Col("enum", True, ("RoB2", "ROBINS-I", "JBI-CS")),
        "domain": Col("str", True),
        "judgement": Col("enum", True, ("low", "some_concerns", "high", "moderate", "serious", "critical",
                                        "no_information", "yes", "no", "unclear", "not_applicable")),
        "reason": Col("str", True), "source": Col("source", True),
    },
    "screening": {
        "record_id": Col("str", True), "search_id": Col("str"), "first_author": Col("str"), "year": Col("str"),
        "title": Col("str"), "pmid": Col("int"), "doi": Col("str"), "url": Col("str"),
        "stage": Col("enum", True, ("title_abstract", "full_text")),
        "decision": Col("enum", True, ("included", "excluded", "awaiting_classification")), "reason": Col("str"), "study_id": Col("str"),
        "source": Col("str", True), "duplicate_of": Col("str"),
    },
    "search_log": {
        "search_id": Col("str", True), "date": Col("str", True), "corpus": Col("str", True), "query": Col("str", True),
        "n_results": Col("int", True, min=0), "n_candidates_new": Col("int", min=0), "notes": Col("str"),
        "source": Col("str", True),
    },
    "randomised": {
        "comparison_id": Col("ident", True), "study_id": Col("ident", True),
        "report": Col("enum", True, ("strength", "ck", "steroid", "safety", "response_course")),
        "population": Col("enum", True, ("dm_pm", "ibm", "jdm")), "outcome": Col("str", True),
        "outcome_code": Col("enum", True, tuple(OUTCOMES)),
        "analysis": Col("enum", True, ("parallel_binary", "crossover_paired_binary", "crossover_pooled_periods",
                                       "md_from_arm_cis", "reported_md", "narrative")),
        "result_ids": Col("str", True), "anchor_result_id": Col("str"), "n_randomised": Col("int", True, min=1),
        "n_both_periods": Col("int", min=0), "rho": Col("str"), "role": Col("enum", True, ("main", "sensitivity", "subgroup")),
        "effect": Col("enum", True, ("benefit", "harm")), "mid": Col("float", min=0), "unit": Col("str"),
        "timepoint": Col("str"), "direction": Col("enum", False, ("favours_ig", "favours_placebo", "unclear", "none")),
        "significant": Col("enum", False, ("yes", "no", "unclear")), "notes": Col("str", True),
        "source": Col("source", True),
    },
    "nonrandomised": None,   # same columns as "randomised" (set below): controlled non-randomised comparisons
    "published_estimates": {
        "estimate_id": Col("str", True), "review": Col("str", True), "year": Col("int"), "source": Col("source", True),
        "url": Col("str", True), "location": Col("str", True), "domain": Col("str", True), "outcome": Col("str", True),
        "subgroup": Col("str"), "measure": Col("str", True), "estimate": Col("float"), "ci_lb": Col("float"),
        "ci_ub": Col("float"), "ci_level": Col("float", min=0, max=1), "k": Col("int", min=0), "n": Col("int", min=0),
        "i2": Col("float", min=0, max=100), "notes": Col("str"), "match": Col("str", True),
    },
}
SCHEMA["nonrandomised"] = SCHEMA["randomised"]
UNIQUE = {"studies": ["study_id"], "outcomes": ["result_id"], "screening": ["record_id"],
          "search_log": ["search_id"], "published_estimates": ["estimate_id"], "cohorts": ["study_id"], "cohort_pairs": ["study_a", "study_b"],
          "registered_trials": ["registry_id", "source"],
          "randomised": ["comparison_id"], "nonrandomised": ["comparison_id"],
          "ipd": ["study_id", "patient", "variable", "timepoint"],
          "risk_of_bias": ["study_id", "tool", "domain"]}


def load_table(name: str, path: Path | None = None) -> pd.DataFrame:
    """Read one file as strings and validate it against ``SCHEMA[name]``; returns typed columns."""
    path = Path(path) if path else data_dir() / f"{name}.csv"
    if name not in SCHEMA:
        raise DataValidationError(f"unknown table {name!r}; known: {', '.join(SCHEMA)}")
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    raw = _read_csv(path, name)
    schema = SCHEMA[name]
    missing = [c for c in schema if c not in raw.columns]
    extra = [c for c in raw.columns if c not in schema]
    if len(raw.columns) == 1 and ";" in raw.columns[0] and missing:
        raise DataValidationError(f"{path.name}: row 1: the header is separated by semicolons; the data files are "
                                  "comma-separated (save as CSV with ',' as the delimiter)")
    if missing:
        raise DataValidationError(f"{path.name}: missing column(s) {', '.join(missing)}")
    if extra:
        raise DataValidationError(f"{path.name}: unknown column(s) {', '.join(extra)}; see data/README.md")
    out = {}
    for col, spec in schema.items():
        out[col] = _typed(path.name, col, spec, raw[col].str.strip())
    df = pd.DataFrame(out)
    key = UNIQUE[name]
    dup = df.duplicated(key, keep="first")
    if dup.any():
        i = int(np.nonzero(dup.to_numpy())[0][0])
        raise DataValidationError(f"{path.name}: row {i + 2}, column {'/'.join(key)}: duplicate ID "
                                  f"{tuple(df.loc[i, key]) if len(key) > 1 else df.loc[i, key[0]]!r}")
    if df.empty and name in NONEMPTY:
        raise DataValidationError(f"{path.name}: has a header but no rows; at least one {NONEMPTY[name]} is needed")
    if name == "outcomes":
        _check_outcomes(path.name, df)
    if name == "studies":
        _check_studies(path.name, df)
    return df


#: tables that cannot be empty, with what one row is
NONEMPTY = {"studies": "included study", "outcomes": "result row", "screening": "screening record",
            "search_log": "logged search"}


def _read_csv(path: Path, name: str) -> pd.DataFrame:
    """The file as strings, with messages that name the file, the line and a fix for the usual breakages."""
    data = path.read_bytes()
    if not data.strip():
        raise DataValidationError(f"{path.name}: the file is empty; it needs the header row of {name} "
                                  f"({', '.join(list(SCHEMA[name])[:4])}, ...; see data/README.md)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataValidationError(f"{path.name}: row {line}: byte 0x{data[e.start]:02x} is not UTF-8 text; save the "
                                  "file as UTF-8") from None
    opened = _unclosed_quote_line(text)
    if opened:
        raise DataValidationError(f"{path.name}: row {opened}: a quoted field is not closed (unbalanced '\"'); every "
                                  "opening quote needs a closing one")
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[])
    except pd.errors.ParserError as exc:
        msg = str(exc)
        m = re.search(r"(?:starting at row|line) (\d+)", msg)
        if "EOF inside string" in msg:
            row = int(m.group(1)) + 1 if m else None       # pandas counts data rows from 0 after the header
            where = f"row {row}: " if row else ""
            raise DataValidationError(f"{path.name}: {where}a quoted field is not closed (unbalanced '\"'); every "
                                      "opening quote needs a closing one") from None
        m2 = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        if m2:
            raise DataValidationError(f"{path.name}: row {m2.group(2)}: {m2.group(3)} fields where the header has "
                                      f"{m2.group(1)} (a stray comma, or a text with a comma that is not quoted)") from None
        raise DataValidationError(f"{path.name}: cannot be parsed as CSV ({msg})") from None


def _unclosed_quote_line(text: str) -> int | None:
    """The line (1-based) of a double quote that is never closed, or None (doubled quotes "" are escapes)."""
    inside, line, start = False, 1, None
    for ch in text:
        if ch == '"':
            inside = not inside
            start = line if inside else None
        elif ch == "\n":
            line += 1
    return start if inside else None


def load_all(data_dir: Path | None = None) -> dict:
    """Load and cross-check every table; outcomes come back with derived values (see ``derive``).

    The validated tables are kept for as long as no file of the folder changes (name, size, modification time)
    and each call returns its own copies, so a report that asks several times reads and checks the files once."""
    d = Path(data_dir) if data_dir else _data_dir_now()
    key = _folder_signature(d)
    if key not in _LOADED:
        t = _load_all(d)
        if len(_LOADED) >= 4:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = t
    return {k: (v.copy() if isinstance(v, pd.DataFrame) else copy.deepcopy(v)) for k, v in _LOADED[key].items()}


_LOADED: dict = {}


def _folder_signature(d: Path) -> tuple:
    try:
        files = sorted(d.iterdir())
    except OSError:
        return (str(d), None)
    return (str(d.resolve()),) + tuple((f.name, s.st_size, s.st_mtime_ns, s.st_ino)
                                       for f in files if f.is_file() for s in [f.stat()])


def _load_all(d: Path) -> dict:
    t = {name: load_table(name, d / f"{name}.csv") for name in SCHEMA}
    ids = set(t["studies"]["study_id"])
    for name, col in (("outcomes", "study_id"), ("risk_of_bias", "study_id"), ("cohorts", "study_id"), ("ipd", "study_id"),
                      ("randomised", "study_id"), ("nonrandomised", "study_id")):
        bad = ~t[name][col].isin(ids)
        if bad.any():
            i = int(np.nonzero(bad.to_numpy())[0][0])
            raise DataValidationError(f"{name}.csv: row {i + 2}, column {col}: {t[name][col].iloc[i]!r} is not a "
                                      "study_id in studies.csv")
    _check_cohorts(t["studies"], t["cohorts"])
    _check_cohort_pairs(t["studies"], t["cohort_pairs"])
    searched = str(t["search_log"]["date"].max())
    late = t["studies"]["year"] > int(searched[:4])
    if late.any():
        i = int(np.nonzero(late.fillna(False).to_numpy())[0][0])
        raise DataValidationError(f"studies.csv: row {i + 2}, column year: {int(t['studies']['year'].iloc[i])} is after "
                                  f"the date the search ran up to ({searched}, search_log.csv)")
    inc = t["screening"][(t["screening"]["decision"] == "included")]
    bad = ~inc["study_id"].isin(ids)
    if bad.any():
        i = int(inc.index[np.nonzero(bad.to_numpy())[0][0]])
        raise DataValidationError(f"screening.csv: row {i + 2}, column study_id: included record points to "
                                  f"{t['screening']['study_id'].iloc[i]!r}, not a study_id in studies.csv")
    missing = ids - set(inc["study_id"])
    if missing:
        raise DataValidationError(f"screening.csv: included study(ies) without an 'included' screening record: "
                                  f"{', '.join(sorted(missing))}")
    t["outcomes"] = derive_outcomes(t["outcomes"])
    _check_randomised(t["randomised"], t["outcomes"], t["studies"])   # after derivation: counts from percentages
    _check_randomised(t["nonrandomised"], t["outcomes"], t["studies"], fname="nonrandomised.csv",
                      designs=CONTROLLED_NONRANDOMISED)
    from .protocol import load_judgements, load_protocol
    t["protocol"] = load_protocol(d / "protocol.yaml", {k: t[k] for k in ("randomised", "nonrandomised")})
    t["grade"] = load_judgements(t["protocol"], d / "grade.csv", set(t["outcomes"]["result_id"]))
    return t


def prisma_counts(t: dict) -> dict:
    """PRISMA 2020 flow counts computed from search_log and screening (Page et al. 2021, BMJ 372:n71).

    Records are grouped by duplicate_of; a group is included when any of its rows is. Excluded groups are
    split by the stage of their decision: title/abstract screening, reports not retrieved (the results could
    not be read in any stored copy), and full-text assessment. Reasons are given in plain words.
    """
    s = t["screening"]
    parent = dict(zip(s["record_id"], s["duplicate_of"]))

    def root(rid):
        seen = set()
        while parent.get(rid) and rid not in seen:   # follow duplicate_of chains to the first record
            seen.add(rid)
            rid = parent[rid]
        return rid

    s = s.assign(key=[root(r) for r in s["record_id"]])
    fate = s.groupby("key")["decision"].agg(lambda d: "included" if (d == "included").any() else
                                            "awaiting" if (d == "awaiting_classification").any() else "excluded")
    excl = s[s["decision"] == "excluded"].drop_duplicates("key")
    excl = excl[excl["key"].isin(fate[fate == "excluded"].index)].copy()
    excl["group"] = excl["reason"].map(_reason_group)
    not_retrieved = excl[excl["group"] == NOT_RETRIEVED]
    full = excl[(excl["stage"] == "full_text") & (excl["group"] != NOT_RETRIEVED)]
    ta = excl[(excl["stage"] != "full_text") & (excl["group"] != NOT_RETRIEVED)]
    screened = int(fate.size)
    sought = screened - len(ta)
    out = {"searches": len(t["search_log"]), "results_returned": int(t["search_log"]["n_results"].sum()),
           "records_screened_rows": len(s), "duplicates_removed": int(len(s) - s["key"].nunique()),
           "records_screened": screened, "excluded_title_abstract": len(ta),
           "reasons_title_abstract": ta["group"].value_counts().to_dict(),
           "reports_sought": sought, "reports_not_retrieved": len(not_retrieved),
           "reports_assessed": sought - len(not_retrieved), "excluded_full_text": len(full),
           "reasons_full_text": full["group"].value_counts().to_dict(),
           "records_included": int((fate == "included").sum()),
           "studies_included": int(t["studies"]["study_id"].nunique()),
           "studies_awaiting": int((fate == "awaiting").sum()),
           "awaiting": [f"{r.first_author or 'unnamed'} {r.year or 'n.d.'}" for r in
                        s[s["key"].isin(fate[fate == "awaiting"].index)].drop_duplicates("key").itertuples()],
           "search_dates": (str(t["search_log"]["date"].min()), str(t["search_log"]["date"].max()))}
    out["records_excluded"] = out["excluded_title_abstract"] + out["reports_not_retrieved"] + out["excluded_full_text"]
    out["exclusion_reasons"] = excl["group"].value_counts().to_dict()
    return out


def treated_patients(st: pd.DataFrame) -> tuple[int, int]:
    """(patients treated with immunoglobulin, cohorts): each cohort counted once, by its largest report (where
    n_ig is printed); a study without a cohort_id is its own cohort."""
    if st.empty:
        return 0, 0
    key = st["cohort_id"].where(st["cohort_id"].astype(str) != "", st["study_id"])
    per = st.assign(_k=key).groupby("_k")["n_ig"].max()
    return int(per.fillna(0).sum()), int(per.size)


def summary_text(t: dict) -> str:
    """Plain-text summary of the dataset (all numbers computed here)."""
    st, oc = t["studies"], t["outcomes"]
    once, cohorts = treated_patients(st)
    lines = [f"Studies included: {len(st)} reports of {cohorts} cohorts; patients treated with immunoglobulin: {once} "
             f"(each cohort once; {int(st['n_ig'].sum())} summed over reports; n_ig not printed for "
             f"{int(st['n_ig'].isna().sum())} studies)"]
    for col in ("design", "population", "route", "line", "extraction_level"):
        vc = st[col].value_counts()
        lines.append(f"  by {col}: " + ", ".join(f"{k} {v}" for k, v in vc.items()))
    sub = {c[2:]: int(st[c].sum()) for c in ("n_dm", "n_pm", "n_ibm", "n_imnm", "n_asyns", "n_jdm", "n_cadm", "n_other")}
    lines.append("  Ig-treated patients by subtype (where printed): " + ", ".join(f"{k.upper()} {v}" for k, v in sub.items()))
    lines.append(f"Results: {len(oc)} rows; derived values: {int((oc['derived'] != '').sum())} rows "
                 f"({', '.join(f'{k} {v}' for k, v in oc.loc[oc['derived'] != '', 'derived'].value_counts().items())})")
    lines.append("Per domain: results; studies and Ig-treated patients before -> after merging reports of one cohort "
                 "(the largest report of each cohort counts)")
    m = oc[["domain", "study_id"]].drop_duplicates().merge(st[["study_id", "n_ig", "cohort_id"]], on="study_id")
    for dom, g in m.groupby("domain"):
        after = g.groupby("cohort_id")["n_ig"].max()
        lines.append(f"  {dom:<18} {int((oc['domain'] == dom).sum()):>4} results; {len(g):>3} studies, "
                     f"{int(g['n_ig'].sum()):>5} patients -> {after.size:>3} cohorts, {int(after.sum()):>5} patients")
    lv = oc.groupby("extraction_level")["study_id"].nunique()
    lines.append("Studies with result rows read at each level: " + ", ".join(f"{k} {v}" for k, v in lv.items()))
    p = prisma_counts(t)
    lines.append(f"PRISMA: {p['searches']} searches returned {p['results_returned']} results; {p['records_screened_rows']} "
                 f"records logged, {p['duplicates_removed']} duplicates removed, {p['records_screened']} screened on title/"
                 f"abstract, {p['excluded_title_abstract']} excluded; {p['reports_sought']} reports sought, "
                 f"{p['reports_not_retrieved']} not retrieved, {p['reports_assessed']} assessed in full, "
                 f"{p['excluded_full_text']} excluded; {p['records_included']} records -> {p['studies_included']} studies")
    lines.append("  excluded on title/abstract: " + ", ".join(f"{k} {v}" for k, v in p["reasons_title_abstract"].items()))
    lines.append("  excluded in full text: " + ", ".join(f"{k} {v}" for k, v in p["reasons_full_text"].items()))
    lines.append(f"Risk of bias: {t['risk_of_bias']['study_id'].nunique()} studies assessed "
                 f"({', '.join(f'{k} {v}' for k, v in t['risk_of_bias'].drop_duplicates('study_id')['tool'].value_counts().items())})")
    lines.append(f"Published pooled estimates: {len(t['published_estimates'])} rows from "
                 f"{t['published_estimates']['review'].nunique()} reviews")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------

def _typed(fname, col, spec: Col, s: pd.Series) -> pd.Series:
    empty = s == ""
    if spec.required and empty.any():
        i = int(np.nonzero(empty.to_numpy())[0][0])
        raise DataValidationError(f"{fname}: row {i + 2}, column {col}: value required (empty)")
    if spec.type in ("str",):
        return s
    if spec.type == "ident":
        bad = ~empty & ~s.str.match(IDENT_RE)
        _raise_first(fname, col, s, bad, "must be lowercase letters, digits and '_'")
        return s
    if spec.type == "source":
        bad = ~empty & ~s.str.match(SOURCE_RE)
        _raise_first(fname, col, s, bad, "must be PMID:<digits>, DOI:10.<...> or URL:http(s)://...")
        return s
    if spec.type == "enum":
        bad = ~empty & ~s.isin(spec.allowed)
        _raise_first(fname, col, s, bad, f"allowed: {', '.join(spec.allowed)}")
        return s
    num = pd.to_numeric(s.where(~empty), errors="coerce")
    bad = ~empty & num.isna()
    _raise_first(fname, col, s, bad, "must be a number")
    if spec.type == "int":
        bad = ~empty & (num != np.floor(num))
        _raise_first(fname, col, s, bad, "must be a whole number")
    if spec.min is not None:
        _raise_first(fname, col, s, ~empty & (num < spec.min), f"must be >= {spec.min:g}")
    if spec.max is not None:
        _raise_first(fname, col, s, ~empty & (num > spec.max), f"must be <= {spec.max:g}")
    return num.astype("Int64") if spec.type == "int" else num.astype(float)


def _raise_first(fname, col, s, bad, what):
    if bad.any():
        i = int(np.nonzero(bad.to_numpy())[0][0])
        raise DataValidationError(f"{fname}: row {i + 2}, column {col}: {s.iloc[i]!r} {what}")


def _check_outcomes(fname, df):
    dom = df["outcome_code"].map(lambda c: OUTCOMES[c].domain)
    efficacy = dom.isin(EFFICACY_DOMAINS) & df["domain"].isin(EFFICACY_DOMAINS)
    bad = (dom != df["domain"]) & (dom != "other") & ~efficacy
    if bad.any():
        i = int(np.nonzero(bad.to_numpy())[0][0])
        raise DataValidationError(f"{fname}: row {i + 2}, column outcome_code: {df['outcome_code'].iloc[i]!r} belongs to "
                                  f"domain {dom.iloc[i]!r}, but the row's domain is {df['domain'].iloc[i]!r}")
    ev, n = df["events"], df["n"]
    bad = (ev > n).fillna(False)
    if bad.any():
        i = int(np.nonzero(bad.to_numpy())[0][0])
        raise DataValidationError(f"{fname}: row {i + 2}, column events: events ({ev.iloc[i]}) > n ({n.iloc[i]})")
    bad = (ev > df["n_events"]).fillna(False)
    if bad.any():
        i = int(np.nonzero(bad.to_numpy())[0][0])
        raise DataValidationError(f"{fname}: row {i + 2}, column n_events: {df['n_events'].iloc[i]} events cannot be fewer "
                                  f"than the {ev.iloc[i]} patients with an event (events counts patients, n_events events)")
    _check_meaning(fname, df)
    bad = pd.Series([not r.startswith(f"{s}-") for r, s in zip(df["result_id"], df["study_id"])], index=df.index)
    if bad.any():
        i = int(np.nonzero(bad.to_numpy())[0][0])
        raise DataValidationError(f"{fname}: row {i + 2}, column result_id: {df['result_id'].iloc[i]!r} must start "
                                  f"with its study_id {df['study_id'].iloc[i]!r} and '-'")
    for lo, hi in (("ci_lb", "ci_ub"), ("q1_pre", "q3_pre"), ("min_pre", "max_pre"), ("q1_post", "q3_post"),
                   ("min_post", "max_post")):
        bad = (df[lo] > df[hi]).fillna(False)
        if bad.any():
            i = int(np.nonzero(bad.to_numpy())[0][0])
            raise DataValidationError(f"{fname}: row {i + 2}, column {lo}: {df[lo].iloc[i]} > {hi} {df[hi].iloc[i]}")


_SCORE_COLUMNS = ("mean_pre", "sd_pre", "mean_post", "sd_post", "mean_change", "sd_change", "median_pre", "median_post",
                  "estimate")
_ONE_PER_MEANING = ("study_id", "arm", "outcome_code", "subgroup", "timepoint", "comparison", "combined_regimen")


def _check_meaning(fname, df):
    """The error classes of the meaning-level audit (issue 15) that a machine can see: a count of patients
    under a score or effect estimate, a unit of count that is not the patient, the same result twice."""
    binary = df["outcome_code"].map(lambda c: OUTCOMES[c].kind == "binary")
    for col in _SCORE_COLUMNS:
        bad = binary & df[col].notna()
        if bad.any():
            i = int(np.nonzero(bad.to_numpy())[0][0])
            raise DataValidationError(
                f"{fname}: row {i + 2}, column {col}: {df['outcome_code'].iloc[i]!r} counts patients with the outcome "
                f"(events of n), but the row holds a {'score' if col != 'estimate' else 'effect estimate'} "
                f"({col} = {df[col].iloc[i]}); a score belongs under a continuous code (e.g. dysphagia_score), an "
                "effect estimate of another kind (hazard or odds ratio) under 'other'")
    for col, other, why in (("n_infusions", "n", "every patient had at least one infusion"),
                            ("n_infusions", "events", "each patient with an event had it on an infusion")):
        bad = (df[col] < df[other]).fillna(False)
        if bad.any():
            i = int(np.nonzero(bad.to_numpy())[0][0])
            raise DataValidationError(
                f"{fname}: row {i + 2}, column {col}: {df[col].iloc[i]} infusions < {other} = {df[other].iloc[i]} "
                f"({why}); episodes or events per infusion belong in n_events, not n_infusions")
    pooled = binary & ~df["outcome_code"].isin(["ae_other"]) & (df["subgroup"] != "other")   # counts of patients
    keys = df.loc[pooled, list(_ONE_PER_MEANING)]
    dup = keys.duplicated(keep=False)
    if dup.any():
        rows = [int(j) + 2 for j in np.nonzero(pooled.to_numpy())[0][dup.to_numpy()]]
        r0 = df.index.get_loc(keys.index[dup.to_numpy()][0])
        raise DataValidationError(
            f"{fname}: rows {', '.join(map(str, rows[:4]))}, column outcome_code: {df['outcome_code'].iloc[r0]!r} twice for "
            f"study {df['study_id'].iloc[r0]!r}, arm {df['arm'].iloc[r0]!r}, subgroup {df['subgroup'].iloc[r0]!r}, "
            f"time point {df['timepoint'].iloc[r0]!r}: one row per meaning (a second causality basis or a repeat of "
            "the same result goes under 'other'; a subset of patients under subgroup 'other')")


CONTROLLED_NONRANDOMISED = ("retrospective_cohort", "prospective_open", "nonrandomized_controlled", "registry")


def _check_randomised(plan, oc, st, fname="randomised.csv", designs=("rct", "crossover_rct")):
    """Every comparison names result rows of its own study, of its outcome code, with what its analysis needs
    (``randomised.csv``: randomised trials; ``nonrandomised.csv``: controlled non-randomised studies)."""
    rows = oc.set_index("result_id")
    design = st.set_index("study_id")["design"]
    need = {"parallel_binary": ("events", "n"), "crossover_paired_binary": ("events", "n"),
            "crossover_pooled_periods": ("events", "n"), "md_from_arm_cis": ("mean_change", "ci_lb", "ci_ub", "n"),
            "reported_md": ("estimate",), "narrative": ()}
    arms = {"parallel_binary": 2, "crossover_paired_binary": 2, "crossover_pooled_periods": 2, "md_from_arm_cis": 2,
            "reported_md": 1}
    for i, r in plan.iterrows():
        where = f"{fname}: row {i + 2}"
        if design.get(r["study_id"]) not in designs:
            raise DataValidationError(f"{where}, column study_id: {r['study_id']!r} is not a "
                                      f"{'randomised trial' if 'rct' in designs else 'controlled non-randomised study'} "
                                      f"in studies.csv (design {design.get(r['study_id'])!r}; allowed: {', '.join(designs)})")
        ids = [x.strip() for x in r["result_ids"].split(";") if x.strip()]
        if r["analysis"] in arms and len(ids) != arms[r["analysis"]]:
            raise DataValidationError(f"{where}, column result_ids: analysis {r['analysis']!r} takes "
                                      f"{arms[r['analysis']]} result id(s) (immunoglobulin first, then placebo), got {len(ids)}")
        for rid in ids + ([r["anchor_result_id"]] if r["anchor_result_id"] else []):
            if rid not in rows.index:
                raise DataValidationError(f"{where}, column result_ids: {rid!r} is not a result_id in outcomes.csv")
            if rows.loc[rid, "study_id"] != r["study_id"]:
                raise DataValidationError(f"{where}, column result_ids: {rid!r} belongs to study "
                                          f"{rows.loc[rid, 'study_id']!r}, not {r['study_id']!r}")
        for k, rid in enumerate(ids):
            x = rows.loc[rid]
            if x["outcome_code"] != r["outcome_code"]:
                raise DataValidationError(f"{where}, column result_ids: {rid!r} has outcome_code {x['outcome_code']!r}, "
                                          f"the comparison {r['outcome_code']!r}")
            for c in need[r["analysis"]]:
                if pd.isna(x[c]):
                    raise DataValidationError(f"{where}, column result_ids: {rid!r} has no {c}, which analysis "
                                              f"{r['analysis']!r} needs")
            if r["analysis"] in arms and arms[r["analysis"]] == 2:
                want = ("ig", "ig_then_placebo") if k == 0 else ("placebo", "placebo_then_ig", "control")
                if x["arm"] not in want:
                    raise DataValidationError(f"{where}, column result_ids: {rid!r} is arm {x['arm']!r}; the "
                                              f"{'first' if k == 0 else 'second'} id must be the "
                                              f"{'immunoglobulin' if k == 0 else 'placebo'} arm")
        if r["analysis"] == "crossover_paired_binary":
            if pd.isna(r["n_both_periods"]) or not r["rho"]:
                raise DataValidationError(f"{where}, column n_both_periods/rho: a paired crossover analysis needs the "
                                          "number of patients with both periods and the correlation(s) ('0; 0.25; 0.5')")
            try:
                rhos = [float(v) for v in r["rho"].split(";") if v.strip()]
            except ValueError:
                raise DataValidationError(f"{where}, column rho: {r['rho']!r} is not a ';'-separated list of numbers") from None
            if not rhos or any(not -1 <= v <= 1 for v in rhos):
                raise DataValidationError(f"{where}, column rho: correlations must lie in [-1, 1]; got {r['rho']!r}")
        if r["analysis"] == "narrative" and (not r["direction"] or not r["significant"]):
            raise DataValidationError(f"{where}, column direction/significant: a narrative result needs both (the "
                                      "review team's reading of the trial's between-group result)")


def _check_cohorts(st, co):
    """Every report sharing a cohort_id with another is listed in cohorts.csv with the reason, and agrees."""
    cid = st.set_index("study_id")["cohort_id"]
    for i, r in co.reset_index(drop=True).iterrows():
        if cid[r["study_id"]] != r["cohort_id"]:
            raise DataValidationError(f"cohorts.csv: row {i + 2}, column cohort_id: {r['cohort_id']!r} but studies.csv "
                                      f"gives {r['study_id']} the cohort_id {cid[r['study_id']]!r}")
    known = set(co["cohort_id"])
    for i, r in st.reset_index(drop=True).iterrows():
        if r["cohort_id"] != r["study_id"] and r["cohort_id"] not in known:
            raise DataValidationError(f"studies.csv: row {i + 2}, column cohort_id: {r['cohort_id']!r} is neither the "
                                      f"study's own id ({r['study_id']!r}, a cohort of one report) nor a cohort_id listed "
                                      "in cohorts.csv")
    shared = st[st["cohort_id"].duplicated(keep=False)]
    listed = set(co["study_id"])
    for i, r in shared.iterrows():
        if r["study_id"] not in listed:
            raise DataValidationError(f"studies.csv: row {i + 2}, column cohort_id: {r['study_id']} shares cohort "
                                      f"{r['cohort_id']!r} with another report but has no row in cohorts.csv giving the reason")


def _check_cohort_pairs(st, pairs):
    """Each pair decision names two included studies once, and agrees with their cohort_ids: the same cohort
    shares one, a possible overlap or distinct reports do not; every grouped report has a same-cohort decision."""
    cid = st.set_index("study_id")["cohort_id"]
    seen, decided = {}, set()
    for i, r in pairs.reset_index(drop=True).iterrows():
        where = f"cohort_pairs.csv: row {i + 2}"
        for col in ("study_a", "study_b"):
            if r[col] not in cid.index:
                raise DataValidationError(f"{where}, column {col}: {r[col]!r} is not a study_id in studies.csv")
        key = frozenset((r["study_a"], r["study_b"]))
        if len(key) == 1:
            raise DataValidationError(f"{where}, column study_b: a study is not paired with itself ({r['study_a']!r})")
        if key in seen:
            raise DataValidationError(f"{where}: the pair {r['study_a']}, {r['study_b']} is already decided in row "
                                      f"{seen[key]}")
        seen[key] = i + 2
        same = cid[r["study_a"]] == cid[r["study_b"]]
        if (r["decision"] == "same_cohort") != same:
            raise DataValidationError(
                f"{where}, column decision: {r['decision']!r}, but studies.csv gives {r['study_a']} the cohort_id "
                f"{cid[r['study_a']]!r} and {r['study_b']} {cid[r['study_b']]!r} (the same cohort shares one cohort_id; "
                "a possible overlap or distinct reports have their own)")
        if same:
            decided |= key
    for sid, c in cid.items():
        if (cid == c).sum() > 1 and sid not in decided:
            raise DataValidationError(f"cohort_pairs.csv: {sid} shares cohort {c!r} with another report, but no "
                                      "row decides it (decision same_cohort, with the reason)")


def possible_overlaps(pairs) -> list[tuple[str, str]]:
    """The (study_a, study_b) pairs recorded as a possible overlap in ``cohort_pairs.csv``."""
    if pairs is None or pairs.empty:
        return []
    sel = pairs[pairs["decision"] == "possible_overlap"]
    return list(zip(sel["study_a"], sel["study_b"]))


def _check_studies(fname, df):
    bad = (df["n_ig"] > df["n_total"]).fillna(False)
    if bad.any():
        i = int(np.nonzero(bad.to_numpy())[0][0])
        raise DataValidationError(f"{fname}: row {i + 2}, column n_ig: {df['n_ig'].iloc[i]} > n_total {df['n_total'].iloc[i]}")
    subs = df[["n_dm", "n_pm", "n_ibm", "n_imnm", "n_asyns", "n_jdm", "n_cadm", "n_other"]].sum(axis=1, min_count=1)
    total = df["n_total"].where(df["n_total"].notna(), df["n_ig"])
    bad = (subs > total).fillna(False)
    if bad.any():
        i = int(np.nonzero(bad.to_numpy())[0][0])
        raise DataValidationError(f"{fname}: row {i + 2}, column n_dm..n_other: subtype counts add up to "
                                  f"{int(subs.iloc[i])}, more than the {int(total.iloc[i])} patients of the study")


NOT_RETRIEVED = "report not retrieved (results not in any stored copy)"
_REASONS = [  # (plain words, patterns in the screener's reason), first match wins
    (NOT_RETRIEVED, ("not retriev", "cut off", "truncated", "not_read", "results_not", "no results available",
                     "retrieve", "not located", "no numbers read", "no data read")),
    ("same patients as an included report", ("duplicate_cohort", "same patients", "same article", "conference version",
                                             "same 19-patient", "same cohort", "covered by another batch",
                                             "same ancona", "same article as")),
    ("review, guideline or commentary", ("review", "guideline", "editorial", "commentary")),
    ("fewer than 5 immunoglobulin-treated patients", ("case_report", "case report", "fewer than 5", "lt5", "single-case",
                                                     "terminated")),
    ("not immunoglobulin", ("not_ig", "infliximab", "probably not ig")),
    ("not inflammatory myopathy", ("not_iim", "systemic sclerosis", "neuromuscular", "mixed_neuromuscular")),
    ("no outcome reported for immunoglobulin-treated patients", ("no_ig_outcome", "no outcome", "no patient outcome",
                                                                "survey", "qualitative", "no number", "registry record",
                                                                "no quantitative", "without extractable", "not separable",
                                                                "no ig-treated", "no_data", "no data", "dm-specific")),
]


def _reason_group(reason: str) -> str:
    """The screener's reason in plain words (PRISMA boxes)."""
    r = (reason or "").lower()
    for words, pats in _REASONS:
        if any(p in r for p in pats):
            return words
    return "other reason (see data/screening.csv)"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[0] if argv else "summary"
    if cmd not in ("summary", "validate", "check", "merge", "templates"):
        print("usage: python -m ivighelpers.data summary|validate [data_dir] | check <folder or file> | "
              "merge <folder> [data_dir] | templates", file=sys.stderr)
        return 2
    if cmd in ("check", "merge", "templates"):
        from . import extraction
        try:
            if cmd == "templates":
                print(f"templates written to {extraction.write_templates()}")
                return 0
            if len(argv) < 2:
                print(f"usage: python -m ivighelpers.data {cmd} <folder or file>", file=sys.stderr)
                return 2
            fn = extraction.check if cmd == "check" else extraction.merge
            added = fn(Path(argv[1]), Path(argv[2]) if len(argv) > 2 else None)
        except DataValidationError as exc:
            print(f"invalid extraction: {exc}", file=sys.stderr)
            return 1
        what = ", ".join(f"{n} {t} row{'s' if n != 1 else ''}" for t, n in added.items())
        print(f"extraction is valid: {what} {'would be added' if cmd == 'check' else 'added to data/'}")
        return 0
    try:
        t = load_all(Path(argv[1]) if len(argv) > 1 else None)
    except DataValidationError as exc:
        print(f"invalid data: {exc}", file=sys.stderr)
        return 1
    print(summary_text(t) if cmd == "summary" else "data/ is valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
