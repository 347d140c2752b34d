"""Versions of the living review and what changed between them.

A release is a dated record of the review's evidence, kept in ``data/releases/<YYYY-MM-DD>.json``: the date the
search ran up to, the SHA-256 of every data file, the code fingerprint and commit, the included studies, a hash of
every result row (to tell added, removed and corrected rows apart) and every summary-of-findings row as numbers
(estimate, CI, k, participants, certainty). Only ``python -m ivighelpers release`` writes one; a build never does.

``python -m ivighelpers diff [--since VERSION]`` compares the current build (``reports/results/``, which must be
built from the current data) with a release (the latest by default) and flags a **changed conclusion** for an
outcome when its certainty changed, its CI now crosses or no longer crosses the value of no effect, its direction
changed, or it appeared or stopped being estimable. The exit status is 1 when a conclusion changed, 0 when none
did and 2 on an error, so that a maintainer can script it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

from .data import DATA_DIR, load_table
from .errors import InputError

RELEASES = DATA_DIR / "releases"


def current_review(reports: Path | None = None) -> dict:
    """The review as the last ``make report`` built it, as a release-shaped dict (not written anywhere).

    Refuses a build made from other data than ``data/`` holds now (run ``make report`` first)."""
    from .notebook import code_fingerprint, data_fingerprint
    from .report import DOMAINS, REPORTS
    reports = Path(reports) if reports else REPORTS
    paths = {domain: reports / "results" / f"{domain}.json" for domain in DOMAINS}
    fingerprints = set()
    for path in paths.values():
        if not path.is_file():
            raise InputError(f"{path} is missing: build the review first (make report)")
        res = json.loads(path.read_text())
        if "fingerprint" not in res:
            raise InputError(f"{path} was built by an older version (no data fingerprint): run make report")
        fingerprints.add(json.dumps(res["fingerprint"]["data"], sort_keys=True))
    now = data_fingerprint()
    if fingerprints != {json.dumps(now, sort_keys=True)}:
        raise InputError("the build in reports/ was made from other data than data/ holds now: run make report")
    return {"data": now, "code": code_fingerprint(), **snapshot(paths)}


def snapshot(results: dict, data_dir: Path | None = None) -> dict:
    """What a release records about the evidence, from results JSON files ({domain: path}, as the notebooks write
    them) and the data folder they were built from: search date, studies, result-row hashes, summary-of-findings
    rows. ``diff`` compares two of these."""
    data_dir = Path(data_dir) if data_dir else DATA_DIR
    sof = []
    for domain, path in results.items():
        sof += [{**r, "domain": domain} for r in json.loads(Path(path).read_text()).get("sof", [])]
    studies = load_table("studies", data_dir / "studies.csv")
    search = load_table("search_log", data_dir / "search_log.csv")
    screening = load_table("screening", data_dir / "screening.csv")
    when = dict(zip(search["search_id"], search["date"].astype(str)))
    return {"search_date": str(search["date"].max()),
            "screening": {r.record_id: {"date": when.get(r.search_id, ""), "stage": r.stage, "decision": r.decision,
                                        "study_id": r.study_id or ""} for r in screening.itertuples()},
            "studies": {r.study_id: {"first_author": r.first_author or "", "year": None if pd.isna(r.year) else int(r.year)}
                        for r in studies.itertuples()},
            "results": _result_hashes(data_dir), "sof": sof}


def make_release(version: str | None = None, force: bool = False, reports: Path | None = None) -> Path:
    """Write ``data/releases/<version>.json`` from the current build. ``version``: a date, ``YYYY-MM-DD``, or
    ``YYYY-MM-DD.N`` (N >= 2) for a further release on the same day; by default today's date, or its next free
    ``.N`` when today already has a release."""
    from .notebook import _git_commit
    if version is None:
        today = _dt.date.today().isoformat()
        taken = set(list_releases())
        version = today if today not in taken else next(f"{today}.{n}" for n in range(2, 1000)
                                                        if f"{today}.{n}" not in taken)
    _version_key(version)
    path = RELEASES / f"{version}.json"
    if path.exists() and not force:
        raise InputError(f"release {version} exists ({path}); pass --force to replace it")
    rel = {"version": version, "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "commit": _git_commit(), **current_review(reports)}
    RELEASES.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rel, indent=1, sort_keys=True) + "\n")
    return path


def list_releases() -> list[str]:
    """Versions in ``data/releases``, oldest first (by date, then by the same-day number)."""
    return sorted((p.stem for p in RELEASES.glob("*.json")), key=_version_key)


def _version_key(version: str) -> tuple:
    """('2026-12-01', 1) for '2026-12-01', ('2026-12-01', 2) for '2026-12-01.2'; anything else is refused."""
    date, _, n = version.partition(".")
    try:
        _dt.date.fromisoformat(date)
        num = int(n) if n else 1
        if n and (num < 2 or str(num) != n):
            raise ValueError
    except ValueError:
        raise InputError(f"version={version!r} must be a date, YYYY-MM-DD, or YYYY-MM-DD.N (N >= 2) for a further "
                         "release on the same day") from None
    return date, num


def load_release(version: str) -> dict:
    path = RELEASES / f"{version}.json"
    if not path.is_file():
        raise InputError(f"no release {version!r}; releases: {', '.join(list_releases()) or 'none yet'}")
    return json.loads(path.read_text())


def diff(old: dict, new: dict) -> dict:
    """What changed from release ``old`` to ``new``: per outcome (matched by domain and analysis) the old and
    new numbers and the reasons a conclusion changed; studies and result rows added, removed or corrected."""
    key = lambda r: (r["domain"], r["analysis"])  # noqa: E731
    o, n = {key(r): r for r in old["sof"]}, {key(r): r for r in new["sof"]}
    outcomes = []
    for k in list(o) + [k for k in n if k not in o]:
        a, b = o.get(k), n.get(k)
        reasons = conclusion_changes(a, b)
        moved = a is None or b is None or any(a.get(f) != b.get(f) for f in
                                               ("estimate", "ci_lb", "ci_ub", "k", "participants", "certainty"))
        outcomes.append({"domain": k[0], "analysis": k[1], "outcome": (b or a)["outcome"], "old": a, "new": b,
                         "changed": moved, "conclusion_changed": reasons})
    so, sn = set(old["studies"]), set(new["studies"])
    ro, rn = old["results"], new["results"]
    corrected = sorted(r for r in set(ro) & set(rn) if ro[r]["hash"] != rn[r]["hash"])
    return {"old": old.get("version", "current build"), "new": new.get("version", "current build"),
            "outcomes": outcomes,
            "studies_added": sorted(sn - so), "studies_removed": sorted(so - sn),
            "results_added": sorted(set(rn) - set(ro)), "results_removed": sorted(set(ro) - set(rn)),
            "results_corrected": [{"result_id": r, "reason": rn[r].get("notes") or "no reason recorded in the row"}
                                  for r in corrected],
            "search": (old.get("search_date"), new.get("search_date")),
            "prisma_update": prisma_update(old, new)}


def prisma_update(old: dict, new: dict) -> dict:
    """PRISMA 2020 flow for an update: studies in the previous version, records new since then (identified after
    the previous search date, or absent from the previous version's screening log), and of those the new studies
    included and the records excluded."""
    so, sn = old.get("screening"), new.get("screening", {})
    since = old.get("search_date") or ""
    fresh = {k: v for k, v in sn.items() if (k not in so if so is not None else (v["date"] or "") > since)}
    inc = sorted({v["study_id"] for v in fresh.values() if v["decision"] == "included" and v["study_id"]}
                 - set(old.get("studies", {})))
    return {"previous_studies": len(old.get("studies", {})), "new_records": len(fresh),
            "new_records_excluded": sum(v["decision"] == "excluded" for v in fresh.values()),
            "new_studies_included": inc, "total_studies": len(new.get("studies", {}))}


def conclusion_changes(a: dict | None, b: dict | None) -> list[str]:
    """Why the conclusion about one outcome changed (empty: it did not)."""
    if a is None and b is None:
        return []
    if a is None:
        return ["new outcome in this version"]
    if b is None:
        return ["outcome no longer in the summary of findings"]
    out = []
    if a["certainty"] != b["certainty"]:
        out.append(f"certainty {a['certainty']} -> {b['certainty']}")
    had, has = a.get("estimate") is not None, b.get("estimate") is not None
    if had != has:
        out.append("now estimable" if has else "no longer estimable")
    null = b.get("null") if b.get("null") is not None else a.get("null")
    if had and has and null is not None:
        cross_a = a["ci_lb"] <= null <= a["ci_ub"]
        cross_b = b["ci_lb"] <= null <= b["ci_ub"]
        if cross_a != cross_b:
            out.append("the CI now crosses the value of no effect" if cross_b else
                       "the CI no longer crosses the value of no effect")
        if (a["estimate"] - null) * (b["estimate"] - null) < 0:
            out.append("the direction of the effect changed")
    mid = b.get("mid") if b.get("mid") is not None else a.get("mid")
    if mid is not None:
        ia, ib = _mid_interval(a), _mid_interval(b)
        if ia and ib:
            ca, cb = (lo < mid < hi or lo < -mid < hi for lo, hi in (ia, ib))
            if ca != cb:
                out.append(f"the CI now {'includes' if cb else 'excludes'} the minimal important difference ({mid:g})")
    return out


def _mid_interval(r: dict):
    """The interval judged against the minimal important difference: the risk difference per 1,000 for a ratio,
    the mean difference itself for a continuous outcome."""
    if r.get("rd_per_1000"):
        return r["rd_per_1000"][1], r["rd_per_1000"][2]
    if r.get("measure") == "MD" and r.get("ci_lb") is not None:
        return r["ci_lb"], r["ci_ub"]
    return None


def diff_text(d: dict) -> str:
    """The diff as plain text: changed conclusions first, then other moved numbers, then the data changes."""
    fmt = _fmt_row
    lines = [f"What changed from {d['old']} to {d['new']} (search up to {d['search'][0]} -> {d['search'][1]})"]
    pu = d.get("prisma_update")
    if pu:
        lines.append(f"PRISMA update: {pu['previous_studies']} studies in the previous version; {pu['new_records']} "
                     f"new records since, {pu['new_records_excluded']} excluded and {len(pu['new_studies_included'])} "
                     f"new studies included ({', '.join(pu['new_studies_included']) or 'none'}); "
                     f"{pu['total_studies']} studies in all")
    concl = [o for o in d["outcomes"] if o["conclusion_changed"]]
    moved = [o for o in d["outcomes"] if o["changed"] and not o["conclusion_changed"]]
    lines.append(f"Changed conclusions: {len(concl) or 'none'}")
    for o in concl:
        lines.append(f"  ! {o['domain']}: {o['outcome']}: {'; '.join(o['conclusion_changed'])}")
        lines.append(f"      was {fmt(o['old'])}\n      now {fmt(o['new'])}")
    lines.append(f"Other changed numbers: {len(moved) or 'none'}")
    for o in moved:
        lines.append(f"  - {o['domain']}: {o['outcome']}: {fmt(o['old'])} -> {fmt(o['new'])}")
    for what, key in (("Studies added", "studies_added"), ("Studies removed", "studies_removed"),
                      ("Result rows added", "results_added"), ("Result rows removed", "results_removed")):
        lines.append(f"{what}: {', '.join(d[key]) if d[key] else 'none'}")
    lines.append("Result rows corrected: " + ("none" if not d["results_corrected"] else ""))
    for c in d["results_corrected"]:
        lines.append(f"  - {c['result_id']}: {c['reason']}")
    return "\n".join(lines)


def main_release(argv) -> int:
    """``python -m ivighelpers release [--version YYYY-MM-DD] [--force]``."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m ivighelpers release",
                                 description="Record the current build (make report) as a dated release in "
                                             "data/releases/.")
    ap.add_argument("--version", help="the release date, YYYY-MM-DD (default: today)")
    ap.add_argument("--force", action="store_true", help="replace an existing release of that date")
    a = ap.parse_args(argv)
    try:
        path = make_release(a.version, a.force)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"release written: {path.relative_to(DATA_DIR.parent)}")
    return 0


def main_diff(argv) -> int:
    """``python -m ivighelpers diff [--since VERSION] [--to VERSION]``; exit 1 if a conclusion changed."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m ivighelpers diff",
                                 description="What changed since a release: per summary-of-findings outcome, and the "
                                             "studies and result rows added, removed or corrected. Exit status 1 "
                                             "when a conclusion changed, 0 when none did.")
    ap.add_argument("--since", help="the release to compare with (default: the latest)")
    ap.add_argument("--to", help="a later release instead of the current build")
    a = ap.parse_args(argv)
    try:
        versions = list_releases()
        since = a.since or (versions[-1] if versions else None)
        if since is None:
            raise InputError("no release yet: make one with python -m ivighelpers release")
        d = diff(load_release(since), load_release(a.to) if a.to else current_review())
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(diff_text(d))
    return 1 if any(o["conclusion_changed"] for o in d["outcomes"]) else 0


# ---------------------------------------------------------------------------------------------

def _result_hashes(data_dir: Path | None = None) -> dict:
    """result_id -> hash of the row as stored (every column) and the row's notes (the stated reason)."""
    import csv
    out = {}
    with open(Path(data_dir or DATA_DIR) / "outcomes.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            h = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:16]
            out[row["result_id"]] = {"hash": h, "study_id": row["study_id"], "notes": row.get("notes", "")}
    return out


def _fmt_row(r: dict | None) -> str:
    if r is None:
        return "not in the summary of findings"
    if r.get("estimate") is None:
        est = "no pooled estimate" if r["k"] else "no data"
    elif r["kind"] == "comparison":
        est = f"RR {r['estimate']:.2f} ({r['ci_lb']:.2f} to {r['ci_ub']:.2f})"
    elif r["kind"] == "swim":
        est = (f"{100 * r['estimate']:.0f}% of studies in the expected direction ({100 * r['ci_lb']:.0f}% to "
               f"{100 * r['ci_ub']:.0f}%)")
    elif r["kind"] == "proportion":
        est = f"{100 * r['estimate']:.1f}% ({100 * r['ci_lb']:.1f}% to {100 * r['ci_ub']:.1f}%)"
    else:
        est = f"{r['estimate']:.2f} ({r['ci_lb']:.2f} to {r['ci_ub']:.2f})"
    return f"{est}, k = {r['k']}, {r['participants']} participants, certainty {r['certainty']}"
