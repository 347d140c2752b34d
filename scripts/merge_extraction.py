"""Merge the four extraction batches (data/extraction/batch_*/) into the curated files in data/.

Run once by the curator after an extraction round (``python scripts/merge_extraction.py``); the analysis
code never runs it and never writes to data/. What it does, and nothing else:
- studies found by more than one batch (same PMID/DOI or listed in ALIASES) get one canonical study_id;
  the batch with the most outcome rows for that study is primary: its study row and risk-of-bias rows
  are kept; outcome rows of the other batches are added only for (domain, measure, arm) combinations
  the primary batch lacks;
- result_ids are renumbered <study_id>-NN; every row keeps its source, url and location;
- screening rows are all kept; a record already screened by an earlier batch gets duplicate_of;
- empty population/line/setting values become 'unclear' (the source did not say);
- a bare address in a source column gets the 'URL:' prefix; an outcome row without url takes its study's url;
- the few curator corrections in CORRECTIONS are applied, each noted on its row with the old value and why.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import round2

ROOT = Path(__file__).resolve().parent.parent
EXTRACT = ROOT / "data" / "extraction"
OUT = ROOT / "data"
BATCHES = ["A", "B", "C", "D"]

# (batch, batch study_id) -> canonical study_id, for duplicates the identifiers do not reveal
ALIASES = {
    ("C", "anon_pmid8058161"): "amato1994",
    ("C", "anon_pmid22935197"): "dobloug2012",
    ("C", "anon_pmid24387253"): "hara2003",
    ("C", "lim2020"): "lim2021", ("D", "lim2020"): "lim2021",
    ("C", "anon_keaa443_2021"): "giannini2021",
    ("D", "barsotti_undated"): "barsotti_nd",
    ("D", "anon_intmedj2017"): "saudit2017",
    ("D", "anon_jclinrheumatol2021"): "jcr2021",
    ("B", "medina_nd"): "medina2025",
}


# curator's corrections of extraction rows: (batch, original result_id) -> {column: new value}, with the reason
CORRECTIONS = {
    ("D", "barsotti_undated-05"): ({"measure": "response_predictor_or"}, "an odds ratio for a predictor of response, not a count of responders"),
    ("D", "barsotti_undated-06"): ({"measure": "response_predictor_or"}, "an odds ratio for a predictor of response, not a count of responders"),
}


def read(batch, name):
    with open(EXTRACT / f"batch_{batch}" / f"{name}.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _normalise(row):
    """Bare addresses in source columns get the URL: prefix the data dictionary asks for."""
    src = (row.get("source") or "").strip()
    if src.startswith("http"):
        row["source"] = "URL:" + src
    return row


def write(name, rows, fields):
    rows = [_normalise(dict(r)) for r in rows]
    with open(OUT / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({f: r.get(f, "") for f in fields})


def main():
    canon = {}
    for b in BATCHES:
        for r in read(b, "studies"):
            canon[(b, r["study_id"])] = ALIASES.get((b, r["study_id"]), r["study_id"])
    outcomes = {b: read(b, "outcomes") for b in BATCHES}
    for b in BATCHES:
        for r in outcomes[b]:
            fix = CORRECTIONS.get((b, r["result_id"]))
            if fix:
                changes, why = fix
                was = ", ".join(f"{c} was {r[c]!r}" for c in changes)
                r.update(changes)
                r["notes"] = (r.get("notes", "") + f" [curator: {was}; {why}]").strip()
    n_out = Counter()
    for b in BATCHES:
        for r in outcomes[b]:
            n_out[(b, canon.get((b, r["study_id"]), r["study_id"]))] += 1
    groups = defaultdict(list)
    study_rows = {}
    for b in BATCHES:
        for r in read(b, "studies"):
            cid = canon[(b, r["study_id"])]
            groups[cid].append(b)
            study_rows[(b, cid)] = r
    primary = {cid: max(bs, key=lambda b: (n_out[(b, cid)], -BATCHES.index(b))) for cid, bs in groups.items()}

    studies = []
    fields = list(read("A", "studies")[0].keys()) + ["extraction_batches"]
    for cid in sorted(groups):
        r = dict(study_rows[(primary[cid], cid)])
        r["study_id"] = cid
        for col in ("population", "line", "setting"):
            if not r.get(col):
                r[col] = "unclear"
        # fill identifiers another batch read for the same study
        for b in groups[cid]:
            other = study_rows[(b, cid)]
            for col in ("pmid", "doi"):
                if not r.get(col) and other.get(col):
                    r[col] = other[col]
        r["extraction_batches"] = ";".join(groups[cid])
        studies.append(r)

    out_rows = []
    ofields = list(outcomes["A"][0].keys())
    for cid in sorted(groups):
        rows = [dict(r) for r in outcomes[primary[cid]] if canon.get((primary[cid], r["study_id"])) == cid]
        have = {(r["domain"], r["measure"], r["arm"]) for r in rows}
        for b in groups[cid]:
            if b == primary[cid]:
                continue
            for r in outcomes[b]:
                if canon.get((b, r["study_id"])) == cid and (r["domain"], r["measure"], r["arm"]) not in have:
                    rows.append(dict(r))
        for i, r in enumerate(rows, 1):
            r["notes"] = (r.get("notes") or "") + ("" if r["result_id"].startswith(cid) else f" [extracted as {r['result_id']}]")
            r["study_id"], r["result_id"] = cid, f"{cid}-{i:02d}"
            r["notes"] = r["notes"].strip()
            if not r.get("url"):
                r["url"] = study_rows[(primary[cid], cid)]["url"]
            out_rows.append(r)

    rob = []
    rfields = list(read("A", "risk_of_bias")[0].keys())
    for b in BATCHES:
        for r in read(b, "risk_of_bias"):
            cid = canon.get((b, r["study_id"]), r["study_id"])
            if cid in primary and primary[cid] == b:
                rob.append({**r, "study_id": cid})

    screening, seen = [], {}
    sfields = list(read("A", "screening")[0].keys()) + ["duplicate_of"]
    for b in BATCHES:
        for r in read(b, "screening"):
            r = dict(r)
            if r.get("study_id"):
                r["study_id"] = canon.get((b, r["study_id"]), r["study_id"])
            key = (r.get("pmid") or "").strip() or (r.get("doi") or "").strip().lower() or (r.get("url") or "").strip()
            r["duplicate_of"] = seen.get(key, "") if key else ""
            if key and key not in seen:
                seen[key] = r["record_id"]
            screening.append(r)

    log = [r for b in BATCHES for r in read(b, "search_log")]
    lfields = list(read("A", "search_log")[0].keys())

    # round 2: tables and full texts, cohorts, outcome vocabulary (scripts/round2.py)
    studies, out_rows, screening, log, ipd, cohorts, fields, ofields = round2.apply(
        studies, out_rows, screening, log, fields, ofields, rob)
    write("studies", studies, fields)
    write("risk_of_bias", rob, rfields)
    write("outcomes", out_rows, ofields)
    write("screening", screening, sfields)
    write("search_log", log, lfields)
    write("ipd", ipd, ["study_id", "patient", "subtype", "variable", "timepoint", "timepoint_months", "value", "unit",
                       "source", "url", "location", "quote"])
    write("cohorts", cohorts, ["cohort_id", "study_id", "reason", "source"])

    with open(EXTRACT / "batch_D" / "published_estimates.csv", newline="", encoding="utf-8") as fh:
        pe = list(csv.DictReader(fh))
    write("published_estimates", pe, list(pe[0].keys()))
    print(f"studies {len(studies)}, outcomes {len(out_rows)}, risk_of_bias {len(rob)}, screening {len(screening)}, "
          f"search_log {len(log)}, published_estimates {len(pe)}, ipd {len(ipd)}, cohorts {len(cohorts)}")


if __name__ == "__main__":
    main()
