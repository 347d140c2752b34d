"""Published estimates beside this review's like-for-like result (``data/published_estimates.csv``).

Each stored estimate has a ``match`` spec: what this review computes to compare with it, restricted the same way
(route, line of therapy, subtype, population, outcome code; the published search window where stated). The
difference is explained by what differs, computed from the data where possible: studies outside the published
search window, inclusion body myositis in the pool, the SCIg share of patients, outcome definitions, extraction
depth, and k and n.

``match`` syntax: ``<kind>: <outcome codes, comma-separated>; key=value; ...`` with kind one of
``proportion`` (a single-arm pool), ``smcr`` (standardised mean change), ``count`` (sum of events over the pool's
patients), ``studies`` (study and patient counts), ``sof`` (a protocol outcome, ``sof: <population>:<outcome>``)
or ``none: <reason>`` (nothing comparable, with the reason); keys ``population`` (non_ibm, ibm, all), ``route``,
``line``, ``subtypes`` and ``window`` (the published search years, e.g. ``2010-2020``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import analysis as an
from .errors import DataValidationError

KINDS = ("proportion", "smcr", "count", "studies", "sof", "none")
KEYS = ("population", "route", "line", "subtypes", "window")


@dataclass
class Spec:
    kind: str
    codes: list
    options: dict
    reason: str = ""


def parse_match(text: str, where: str = "published_estimates.csv") -> Spec:
    """``match`` column -> Spec; a malformed spec is a DataValidationError naming ``where``."""
    if not text or ":" not in text:
        raise DataValidationError(f"{where}, column match: {text!r} must read '<kind>: <codes>; key=value' (kinds: "
                                  f"{', '.join(KINDS)})")
    kind, rest = (x.strip() for x in text.split(":", 1))
    if kind not in KINDS:
        raise DataValidationError(f"{where}, column match: kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "none":
        return Spec(kind, [], {}, rest)
    parts = [x.strip() for x in rest.split(";")]
    codes = [c.strip() for c in parts[0].split(",") if c.strip()]
    opts = {}
    for x in (y for y in parts[1:] if y):
        if "=" not in x:
            raise DataValidationError(f"{where}, column match: {x!r} is not key=value")
        k, v = (y.strip() for y in x.split("=", 1))
        if k not in KEYS:
            raise DataValidationError(f"{where}, column match: key {k!r} is not one of {', '.join(KEYS)}")
        opts[k] = v
    return Spec(kind, codes, opts)


def like_for_like(ev: an.Evidence, row) -> dict:
    """This review's result restricted like the published one (``row``: a published_estimates row), and the
    computed differences."""
    spec = parse_match(row["match"], f"published_estimates.csv, estimate {row['estimate_id']}")
    out = {"estimate_id": row["estimate_id"], "kind": spec.kind, "ours": None, "k": None, "n": None, "differs": []}
    if spec.kind == "none":
        out["differs"].append(spec.reason)
        return out
    params = dict(ev.params)
    for key in ("route", "line", "subtypes"):
        if key in spec.options:
            params[key] = [v.strip() for v in spec.options[key].split(",")]
    nowin = an.reselect(ev, params)
    if "window" in spec.options:
        params["year_min"], params["year_max"] = (int(x) for x in spec.options["window"].split("-"))
    sub = an.reselect(ev, params)
    pop = spec.options.get("population", "all")
    if spec.kind == "studies":
        st = sub.studies
        from .data import treated_patients
        once, cohorts = treated_patients(st)
        out.update(ours=f"{len(st)} studies ({cohorts} cohorts), {once:,} treated patients", k=len(st), n=once)
        if "window" in spec.options:
            out["differs"].append(f"studies published {spec.options['window']}, the published search window "
                                  f"({len(nowin.studies) - len(st)} of this review's {len(nowin.studies)} studies "
                                  "fall outside it or are undated)")
        return out
    if spec.kind == "sof":
        from .sof import protocol_sof
        pid, oid = spec.codes[0].split(":")
        r = next((r for r in protocol_sof(sub, population=pid) if r.outcome.id == oid), None)
        if r is not None and r.results:
            out.update(ours=f"{r.relative_text()}; certainty {r.grade.get('certainty', 'not rated')} "
                            f"({r.studies_text()})", k=r.k, n=r.participants)
        elif r is not None:
            out["ours"] = "not measured in the comparative data held here"
        return out
    def fit(e):                                   # the main fit only: the comparison prints its estimate
        if spec.kind == "smcr":
            return an.prepost_analysis(e, "published_match", "match", spec.codes, measure="SMCR", population=pop,
                                       light=True)
        return an.proportion_analysis(e, "published_match", "match", spec.codes, population=pop, light=True)
    a = fit(sub)
    if "window" in spec.options:
        full = fit(nowin)
        left = sorted(set(full.data.get("label", [])) - set(a.data.get("label", [])))
        out["differs"].append(f"restricted to the published search window {spec.options['window']}"
                              + (f" ({len(left)} of this review's {full.k} {'study falls' if full.k == 1 else 'studies fall'}"
                                 f" outside it: {', '.join(left)})"
                                 if left else " (all of this review's studies fall inside it)"))
    out["analysis"] = a
    out["k"], out["n"] = a.k, a.n_patients
    if a.k == 0:
        out["differs"].append("no study in this review prints the means and SDs a standardised mean change needs"
                              if spec.kind == "smcr" else "no study in this review gives a usable like-for-like result")
        return out
    if spec.kind == "count":
        ev_, n_ = int(a.data["events"].sum()), int(a.data["n"].sum())
        out["ours"] = f"{ev_} events in {n_} patients ({a.k} studies)"
    elif a.declined:
        out["ours"] = (f"not pooled: studies range {an.fmt_est(a, a.data['est'].min())} to "
                       f"{an.fmt_est(a, a.data['est'].max())}")
    else:
        s = a.summary if a.k >= 2 else {"estimate": a.data["est"].iloc[0], "ci_lb": a.data["ci_lb"].iloc[0],
                                         "ci_ub": a.data["ci_ub"].iloc[0]}
        out["ours"] = f"{an.fmt_est(a, s['estimate'])} ({an.fmt_est(a, s['ci_lb'])} to {an.fmt_est(a, s['ci_ub'])})"
        out["estimate"] = s["estimate"]
    out["differs"] += _differences(a, spec, row)
    return out


def comparison_table(ev: an.Evidence, ids=None) -> pd.DataFrame:
    """One row per stored estimate (or per id in ``ids``): the published number, this review's like-for-like
    result, and what differs."""
    pe = ev.tables["published_estimates"]
    if ids is not None:
        pe = pe[pe["estimate_id"].isin(ids)]
    rows = []
    for _, r in pe.iterrows():
        m = like_for_like(ev, r)
        rows.append({"Published review": r["review"], "Outcome (subgroup)": f"{r['outcome']} ({r['subgroup'] or 'all'})",
                     "Published": _published_text(r),
                     "This review, like for like": m["ours"] or "nothing comparable",
                     "What differs": "; ".join(m["differs"]) or "same question; see k and n",
                     "ID": r["estimate_id"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# helpers

def _published_text(r) -> str:
    pct = r["measure"] == "proportion_percent"
    unit = "%" if pct else ""
    kn = ", ".join(x for x in (f"k = {int(r['k'])}" if pd.notna(r["k"]) else "",
                               f"n = {int(r['n'])}" if pd.notna(r["n"]) else "") if x)
    if pd.notna(r["estimate"]):
        ci = f" ({r['ci_lb']:g}{unit} to {r['ci_ub']:g}{unit})" if pd.notna(r["ci_lb"]) else " (no CI printed)"
        m = "" if pct else f"{r['measure'].replace('_', ' ')} "
        return f"{m}{r['estimate']:g}{unit}{ci}" + (f"; {kn}" if kn else "")
    label = {"count": "counts only", "qualitative": "no number (text only)", "not_estimable": "not estimable"}.get(
        r["measure"], "no usable number stored")
    return label + (f"; {kn}" if kn else "")


def _of(x: int, k: int) -> str:
    return "our only study" if k == 1 else f"{x} of our {k} studies"


def _differences(a: an.Analysis, spec: Spec, row) -> list:
    d = a.data
    out = []
    if spec.options.get("population", "all") == "all" and "ibm_share" in d:
        ibm = d[d["ibm_share"] >= 0.5]
        if len(ibm):
            out.append(f"{_of(len(ibm), a.k)} {'is' if len(ibm) == 1 else 'are'} mostly inclusion body myositis")
    if "route" not in spec.options and "route" in d and "n" in d:
        sc = float(d.loc[d["route"] == "SCIg", "n"].sum()) / max(float(d["n"].sum()), 1.0)
        if sc:
            out.append(f"{100 * sc:.0f}% of our patients received SCIg")
    if "definition" in d and d["definition"].nunique() > 1:
        out.append(f"{d['definition'].nunique()} outcome definitions as written")
    ab = int((d["extraction_level"] == "abstract").sum()) if "extraction_level" in d else 0
    if ab:
        out.append(f"{_of(ab, a.k)} read as {'an abstract' if ab == 1 else 'abstracts'} only")
    kn = []
    if pd.notna(row["k"]):
        kn.append(f"they pooled k = {int(row['k'])}")
    if pd.notna(row["n"]):
        kn.append(f"n = {int(row['n'])}")
    out.append(", ".join(kn + [f"we pool k = {a.k}, n = {a.n_patients}"]))
    return out
