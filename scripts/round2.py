"""Extraction round 2 (tables and full texts, cohorts, outcome vocabulary): applied by merge_extraction.py
after the four first-round batches are merged, so that `python scripts/merge_extraction.py` rebuilds the
curated files in data/ from the read-only extraction records in one pass.

What it does, and nothing else:
1. rows of data/extraction/round2/<helper>/outcomes.csv are added (their result_id kept); a row naming an
   earlier result in `supersedes` replaces it (the earlier row stays in its batch file, and the new row's
   notes say what it replaced);
2. study_updates.csv changes are applied to studies.csv, each noted on the study's row (old -> new, where read);
3. new_studies.csv, screening.csv and search_log.csv rows are appended; ipd.csv rows go to data/ipd.csv;
4. the curator's audit fixes in AUDIT are applied, each noted on its row;
5. every study gets a cohort_id (COHORTS: reports that share patients, with the reason); data/cohorts.csv
   lists each grouped report with that reason;
6. every outcome row gets an outcome_code from ivighelpers.vocabulary by the rules in `code_outcome`
   (the study's wording stays in `definition`), with the per-row decisions in CODE_OVERRIDES.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUND2 = ROOT / "data" / "extraction" / "round2"

# ---- cohorts: reports that share patients (cohort_id -> members, reason, source) -----------------
COHORTS = {
    "ancona_ig": (["danieli2007", "danieli2011", "danieli2014", "danieli2022", "palermo_nd", "gambini2014"],
                  "same Ancona (Università Politecnica delle Marche) immunoglobulin programme: the IVIG cohort "
                  "(danieli2007), the SCIg reports 2011 (7 patients since 2009), 2014 (8 switched from 16% to 20% SCIg), "
                  "2022 (30 patients, same product) and the EULAR 2014 abstract (13 patients, same protocol and unit), "
                  "and the SCIg cohort reported by Palermo (M.G. Danieli co-author) are consecutive reports of one "
                  "centre's patients; no report states the overlap, it is inferred from centre, authors and periods "
                  "(extraction round 2, helpers H3 and H8: data/extraction/round2/H3/cohorts.csv, H8/cohorts.csv)",
                  "PMID:20858553"),
    "paris_scig": (["cherin2015", "cherin2016"],
                   "same Pitié-Salpêtrière SCIg programme: the 6 patients of 2015 fall within the 2016 retrospective "
                   "series of 19 (same centre, overlapping period, same first author)",
                   "PMID:26688441"),
    "paris_ivig": (["cherin1994", "cherin2002"],
                   "same Pitié-Salpêtrière IVIG programme and first author; the 2002 series of refractory polymyositis "
                   "may include patients of the 1994 open study (not stated); grouped to avoid double counting",
                   "PMID:11840450"),
    "alberta_ig": (["ualberta_nd", "ma2023"],
                   "same University of Alberta myositis clinic: the SCIg patients of ma2023 transitioned from the "
                   "IVIG programme described in the 65-patient IVIG cohort",
                   "PMID:37796840"),
    "toronto_jdm": (["almayouf2000", "lam2011", "lang1991"],
                    "same Hospital for Sick Children (Toronto) juvenile dermatomyositis clinic: Al-Mayouf 2000 covers "
                    "all IVIG-treated children there from Aug 1986 to Dec 1996, so the 5 children of Lang 1991 are "
                    "probably among them; Lam 2011's enrolment years are not printed (round 2, helper H4)",
                    "PMID:11036850"),
    "pisa_ig": (["barsotti_nd", "calabresi2018"],
                "same Pisa myositis unit and authors: 9 of the 10 SCIg patients of the ACR 2018 abstract came from "
                "prior IVIG, which the multicentre IVIG cohort (Pisa, Brescia, Pavia) describes (round 2, helper H8)",
                "URL:https://acrabstracts.org/"),
    "hopkins_ivig": (["lahoutiharahdashti2015", "huapaya2019"],
                     "both from the Johns Hopkins Myositis Center: the ILD series of 17 IVIG-treated patients may "
                     "draw on the 378 IVIG-treated patients of the ACR 2015 abstract (round 2, helper H8)",
                     "URL:https://acrabstracts.org/"),
}

# ---- curator's audit fixes (issue 7 audit): result_id -> (changes, why) ---------------------------
AUDIT = {
    "aggarwal2022-01": ({"comparison": "first_period_w16"}, "pairs the arms of the primary endpoint (randomised period)"),
    "aggarwal2022-02": ({"comparison": "first_period_w16"}, "pairs the arms of the primary endpoint (randomised period)"),
    "hoff2021-r2-01": ({"combined_regimen": "pulse IV methylprednisolone + IVIG"},
                       "the analysed group received pulse methylprednisolone and IVIG together: not an Ig-alone result"),
    "hoff2021-r2-02": ({"combined_regimen": "pulse IV methylprednisolone + IVIG"},
                       "the analysed group received pulse methylprednisolone and IVIG together: not an Ig-alone result"),
    "hoff2021-r2-03": ({"combined_regimen": "pulse IV methylprednisolone + IVIG"},
                       "survival by regimen group; the IVIG-alone group (n = 10) has no result printed"),
    "levy2010-01": ({"combined_regimen": "IVIG and/or methotrexate (steroid-free regimen)"},
                    "the favourable response is reported for the whole steroid-free group, not for IVIG alone"),
    "levy2010-03": ({"combined_regimen": "IVIG and/or methotrexate (steroid-free regimen)"},
                    "flares are reported for the whole steroid-free group, not for IVIG alone"),
    "wang2022b-01": ({"combined_regimen": "early IVIG added to standard therapy (comparative model)"},
                     "a model-based comparison, not a single-arm result"),
}
# result rows removed as exact duplicates of another row of the same study (the kept row is named)
DUPLICATES = {}

# direction of change stated in words where no numbers are printed: result_id -> (direction, the words)
DIRECTIONS = {
    "danieli2011-05": ("decrease", "CK serum levels decreased over time"),
    "danieli2011-06": ("increase", "concomitant improvement in MRC and Rankin modified scores"),
    "danieli2022-01": ("decrease", "a significant improvement in creatine kinase levels"),
    "danieli2022-02": ("increase", "significant improvement in ... muscle strength"),
    "sunzini2013-02": ("decrease", "significant reduction of muscle enzyme levels"),
    "miyasaka2012-01": ("increase", "statistically significant improvements ... in the primary endpoint (manual muscle test score)"),
    "miyasaka2012-02": ("decrease", "statistically significant intragroup improvement (serum CK)"),
    "cherin2002-03": ("decrease", "All patients had a significant biochemical response"),
    "barsotti_nd-04": ("decrease", "muscular necrosis enzymes decreased significantly"),
    "huapaya2019-03": ("decrease", "prednisone dose decreased over time"),
    "palermo_nd-01": ("decrease", "appeared associated with a corticosteroid-sparing effect"),
    "palermo_nd-02": ("increase", "further improvement of MRC score"),
    "giannini2021-03": ("increase", "improvement observed (manual muscle strength test)"),
    "giannini2021-04": ("decrease", "steroid-sparing effect observed"),
    "chaigne2019-02": ("decrease", "greater decrease of corticosteroid dose at 3 months than non-IVIg patients"),
    "ma2023-04": ("no_change", "no significant difference ... in cumulative steroid doses"),
    "dalakas1993-01": ("increase", "IVIG group had significant improvement in muscle strength scores"),
    "walter2000-02": ("no_change", "significant improvement with NSS but not with other test procedures (modified MRC)"),
}

# first_author holds the surname only (the full name read stays in the notes); an attribution that the
# extractor marked "probable only" is not taken: study -> (value, why)
AUTHOR_FIXES = {
    "palermo_nd": ("Palermo", "surname only (full name Adalgisa Palermo)"),
    "medina2025": ("Medina", "surname only (full name Gustavo Ariel Medina)"),
    "wang2022a": ("Wang", "surname only (Wang Li-Mei)"),
    "wang2022b": ("Wang", "surname only (Jeremy X Wang)"),
    "suzuki2009": ("Suzuki", "surname only (Yuzo Suzuki)"),
    "saudit2017": ("", "'Anh-Tu Hoa' is a probable attribution only (a guideline citation not tied to this title)"),
}

# screening decisions corrected by the curator: record_id -> (changes, why)
SCREENING_FIXES = {
    # the ten first-round records left "eligible, awaiting extraction (outside the batch's theme)", resolved:
    "A-006": ({"reason": "abstract gives no number of dermatomyositis patients and no outcome (mixed juvenile DM "
                         "and systemic JRA); no full text available"}, "resolved in round 2 (helper H7, record C-028)"),
    "A-024": ({"reason": "not inflammatory myopathy: the table is of 30 patients with diffuse cutaneous systemic "
                         "sclerosis (Poelman 2015)"}, "resolved in round 2 (helper H7)"),
    "A-045": ({"decision": "included", "study_id": "suzuki2009",
               "reason": "same article as suzuki2009 (identical abstract: five patients with ILD)"}, "resolved in round 2 (helper H7)"),
    "B-019": ({"reason": "2-page report without patient numbers or outcomes; Ancona SCIg programme reported in "
                         "danieli2011/danieli2014"}, "resolved in round 2 (helpers H3, H7)"),
    "B-033": ({"decision": "included", "study_id": "miyasaka2012", "reason": ""}, "the RCT extracted by batch A"),
    "B-038": ({"decision": "included", "study_id": "dalakas1997", "reason": ""}, "the IBM crossover RCT extracted by batch A"),
    "B-040": ({"decision": "included", "study_id": "lang1991", "reason": ""}, "included in round 2 (helper H4)"),
    "D-023": ({"decision": "included", "study_id": "cherin2002", "reason": ""}, "the open study extracted by batch B"),
    "D-024": ({"decision": "included", "study_id": "anon_dm42_2012", "reason": ""}, "included in round 2 (helper H7)"),
    "D-043": ({"decision": "included", "study_id": "galimberti2018", "reason": ""}, "the skin series extracted by batch C"),
    "H2-001": ({"decision": "excluded", "stage": "full_text",
                "reason": "report not retrieved: the stored copies stop before the results"},
               "eligible on its abstract, but no result could be read, so it cannot be included"),
}

# ---- outcome coding ------------------------------------------------------------------------------
CODE_OVERRIDES = {
    "anon_pedres1997-r2-01": ("retreatment_response", "later exacerbations managed with IVIG alone"),
    "bounfour2014-02": ("other", "partial response of skin lesions; the skin pool uses the major-response row"),
    "bounfour2014-03": ("other", "no response of skin lesions; the skin pool uses the major-response row"),
    "lam2011-r2-01": ("other", "baseline value only (no follow-up value printed)"),
    "lam2011-r2-02": ("other", "baseline value only (no follow-up value printed)"),
    "lam2011-r2-03": ("other", "baseline value only (no follow-up value printed)"),
    "lam2011-r2-04": ("other", "baseline value only (no follow-up value printed)"),
    "speth2016-03": ("other", "response after regimen intensification in the 3 partial responders (subset)"),
    "aggarwal2022-03": ("other", "between-group difference without arm counts"),
    **{rid: ("other", "events judged drug-related only; ProDERM's pools use events irrespective of causality")
       for rid in ("aggarwal2022-33", "aggarwal2022-42", "aggarwal2022-48", "aggarwal2022-49", "aggarwal2022-r2-25",
                   "aggarwal2022-r2-31", "aggarwal2022-r2-37", "aggarwal2022-r2-38", "aggarwal2022-r2-39",
                   "aggarwal2022-r2-40")},
}


def code_outcome(r: dict) -> str:
    """Outcome code from the extractor's domain/measure and the study's own definition (rules below)."""
    dom, meas, d = r["domain"], r["measure"], (r.get("definition") or "").lower()
    if r["result_id"] in CODE_OVERRIDES:
        return CODE_OVERRIDES[r["result_id"]][0]
    tis = "tis" in d or "total improvement" in d
    if meas in ("responders", "tis_responders", "strength_improved") or (meas == "tis" and ("at least" in d or ">=" in d)):
        if tis:
            if re.search(r"(>=|≥)\s*60|major", d):
                return "tis_major"
            if re.search(r"(>=|≥)\s*40|moderate", d):
                return "tis_moderate"
            return "tis_minimal"
        if "imacs" in d or "definition of improvement" in d:
            return "imacs_doi"
        if dom == "strength" or re.search(r"strength|mmt|mrc|manual muscle|weakness|muscle testing", d):
            return "strength_improved"
        return "clinical_improved"
    if meas == "complete_response":
        if tis and re.search(r"(>=|≥)\s*60|major", d):
            return "tis_major"
        if "retreat" in d or "new ivig course" in d or "new ivig" in d:
            return "retreatment_response"
        return "complete_response"
    simple = {
        "partial_response": "partial_response", "no_response": "no_response", "worsened": "worsened",
        "tis": "tis_score", "mitax": "disease_activity", "disease_activity": "disease_activity",
        "relapsed": "relapse", "steroid_reduced": "gc_reduced", "prednisone_dose": "gc_dose",
        "is_reduced": "is_reduced", "ck": "ck_level", "ck_fall_20pct": "ck_normalised", "ck_normalised": "ck_normalised",
        "mmt8": "mmt8", "mrc_sum": "mrc_sum", "strength_score": "strength_score_other",
        "limb_strength": "strength_score_other", "neuromuscular_symptom_score": "function_score",
        "ae_serious": "ae_serious", "ae_headache": "ae_headache", "ae_fever": "ae_fever",
        "ae_thromboembolic": "ae_thromboembolic", "ae_infection": "ae_infection", "ae_renal": "ae_renal",
        "ae_other": "ae_other", "discontinued_ae": "discontinued_ae", "ae_infusion": "ae_infusion",
        "skin_responders": "skin_improved", "skin_improved": "skin_improved", "cdasi": "cdasi", "dysphagia_improved": "dysphagia_improved",
        "dysphagia_vas": "dysphagia_score", "swallowing_duration": "dysphagia_score",
        "ild_improved": "ild_improved", "fvc_percent": "lung_function", "dlco_percent": "lung_function",
        "adl_score": "function_score", "fatigue_vas": "function_score", "disability_improved": "function_improved",
        "myalgia_improved": "function_improved", "deaths": "death", "months_to_response": "time_to_response",
        "cycles_to_response": "time_to_response",
    }
    if meas == "steroid_reduced" and re.search(r"discontinu|stopped|withdraw", d) and not re.search(r"reduc", d):
        return "gc_discontinued"   # "discontinued or reduced" stays gc_reduced
    if meas == "mmt" or meas == "mmt_score":
        return "mmt8" if re.search(r"mmt.?8|8 muscle|0-80|0-150|/80|/150", d + " " + (r.get("unit") or "").lower()) else "strength_score_other"
    if meas == "ae_any":
        return "ae_any_te" if re.search(r"teae|treatment.emergent", d) else "ae_any_reported"
    if meas in simple:
        return simple[meas]
    return "other"


# ---- application ---------------------------------------------------------------------------------

def apply(studies, outcomes, screening, search_log, sfields, ofields, rob=None):
    """Apply round 2 to the merged first-round rows (lists of dicts, changed in place); returns
    (studies, outcomes, screening, search_log, ipd, cohorts, sfields, ofields)."""
    by_study = {s["study_id"]: s for s in studies}
    for r in screening:
        _fix_screening(r)
    ipd = []
    superseded = {}
    for folder in sorted(p for p in ROUND2.iterdir() if p.is_dir()):
        h = folder.name
        for r in _read(folder / "new_studies.csv"):
            r["extraction_batches"] = f"round2/{h}"
            for col in ("population", "line", "setting"):
                if not r.get(col):
                    r[col] = "unclear"  # the source did not say (same rule as the first round)
            studies.append(r)
            by_study[r["study_id"]] = r
        for u in _read(folder / "study_updates.csv"):
            s = by_study.get(u["study_id"])
            col = u["column"]
            if s is None:
                raise SystemExit(f"round2/{h}/study_updates.csv: unknown study_id {u['study_id']!r}")
            old = s.get(col, "")
            s[col] = u["new_value"]
            s["notes"] = (s.get("notes", "") + f" [round 2 ({h}): {col} {old!r} -> {u['new_value']!r}; "
                          f"{u['source']}, {u['location']}]").strip()
        for r in _read(folder / "outcomes.csv"):
            for old in filter(None, re.split(r"[;,\s]+", r.get("supersedes") or "")):
                superseded[old] = r["result_id"]
            r["notes"] = (r.get("notes") or "").strip()
            outcomes.append(r)
        for r in _read(folder / "screening.csv"):
            _fix_screening(r)
            screening.append(r)
        search_log.extend(_read(folder / "search_log.csv"))
        ipd.extend(_read(folder / "ipd.csv"))
        if rob is not None:
            rob.extend(_read(folder / "risk_of_bias.csv"))   # judgements for the studies added in round 2
    kept = []
    for r in outcomes:
        if r["result_id"] in superseded:
            continue
        if r["result_id"] in DUPLICATES:
            continue
        kept.append(r)
    for r in kept:
        rid = r["result_id"]
        sup = [o for o, n in superseded.items() if n == rid]
        if sup:
            r["notes"] = (r["notes"] + f" [replaces {', '.join(sorted(sup))}]").strip()
        dups = [o for o, k in DUPLICATES.items() if k == rid]
        if dups:
            r["notes"] = (r["notes"] + f" [duplicate row(s) {', '.join(dups)} removed]").strip()
        if rid in AUDIT:
            changes, why = AUDIT[rid]
            was = ", ".join(f"{c} was {r.get(c, '')!r}" for c in changes)
            r.update(changes)
            r["notes"] = (r["notes"] + f" [curator audit: {was}; {why}]").strip()
        r.setdefault("subgroup", "")
        r["subgroup"] = r.get("subgroup") or "all"
        r["extraction_level"] = r.get("extraction_level") or _level_from_url(r)
        r.setdefault("combined_regimen", "")
        r["outcome_code"] = code_outcome(r)
        r["direction"] = _direction(r)
        if rid in CODE_OVERRIDES:
            r["notes"] = (r["notes"] + f" [coded {CODE_OVERRIDES[rid][0]}: {CODE_OVERRIDES[rid][1]}]").strip()
    for s in studies:
        if s["study_id"] in AUTHOR_FIXES:
            val, why = AUTHOR_FIXES[s["study_id"]]
            s["notes"] = (s.get("notes", "") + f" [curator: first_author was {s['first_author']!r}; {why}]").strip()
            s["first_author"] = val
    # a new record with no readable result is not an included study: it was sought in full text and not
    # retrieved (PRISMA 2020 "reports not retrieved"); its screening rows say so
    with_rows = {r["study_id"] for r in kept}
    dropped = {s["study_id"] for s in studies if s.get("extraction_batches", "").startswith("round2/")
               and s["study_id"] not in with_rows}
    studies[:] = [s for s in studies if s["study_id"] not in dropped]
    for r in screening:
        if r.get("decision") == "included" and (not r.get("study_id") or r["study_id"] in dropped):
            r.update({"decision": "excluded", "stage": "full_text",
                      "reason": "report not retrieved: no result could be read in the stored copies "
                                f"[was: included at title/abstract stage; {r.get('reason', '')}]".strip(),
                      "study_id": ""})
    member = {}
    cohorts = []
    for cid, (ids, reason, src) in COHORTS.items():
        for sid in ids:
            member[sid] = cid
            cohorts.append({"cohort_id": cid, "study_id": sid, "reason": reason, "source": src})
    levels = {}
    for r in kept:
        levels.setdefault(r["study_id"], set()).add(r["extraction_level"])
    for s in studies:
        s["cohort_id"] = member.get(s["study_id"], s["study_id"])
        lv = levels.get(s["study_id"], set())
        s["extraction_level"] = "full_text" if "full_text" in lv else "tables" if "tables" in lv else \
            (s.get("extraction_level") or "abstract")
    ofields = [f for f in ofields if f not in ("supersedes",)]
    for extra in ("outcome_code", "subgroup", "comparison", "combined_regimen", "direction", "extraction_level", "quote"):
        if extra not in ofields:
            ofields.append(extra)
    for extra in ("cohort_id", "concomitant"):
        if extra not in sfields:
            sfields.insert(sfields.index("extraction_level"), extra)
    return studies, kept, screening, search_log, ipd, cohorts, sfields, ofields


def _fix_screening(r):
    if r["record_id"] in SCREENING_FIXES:
        changes, why = SCREENING_FIXES[r["record_id"]]
        was = ", ".join(f"{c} was {r.get(c, '')!r}" for c in changes)
        r.update(changes)
        r["reason"] = f"{r['reason']} [curator: {was}; {why}]".strip()


def _direction(r) -> str:
    """increase / decrease / no_change: from printed numbers (post - pre, or the mean change), else from the
    words in DIRECTIONS (noted on the row); empty when neither is printed."""
    def num(c):
        try:
            return float(r.get(c) or "nan")
        except ValueError:
            return float("nan")
    ch = num("mean_change")
    if ch != ch:
        pre, post = num("mean_pre"), num("mean_post")
        if pre != pre:
            pre, post = num("median_pre"), num("median_post")
        ch = post - pre
    if ch == ch:
        return "increase" if ch > 0 else "decrease" if ch < 0 else "no_change"
    if r["result_id"] in DIRECTIONS:
        d, words = DIRECTIONS[r["result_id"]]
        r["notes"] = (r["notes"] + f' [direction {d} from the words "{words}"]').strip()
        return d
    return ""


def _level_from_url(r) -> str:
    """First-round rows: 'tables' when the row was read from a journal's results-table page, else 'abstract'."""
    url = r.get("url") or ""
    if re.search(r"/tables?/\w+|/highwire/markup/\d+/expansion|/TABLE/T\d", url) and "table" in (r.get("location") or "").lower():
        return "tables"
    return "abstract"


def _read(path: Path) -> list:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [dict(r) for r in csv.DictReader(fh)]
