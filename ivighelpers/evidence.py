"""What the evidence base holds and lacks: what was read per study, which full texts to extract first, the
registered trials without results, and the pair decisions on shared patients.

- ``read_labels(tables)``: per study, what was read for the results used (extraction level and kind of page of its
  rows), e.g. "abstract 41, tables 40, full text 6 rows; 31 rows from secondary pages (news page, ...)".
- ``full_text_priorities(ev)``: the studies read at abstract level only (or from secondary pages), ranked by how
  much their full text could change an answer: randomised first, then the share of patients they hold in the
  pools they enter, results printed only as a direction, means without SDs, numbers from secondary pages.
- ``registered_trials(tables)``: one row per registered trial (``data/registered_trials.csv``), its registry ids,
  status as each page printed it, and the date searched.
- ``overlap_table(tables, studies)``: the cohort pair decisions (``data/cohort_pairs.csv``) in words.
"""

from __future__ import annotations

import pandas as pd

from .data import SECONDARY_SOURCES, SOURCE_WORDS
from .vocabulary import OUTCOMES

LEVELS = ("abstract", "tables", "full_text")
RANDOMISED = ("rct", "crossover_rct")
_CONTINUOUS_MEANS = (("mean_pre", "sd_pre"), ("mean_post", "sd_post"), ("mean_change", "sd_change"))


def read_labels(tables: dict) -> pd.Series:
    """study_id -> what was read for its result rows: rows per extraction level, then rows read on secondary
    pages and which; a study without result rows: its studies.csv level."""
    oc, st = tables["outcomes"], tables["studies"]
    out = {}
    for sid, lvl in zip(st["study_id"], st["extraction_level"]):
        rows = oc[oc["study_id"] == sid]
        if rows.empty:
            out[sid] = f"{str(lvl).replace('_', ' ')} (no result rows)"
            continue
        counts = rows["extraction_level"].value_counts()
        present = [lv for lv in LEVELS if lv in counts]
        label = (present[0].replace("_", " ") if len(present) == 1 else
                 ", ".join(f"{lv.replace('_', ' ')} {int(counts[lv])}" for lv in present) + " rows")
        sec = rows[rows["source_type"].isin(SECONDARY_SOURCES)]
        if len(sec):
            kinds = ", ".join(SOURCE_WORDS[k] for k in dict.fromkeys(sec["source_type"]))
            label += f"; {len(sec)} of {len(rows)} rows from secondary pages ({kinds})"
        out[sid] = label
    return pd.Series(out, name="read")


def full_text_priorities(ev, top: int | None = None) -> pd.DataFrame:
    """Studies whose full text a team with library access should extract first, most useful first.

    Score = 1000 if randomised (randomised trials come first) + 100 x the share of patients the study holds, summed over the uncontrolled pools
    (binary codes, treated arm, events and n printed) it enters + 5 per result printed only as a direction or
    without a count + 5 per mean without its SD + 10 per number read on a secondary page. Only studies with a
    row below full text (or from a secondary page) are listed. The share of patients stands for the weight: the
    inverse-variance weight of a proportion grows with n."""
    oc, st = ev.outcomes, ev.studies.set_index("study_id")
    share = _pool_shares(oc, st)
    rows = []
    for sid, g in oc.groupby("study_id", sort=False):
        if sid not in st.index:
            continue
        shallow = (g["extraction_level"] != "full_text") | g["source_type"].isin(SECONDARY_SOURCES)
        if not shallow.any():
            continue
        binary = g["outcome_code"].map(lambda c: OUTCOMES[c].kind == "binary")
        direction_only = int((binary & g["events"].isna() & g["percent"].isna()).sum()
                             + (~binary & g["direction"].notna() & g[["mean_pre", "mean_post", "mean_change",
                                                                      "median_post", "estimate"]].isna().all(axis=1)).sum())
        no_sd = int(sum((g[m].notna() & g[s].isna()).sum() for m, s in _CONTINUOUS_MEANS))
        secondary = int(g["source_type"].isin(SECONDARY_SOURCES).sum())
        rand = st.at[sid, "design"] in RANDOMISED
        sh = float(share.get(sid, {}).get("total", 0.0))
        score = 1000 * rand + 100 * sh + 5 * direction_only + 5 * no_sd + 10 * secondary
        why = []
        if rand:
            why.append("randomised")
        if sh > 0:
            d = share[sid]
            why.append(f"{100 * d['max']:.0f}% of the patients of the pool '{OUTCOMES[d['max_code']].label}'"
                       + (f" ({d['pools']} pools in all)" if d["pools"] > 1 else ""))
        if direction_only:
            why.append(f"{direction_only} result{'s' if direction_only > 1 else ''} printed only as a direction or "
                       "without a count")
        if no_sd:
            why.append(f"{no_sd} mean{'s' if no_sd > 1 else ''} without SD")
        if secondary:
            why.append(f"{secondary} number{'s' if secondary > 1 else ''} read on secondary pages")
        if score <= 0:
            continue
        s = st.loc[sid]
        ref = (f"PMID {int(s['pmid'])}" if pd.notna(s.get("pmid")) else (f"DOI {s['doi']}" if s.get("doi") else
                                                                           str(s.get("url", ""))))
        rows.append({"study_id": sid, "study": s["label"], "design": s["design"], "score": round(score, 1),
                     "why": "; ".join(why), "read": "", "reference": ref})
    out = pd.DataFrame(rows, columns=["study_id", "study", "design", "score", "why", "read", "reference"])
    if out.empty:
        return out
    labels = read_labels(ev.tables)
    out["read"] = out["study_id"].map(labels)
    out = out.sort_values(["score", "study"], ascending=[False, True], kind="stable").reset_index(drop=True)
    out.insert(0, "rank", range(1, len(out) + 1))
    return out.head(top) if top else out


def registered_trials(tables: dict) -> pd.DataFrame:
    """One row per trial of ``registered_trials.csv``: registry ids, population, comparison, design and size,
    the statuses the stored pages print (they disagree when pages are of different dates; each row of the file
    says which page and its date), results, the number of pages read, the date searched."""
    rt = tables["registered_trials"]
    rows = []
    for trial, g in rt.groupby("trial", sort=False):
        def first(col, g=g):                      # the first page that prints it
            return next((v for v in g[col] if isinstance(v, str) and v), "")
        status = "; ".join(dict.fromkeys(x for x in g["status"] if x))
        rows.append({"trial": trial, "registry": ", ".join(dict.fromkeys(g["registry_id"])),
                     "population": first("population"), "comparison": " vs ".join(
                         x for x in (first("intervention"), first("comparator")) if x),
                     "design": first("design"), "target_n": first("target_n"), "status": status or "not printed",
                     "results": first("results_posted") or "none found", "pages": len(g),
                     "searched": max(g["date_searched"])})
    return pd.DataFrame(rows)


def overlap_table(tables: dict, studies: pd.DataFrame) -> pd.DataFrame:
    """The pair decisions whose two reports are both in ``studies``: reports, decision in words, reason."""
    lab = studies.set_index("study_id")["label"]
    p = tables["cohort_pairs"]
    p = p[p["study_a"].isin(lab.index) & p["study_b"].isin(lab.index)]
    words = {"same_cohort": "same cohort (one report per analysis)",
             "possible_overlap": "possible overlap (both analysed; sensitivity analysis without the smaller)",
             "distinct": "distinct"}
    order = {"same_cohort": 0, "possible_overlap": 1, "distinct": 2}
    out = pd.DataFrame({"reports": [f"{lab[a]} and {lab[b]}" for a, b in zip(p["study_a"], p["study_b"])],
                        "decision": p["decision"].map(words), "_o": p["decision"].map(order),
                        "reason": p["reason"]})
    return out.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)


def _pool_shares(oc: pd.DataFrame, st: pd.DataFrame) -> dict:
    """study_id -> {'total': summed share of patients over the uncontrolled binary pools it enters, 'pools': k,
    'max': its largest share, 'max_code': that pool's code}."""
    ig = oc[(oc["arm"] == "ig") & oc["events"].notna() & oc["n"].notna() & (oc["n"] > 0)
            & (oc["combined_regimen"].fillna("") == "")]
    ig = ig[ig["outcome_code"].map(lambda c: OUTCOMES[c].kind == "binary") & (ig["outcome_code"] != "ae_other")]
    ig = ig[~ig["study_id"].map(lambda s: st.at[s, "design"] in RANDOMISED if s in st.index else True)]
    out: dict = {}
    for _, g in ig.groupby("outcome_code"):
        per = g.groupby("study_id")["n"].max().astype(float)
        if len(per) < 2:
            continue
        code = g["outcome_code"].iloc[0]
        for sid, n in (per / per.sum()).items():
            d = out.setdefault(sid, {"total": 0.0, "pools": 0, "max": 0.0, "max_code": code})
            d["total"] += float(n)
            d["pools"] += 1
            if float(n) > d["max"]:
                d["max"], d["max_code"] = float(n), code
    return out
