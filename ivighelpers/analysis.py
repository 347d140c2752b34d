"""Domain analyses behind the notebooks: parameters, study selection, pooling, sensitivity, GRADE.

A notebook calls ``validate_params`` on its parameters, ``load_evidence`` for the filtered data, then one
of ``proportion_analysis`` / ``prepost_analysis`` / ``comparison_analysis`` per question. Each returns an
``Analysis`` whose fields hold every number the notebook shows, and whose ``sentence()`` states the result
in words built from those numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import diagnostics as dg
from .data import load_all
from .effects import MEASURE_TRANSFORM, escalc, transform
from .errors import InputError, ParameterError
from .meta import METHODS, rma, rma_subgroups
from .models import rma_glmm

DESIGNS = ("rct", "crossover_rct", "prospective_open", "retrospective_cohort", "case_series",
           "nonrandomized_controlled", "registry")
SUBTYPES = ("dm", "pm", "ibm", "imnm", "asyns", "jdm", "cadm", "other")
DEFAULT_PARAMS = {
    "method": "REML", "test": "z", "level": 0.95, "transform": "PLO", "ri": 0.5, "add": 0.5, "to": "only0",
    "designs": "all", "subtypes": "all", "route": "all", "line": "all", "population": "all",
    "year_min": 1900, "year_max": 2100, "min_n": 1, "exclude_high_rob": False, "exclude_derived": False,
}
ALLOWED = {
    "method": METHODS, "test": ("z", "knha"), "transform": ("PLO", "PFT", "PAS", "PR", "GLMM"),
    "to": ("only0", "all", "if0all", "none"), "route": ("all", "IVIG", "SCIg"),
    "line": ("all", "first_line", "refractory", "maintenance", "mixed", "unclear"),
    "population": ("all", "adult", "juvenile", "mixed", "unclear"),
}
HIGH_ROB = {"high", "serious", "critical"}
SUBGROUP_VARIABLES = {"subtype": "predominant subtype", "route": "route", "line": "line of therapy",
                      "population": "adult or juvenile", "design_group": "design"}


def validate_params(params: dict) -> dict:
    """Check notebook parameters; raise ParameterError naming the parameter and what is allowed."""
    unknown = set(params) - set(DEFAULT_PARAMS) - {"domain", "output_dir"}
    if unknown:
        raise ParameterError(f"unknown parameter(s) {sorted(unknown)}; allowed: {', '.join(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if k in DEFAULT_PARAMS}}
    for key, allowed in ALLOWED.items():
        if p[key] not in allowed:
            raise ParameterError(f"{key}={p[key]!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
    try:
        p["level"] = float(p["level"])
        p["ri"] = float(p["ri"])
        p["add"] = float(p["add"])
    except (TypeError, ValueError):
        raise ParameterError("level, ri and add must be numbers") from None
    if not 0 < p["level"] < 1:
        raise ParameterError(f"level={p['level']!r} must lie in (0, 1), e.g. 0.95")
    if not -1 <= p["ri"] <= 1:
        raise ParameterError(f"ri={p['ri']!r} (assumed pre-post correlation) must lie in [-1, 1]")
    if p["add"] < 0:
        raise ParameterError(f"add={p['add']!r} (continuity correction) must be >= 0")
    for key, allowed in (("designs", DESIGNS), ("subtypes", SUBTYPES)):
        val = p[key]
        vals = [val] if isinstance(val, str) else list(val)
        if vals != ["all"]:
            bad = [v for v in vals if v not in allowed]
            if bad:
                raise ParameterError(f"{key}={val!r}: {bad} not allowed; allowed: 'all' or a list of "
                                     f"{', '.join(allowed)}")
        p[key] = "all" if vals == ["all"] else vals
    for key in ("year_min", "year_max", "min_n"):
        try:
            p[key] = int(p[key])
        except (TypeError, ValueError):
            raise ParameterError(f"{key}={p[key]!r} must be a whole number") from None
    if p["year_min"] > p["year_max"]:
        raise ParameterError(f"year_min ({p['year_min']}) is after year_max ({p['year_max']})")
    for key in ("exclude_high_rob", "exclude_derived"):
        if not isinstance(p[key], (bool, np.bool_)):
            raise ParameterError(f"{key}={p[key]!r} must be True or False")
    return p


@dataclass
class Evidence:
    tables: dict
    studies: pd.DataFrame          # after filters, with derived study-level variables
    outcomes: pd.DataFrame         # outcomes of those studies
    filter_log: list               # (filter, studies removed)
    params: dict


def load_evidence(params: dict, tables: dict | None = None) -> Evidence:
    """Load data/ and apply the inclusion filters of ``params``; the log says what each filter removed."""
    p = validate_params(params)
    t = tables or load_all()
    st = _study_variables(t)
    log = []

    def apply(name, mask):
        nonlocal st
        removed = int((~mask).sum())
        st = st[mask]
        log.append((name, removed))

    if p["designs"] != "all":
        apply(f"designs in {p['designs']}", st["design"].isin(p["designs"]))
    if p["subtypes"] != "all":
        cols = [f"n_{s}" for s in p["subtypes"]]
        apply(f"any patients with subtype in {p['subtypes']}", (st[cols].fillna(0) > 0).any(axis=1))
    for key in ("route", "line", "population"):
        if p[key] != "all":
            apply(f"{key} = {p[key]}", st[key] == p[key])
    apply(f"year {p['year_min']}-{p['year_max']}", st["year"].fillna(0).between(p["year_min"], p["year_max"])
          if (p["year_min"], p["year_max"]) != (1900, 2100) else pd.Series(True, index=st.index))
    if p["min_n"] > 1:
        apply(f"at least {p['min_n']} Ig-treated patients", st["n_ig"].fillna(0) >= p["min_n"])
    if p["exclude_high_rob"]:
        apply("overall risk of bias not high/serious/critical", ~st["rob_high"])
    oc = t["outcomes"][t["outcomes"]["study_id"].isin(st["study_id"])]
    if p["exclude_derived"]:
        oc = oc[oc["derived"] == ""]
    return Evidence(t, st.reset_index(drop=True), oc.reset_index(drop=True), log, p)


@dataclass
class Analysis:
    name: str
    title: str
    kind: str                       # proportion | prepost | comparison
    measure: str                    # escalc measure or GLMM
    params: dict
    data: pd.DataFrame              # one row per study used
    fit: object = None
    k: int = 0
    n_patients: int = 0
    summary: dict = field(default_factory=dict)        # natural-scale estimate, CI, PI
    heterogeneity: dict = field(default_factory=dict)
    subgroups: dict = field(default_factory=dict)      # variable -> SubgroupResult
    sensitivity: pd.DataFrame | None = None
    loo: pd.DataFrame | None = None
    influence: pd.DataFrame | None = None
    small_study: dict = field(default_factory=dict)
    grade: dict = field(default_factory=dict)
    excluded: pd.DataFrame | None = None             # rows found but unusable, with the reason
    notes: list = field(default_factory=list)
    unit: str = ""

    @property
    def pooled(self) -> bool:
        return self.fit is not None and self.k >= 2

    def sentence(self) -> str:
        """The result in one sentence, built from the numbers."""
        lv = f"{round(self.params['level'] * 100):g}%"
        if self.k == 0:
            return f"{self.title}: no study in the current selection reports usable data, so nothing is pooled."
        if self.k == 1:
            r = self.data.iloc[0]
            return (f"{self.title}: only one study ({r['label']}) reports usable data "
                    f"({_fmt_est(self, r['est'])}, {lv} CI {_fmt_est(self, r['ci_lb'])} to {_fmt_est(self, r['ci_ub'])}); "
                    "no pooling is possible.")
        s = self.summary
        if s.get("exact_total"):
            return (f"{self.title}: none of {self.k} studies can be pooled by the GLMM ({self.notes[0]}); "
                    f"total {_fmt_est(self, s['estimate'])} ({lv} exact CI {_fmt_est(self, s['ci_lb'])} to "
                    f"{_fmt_est(self, s['ci_ub'])}) in {self.n_patients} patients.")
        h = self.heterogeneity
        txt = (f"{self.title}: pooled {self.summary['label']} {_fmt_est(self, s['estimate'])} "
               f"({lv} CI {_fmt_est(self, s['ci_lb'])} to {_fmt_est(self, s['ci_ub'])}) from {self.k} studies "
               f"with {self.n_patients} patients")
        if s.get("pi_lb") is not None:
            txt += f"; {lv} prediction interval {_fmt_est(self, s['pi_lb'])} to {_fmt_est(self, s['pi_ub'])}"
        if h.get("I2") is not None:
            txt += f"; I\u00b2 = {h['I2']:.0f}%"
            if h.get("I2_ci"):
                txt += f" ({h['I2_ci'][0]:.0f}% to {h['I2_ci'][1]:.0f}%)"
        return txt + "."

    def results_json(self) -> dict:
        """Key results for tests and for the report's JSON file."""
        out = {"name": self.name, "title": self.title, "kind": self.kind, "measure": self.measure, "k": self.k,
               "n_patients": self.n_patients, "studies": list(self.data["study_id"]) if len(self.data) else [],
               "summary": _clean(self.summary), "heterogeneity": _clean(self.heterogeneity),
               "grade": _clean(self.grade), "sentence": self.sentence()}
        return out


# ---------------------------------------------------------------------------------------------
# analyses

def proportion_analysis(ev: Evidence, name: str, title: str, selectors: list, label: str = "proportion") -> Analysis:
    """Pool a single-arm proportion (events / n in the Ig arm).

    ``selectors`` is a list of (domain, measure) tried in order for each study; the first that has usable
    events and n is used (its definition shown in the table). Transform from ``params['transform']``: PLO,
    PFT, PAS, PR with the chosen tau2 estimator, or GLMM (binomial-normal model, exact likelihood).
    """
    p = ev.params
    rows, excluded = _pick(ev, selectors, need=("events", "n"))
    a = Analysis(name, title, "proportion", p["transform"], p, pd.DataFrame(), excluded=excluded)
    a.summary["label"] = label
    if rows.empty:
        return a
    x = rows["events"].astype(float).to_numpy()
    n = rows["n"].astype(float).to_numpy()
    measure = "PLO" if p["transform"] == "GLMM" else p["transform"]
    es = escalc(measure, xi=x, ni=n, add=p["add"], to=p["to"])
    rows = rows.assign(yi=es["yi"].to_numpy(), vi=es["vi"].to_numpy())
    a.k, a.n_patients = len(rows), int(n.sum())
    tname = MEASURE_TRANSFORM[measure]
    lo, hi = clopper_pearson(x, n, p["level"])  # per-study CIs for display: exact, valid at 0/n and n/n
    rows = rows.assign(est=x / n, ci_lb=lo, ci_ub=hi)
    if a.k == 1:
        a.data = rows.assign(weight=100.0)
        return a
    if p["transform"] == "GLMM" and (np.all(x == 0) or np.all(x == n)):
        a.notes.append(f"All {a.k} studies have {'no events' if np.all(x == 0) else 'events in every patient'} "
                       f"({int(x.sum())}/{int(n.sum())} patients); the GLMM has no finite estimate, so the exact "
                       "binomial interval of the total is given instead.")
        a.data = rows.assign(weight=100 * n / n.sum())
        tot_x, tot_n = x.sum(), n.sum()
        lo_t, hi_t = clopper_pearson(tot_x, tot_n, p["level"])
        a.summary.update({"estimate": tot_x / tot_n, "ci_lb": float(lo_t), "ci_ub": float(hi_t), "pi_lb": None,
                          "pi_ub": None, "exact_total": True})
        return a
    if p["transform"] == "GLMM":
        fit = rma_glmm(xi=x, ni=n, level=p["level"])
        a.fit = fit
        t = fit.transformed("ilogit")
        a.summary.update({k: t[k] for k in ("estimate", "ci_lb", "ci_ub", "pi_lb", "pi_ub")})
        a.heterogeneity = {"tau2": fit.tau2, "I2": fit.I2, "Q": fit.QE_lrt, "Q_pval": fit.QE_lrt_pval,
                           "Q_type": "likelihood ratio", "I2_ci": None, "tau2_ci": None}
        w = 1 / (rows["vi"] + fit.tau2)
        rows = rows.assign(weight=100 * w / w.sum())
        nn_fit = rma(rows["yi"], rows["vi"], method=p["method"], test=p["test"], level=p["level"], measure="PLO",
                     slab=list(rows["label"]))
        _post_fit(a, rows, nn_fit, ev)
        # case deletion with the GLMM itself; influence statistics are defined for the normal-normal model only
        if a.k >= 3:
            loo = []
            for i in range(a.k):
                keep = np.arange(a.k) != i
                try:
                    g = rma_glmm(xi=x[keep], ni=n[keep], level=p["level"])
                    loo.append({"study": rows["label"].iloc[i], "estimate": g.estimate, "ci_lb": g.ci_lb,
                                "ci_ub": g.ci_ub, "tau2": g.tau2, "I2": g.I2})
                except InputError as e:  # e.g. no events left without this study
                    loo.append({"study": rows["label"].iloc[i], "estimate": np.nan, "ci_lb": np.nan, "ci_ub": np.nan,
                                "tau2": np.nan, "I2": np.nan})
                    a.notes.append(f"without {rows['label'].iloc[i]}: {e}")
            a.loo = pd.DataFrame(loo).set_index("study")
            a.influence = None
        main = {"analysis": "main (GLMM, ML)", "k": a.k, "estimate": t["estimate"], "ci_lb": t["ci_lb"],
                "ci_ub": t["ci_ub"], "tau2": fit.tau2, "I2": fit.I2}
        a.sensitivity = pd.concat([pd.DataFrame([main]), a.sensitivity.assign(
            analysis=a.sensitivity["analysis"].str.replace("main", "normal-normal PLO"))], ignore_index=True)
    else:
        rows = _normal_pool(a, rows, ev, measure, tname, ni=n)
        _post_fit(a, rows, a.fit, ev)
    a.data = rows
    return a


def prepost_analysis(ev: Evidence, name: str, title: str, selectors: list, measure: str = "SMCR",
                     label: str = "standardised mean change", unit: str = "") -> Analysis:
    """Pool a pre-post change in the Ig arm: SMCR (needs sd of the first measurement), SMCC, MC, ROMC.

    m1i is the later measurement, so a rise is positive; ``params['ri']`` is the assumed pre-post
    correlation where the study does not report one (all of them here).
    """
    p = ev.params
    need = ("n", "mean_pre", "mean_post", "sd_pre", "sd_post") if measure != "SMCR" else ("n", "mean_pre", "mean_post", "sd_pre")
    rows, excluded = _pick(ev, selectors, need=need)
    a = Analysis(name, title, "prepost", measure, p, pd.DataFrame(), excluded=excluded, unit=unit)
    a.summary["label"] = label
    if rows.empty:
        return a
    # m1i = later (post) measurement; SMCR standardises by the SD of the baseline (sd_pre), whose
    # variance needs no second SD, so a missing sd_post is not needed there
    sd_pre = rows["sd_pre"].astype(float)
    sd_post = rows["sd_post"].astype(float).fillna(sd_pre)
    es = escalc(measure, m1i=rows["mean_post"].astype(float), m2i=rows["mean_pre"].astype(float),
                sd1i=sd_pre if measure == "SMCR" else sd_post, sd2i=sd_post if measure == "SMCR" else sd_pre,
                ni=rows["n"].astype(float), ri=np.full(len(rows), p["ri"]))
    yi, vi = es["yi"].to_numpy(), es["vi"].to_numpy()
    tname = MEASURE_TRANSFORM[measure]
    z = _z(p["level"])
    rows = rows.assign(yi=yi, vi=vi, est=transform(yi, tname), ci_lb=transform(yi - z * np.sqrt(vi), tname),
                       ci_ub=transform(yi + z * np.sqrt(vi), tname))
    a.k, a.n_patients = len(rows), int(rows["n"].sum())
    if a.k == 1:
        a.data = rows.assign(weight=100.0)
        return a
    rows = _normal_pool(a, rows, ev, measure, tname)
    _post_fit(a, rows, a.fit, ev)
    a.data = rows
    return a


def comparison_analysis(ev: Evidence, name: str, title: str, selectors: list, measure: str = "RR",
                        label: str = "risk ratio (Ig vs placebo)") -> Analysis:
    """Randomised comparison Ig vs placebo on a binary outcome (events / n per arm at the same time point)."""
    p = ev.params
    st = ev.studies.set_index("study_id")
    oc = ev.outcomes
    pairs = []
    for dom, meas in selectors:
        sel = oc[(oc["domain"] == dom) & (oc["measure"] == meas) & oc["events"].notna() & oc["n"].notna()]
        for sid, g in sel.groupby("study_id"):
            if sid in {q["study_id"] for q in pairs} or st.loc[sid, "design"] not in ("rct", "crossover_rct"):
                continue
            ig, pl = g[g["arm"] == "ig"], g[g["arm"] == "placebo"]
            for _, r in ig.iterrows():
                m = pl[pl["timepoint"] == r["timepoint"]]
                if len(m):
                    q = m.iloc[0]
                    pairs.append({"study_id": sid, "label": st.loc[sid, "label"], "ai": r["events"], "n1i": r["n"],
                                  "ci": q["events"], "n2i": q["n"], "definition": r["definition"],
                                  "timepoint": r["timepoint"], "result_ids": f"{r['result_id']}, {q['result_id']}"})
                    break
    rows = pd.DataFrame(pairs)
    a = Analysis(name, title, "comparison", measure, p, pd.DataFrame())
    a.summary["label"] = label
    if rows.empty:
        return a
    es = escalc(measure, ai=rows["ai"].astype(float), n1i=rows["n1i"].astype(float), ci=rows["ci"].astype(float),
                n2i=rows["n2i"].astype(float), add=p["add"], to=p["to"])
    yi, vi = es["yi"].to_numpy(), es["vi"].to_numpy()
    z = _z(p["level"])
    tname = MEASURE_TRANSFORM[measure]
    rows = rows.assign(yi=yi, vi=vi, n=rows["n1i"] + rows["n2i"], est=transform(yi, tname),
                       ci_lb=transform(yi - z * np.sqrt(vi), tname), ci_ub=transform(yi + z * np.sqrt(vi), tname))
    a.k, a.n_patients = len(rows), int(rows["n"].sum())
    if a.k == 1:
        a.data = rows.assign(weight=100.0)
        return a
    a.data = _normal_pool(a, rows, ev, measure, tname)
    a.grade = grade(a, ev)
    return a


def published_comparison(a: Analysis, ev: Evidence, outcomes: list) -> pd.DataFrame:
    """Our estimate beside the published pooled estimates named in ``outcomes`` (estimate_id list)."""
    pe = ev.tables["published_estimates"]
    pe = pe[pe["estimate_id"].isin(outcomes)]
    rows = []
    ours = a.summary
    for _, r in pe.iterrows():
        scale = 100 if r["measure"] == "proportion_percent" else 1
        rows.append({"source": f"{r['review']} ({r['source']}, {r['location']})", "outcome": r["outcome"],
                     "subgroup": r["subgroup"], "estimate": r["estimate"] / scale if pd.notna(r["estimate"]) else None,
                     "ci_lb": r["ci_lb"] / scale if pd.notna(r["ci_lb"]) else None,
                     "ci_ub": r["ci_ub"] / scale if pd.notna(r["ci_ub"]) else None,
                     "k": r["k"], "n": r["n"]})
    if a.k >= 1:
        est = ours.get("estimate") if a.k >= 2 else a.data["est"].iloc[0]
        lo = ours.get("ci_lb") if a.k >= 2 else a.data["ci_lb"].iloc[0]
        hi = ours.get("ci_ub") if a.k >= 2 else a.data["ci_ub"].iloc[0]
        rows.append({"source": "this review (data/, current parameters)", "outcome": a.title, "subgroup": "",
                     "estimate": est, "ci_lb": lo, "ci_ub": hi, "k": a.k, "n": a.n_patients})
    return pd.DataFrame(rows)


def explain_difference(a: Analysis, cmp: pd.DataFrame) -> str:
    """Sentence explaining differences from the published estimates, computed from the data."""
    pub = cmp[cmp["source"] != "this review (data/, current parameters)"]
    if pub.empty or a.k == 0:
        return "No published pooled estimate to compare with for this question."
    parts = []
    yrs = a.data
    for _, r in pub.iterrows():
        if r["estimate"] is None or pd.isna(r["estimate"]):
            continue
        ours = cmp.iloc[-1]
        diff = ours["estimate"] - r["estimate"]
        kk = f"k = {int(r['k'])}" if pd.notna(r["k"]) else "k not printed"
        nn = f"n = {int(r['n'])}" if pd.notna(r["n"]) else "n not printed"
        parts.append(f"our estimate differs from {r['source'].split(' (')[0]} ({r['outcome']}, {r['subgroup']}) by "
                     f"{diff * (100 if a.kind == 'proportion' else 1):+.1f}{' percentage points' if a.kind == 'proportion' else ''}; "
                     f"they pooled {kk}, {nn}, we pool k = {a.k}, n = {a.n_patients}")
    if "year" in yrs:  # Goswami 2022 searched 2010-2020 (seed abstract; data/published_estimates.csv PE-D-01)
        outside = yrs[(yrs["year"] < 2010) | (yrs["year"] > 2020)]
        if len(outside):
            parts.append(f"{len(outside)} of our {a.k} studies were published outside 2010-2020, the search window of "
                         f"the 2022 Autoimmun Rev meta-analysis ({', '.join(outside['label'])})")
    ext = a.data["extraction_level"].eq("abstract").sum() if "extraction_level" in a.data else 0
    if ext:
        parts.append(f"{ext} of our {a.k} studies were extracted from the abstract only, so responder definitions "
                     "and denominators may differ from the full texts the reviews used")
    return ("Differences: " + "; ".join(parts) + ".") if parts else "No numeric published estimate to compare with."


def clopper_pearson(x, n, level):
    """Exact binomial (Clopper-Pearson 1934) limits for x events in n; 0 and 1 at the boundaries."""
    from scipy.stats import beta
    x, n = np.asarray(x, dtype=float), np.asarray(n, dtype=float)
    a = 1 - level
    with np.errstate(invalid="ignore"):
        lo = np.where(x > 0, beta.ppf(a / 2, x, n - x + 1), 0.0)
        hi = np.where(x < n, beta.ppf(1 - a / 2, x + 1, n - x), 1.0)
    return lo, hi


def per_infusion_rates(ev: Evidence) -> pd.DataFrame:
    """Adverse events per 100 infusions where the number of infusions is reported (Ig arm), with exact
    Poisson limits (Garwood 1936: chi2 quantiles on 2x and 2x + 2 df)."""
    from scipy.stats import chi2
    oc = ev.outcomes
    r = oc[(oc["domain"] == "safety") & oc["n_infusions"].notna() & oc["events"].notna() & (oc["arm"] == "ig")].copy()
    lv = ev.params["level"]
    x, t = r["events"].astype(float), r["n_infusions"].astype(float)
    r["per_100_infusions"] = 100 * x / t
    r["ci_lb"] = (100 * chi2.ppf((1 - lv) / 2, 2 * x) / 2 / t).fillna(0.0)
    r["ci_ub"] = 100 * chi2.ppf(1 - (1 - lv) / 2, 2 * x + 2) / 2 / t
    r["study"] = r["study_id"].map(ev.studies.set_index("study_id")["label"])
    return r


def loo_natural(a: Analysis) -> pd.DataFrame:
    """Leave-one-out table with estimate and CI back-transformed to the natural scale."""
    loo = a.loo.copy()
    tn = "ilogit" if a.measure == "GLMM" else MEASURE_TRANSFORM.get(a.measure, "none")
    ni = a.data["n"].astype(float).to_numpy() if tn == "ipft_hm" else None
    for c in ("estimate", "ci_lb", "ci_ub"):
        loo[c] = transform(loo[c].to_numpy(), tn, ni=ni)
    return loo


def grade(a: Analysis, ev: Evidence) -> dict:
    """GRADE summary row computed from the analysis (rules stated in each reason)."""
    if a.k == 0:
        return {}
    d = a.data
    randomised = d["design"].isin(["rct", "crossover_rct"]).all() if "design" in d else a.kind == "comparison"
    start = "high" if randomised else "low"
    down = 0
    out = {"studies": a.k, "patients": a.n_patients, "design": "randomised" if randomised else "observational / single-arm",
           "starting certainty": start}
    w = d["weight"] if "weight" in d else pd.Series(100.0, index=d.index)
    rob_share = float(w[d.get("rob_high", pd.Series(False, index=d.index)).astype(bool)].sum()) if "rob_high" in d else 0.0
    if rob_share > 50:
        down += 1
        out["risk of bias"] = f"serious: {rob_share:.0f}% of the weight from studies at high/serious overall risk"
    else:
        out["risk of bias"] = f"not serious: {rob_share:.0f}% of the weight from studies at high/serious overall risk"
    i2 = a.heterogeneity.get("I2")
    if i2 is not None and i2 > 50:
        down += 1
        out["inconsistency"] = f"serious: I\u00b2 = {i2:.0f}% (> 50%)"
    else:
        out["inconsistency"] = "not serious" + (f": I\u00b2 = {i2:.0f}%" if i2 is not None else ": single study")
    out["indirectness"] = "not assessed automatically (populations and definitions shown in the study table)"
    if a.n_patients < 400 or a.k < 2:
        down += 1
        out["imprecision"] = f"serious: {a.n_patients} patients (< 400, optimal information size heuristic)"
    else:
        out["imprecision"] = f"not serious: {a.n_patients} patients"
    eg = a.small_study.get("egger_pval")
    if a.k < 10:
        out["publication bias"] = f"not assessable (k = {a.k} < 10); not downgraded"
    elif eg is not None and eg < 0.10:
        down += 1
        out["publication bias"] = f"suspected: Egger p = {eg:.3f}"
    else:
        out["publication bias"] = f"undetected: Egger p = {eg:.3f}"
    levels = ["very low", "low", "moderate", "high"]
    out["certainty"] = levels[max(0, levels.index(start) - down)]
    return out


# ---------------------------------------------------------------------------------------------
# helpers

def _study_variables(t) -> pd.DataFrame:
    st = t["studies"].copy()
    rob = t["risk_of_bias"]
    overall = rob[rob["domain"].str.lower() == "overall"].drop_duplicates("study_id").set_index("study_id")["judgement"]
    st["rob_overall"] = st["study_id"].map(overall).fillna("no_information")
    st["rob_high"] = st["rob_overall"].isin(HIGH_ROB)
    sub = st[[f"n_{s}" for s in SUBTYPES]].astype(float)
    st["subtype"] = np.where(sub.fillna(0).sum(axis=1) > 0, sub.fillna(0).idxmax(axis=1).str[2:].str.upper(), "unclear")
    st["design_group"] = np.where(st["design"].isin(["rct", "crossover_rct"]), "randomised", "non-randomised")
    auth = st["first_author"].where(st["first_author"] != "", st["study_id"])
    yr = pd.Series([str(int(y)) if pd.notna(y) else "n.d." for y in st["year"]], index=st.index)
    st["label"] = auth + " " + yr
    dup = st["label"].duplicated(keep=False)
    st.loc[dup, "label"] = st.loc[dup, "label"] + " (" + st.loc[dup, "study_id"] + ")"
    return st


def _pick(ev: Evidence, selectors, need):
    """One row per study: the first selector (domain, measure) in the Ig arm with every column in ``need``."""
    oc = ev.outcomes[ev.outcomes["arm"] == "ig"]
    chosen, excluded, seen = [], [], set()
    for dom, meas in selectors:
        sel = oc[(oc["domain"] == dom) & (oc["measure"] == meas)]
        for sid, g in sel.groupby("study_id", sort=False):
            if sid in seen:
                continue
            ok = g.dropna(subset=list(need))
            ok = ok[ok["n"] > 0] if "n" in need else ok
            if len(ok):
                chosen.append(ok.sort_values("n", ascending=False, kind="stable").iloc[0])
                seen.add(sid)
            else:
                miss = [c for c in need if g[c].isna().all()]
                excluded.append({"study_id": sid, "result_id": g["result_id"].iloc[0], "measure": meas,
                                 "reason": "not reported: " + ", ".join(miss)})
    excluded = [e for e in excluded if e["study_id"] not in seen]
    if not chosen:
        return pd.DataFrame(), pd.DataFrame(excluded)
    rows = pd.DataFrame(chosen).reset_index(drop=True)
    keep = ["study_id", "label", "design", "design_group", "route", "line", "population", "subtype", "year",
            "rob_overall", "rob_high", "extraction_level", "source"]
    rows = rows.drop(columns=["source"]).merge(ev.studies[keep], on="study_id", how="left")
    return rows.sort_values(["year", "label"], kind="stable").reset_index(drop=True), pd.DataFrame(excluded)


def _post_fit(a: Analysis, rows, fit, ev: Evidence):
    p = ev.params
    k = len(rows)
    for var in SUBGROUP_VARIABLES:
        levels = rows[var].astype(str)
        if levels.nunique() >= 2:
            a.subgroups[var] = rma_subgroups(rows["yi"], rows["vi"], levels, method=p["method"], test=p["test"],
                                             level=p["level"], measure=fit.measure)
    if k >= 3:
        a.loo = dg.leave_one_out(fit)
        a.influence = dg.influence(fit)
        a.small_study["rank_test"] = dg.rank_test(fit)
    if k >= 10:
        eg = dg.egger(fit)
        a.small_study.update({"egger_stat": eg.stat, "egger_pval": eg.pval, "limit_estimate": eg.limit_estimate})
    else:
        a.small_study["egger_note"] = (f"Egger's test is not run: k = {k} < 10 studies, too few for a regression "
                                       "test to distinguish asymmetry from chance (Cochrane Handbook 13.3.5.4).")
    a.sensitivity = _sensitivity(rows, fit, ev)
    a.data = rows
    a.grade = grade(a, ev)


def _sensitivity(rows, fit, ev) -> pd.DataFrame:
    p = ev.params
    tname = MEASURE_TRANSFORM.get(fit.measure or "", "none")
    out = []

    def add(label, y, v, method, ni=None):
        if len(y) == 0:
            out.append({"analysis": label, "k": 0})
            return
        f = rma(np.asarray(y), np.asarray(v), method=method, test=p["test"], level=p["level"], measure=fit.measure, ni=ni)
        t = f.transformed(tname, ni=ni)
        out.append({"analysis": label, "k": f.k, "estimate": t["estimate"], "ci_lb": t["ci_lb"], "ci_ub": t["ci_ub"],
                    "tau2": f.tau2, "I2": f.I2})

    ni = rows["n"].astype(float).to_numpy() if "n" in rows else None
    add(f"main ({p['method']})", rows["yi"], rows["vi"], p["method"], ni)
    for m in ("FE", "DL", "REML", "PM", "ML"):
        if m != p["method"]:
            add(f"estimator {m}", rows["yi"], rows["vi"], m, ni)
    keep = ~rows["rob_high"].astype(bool)
    add("excluding high/serious risk of bias", rows.loc[keep, "yi"], rows.loc[keep, "vi"], p["method"],
        None if ni is None else ni[keep.to_numpy()])
    keep = rows["derived"] == ""
    add("excluding derived values", rows.loc[keep, "yi"], rows.loc[keep, "vi"], p["method"],
        None if ni is None else ni[keep.to_numpy()])
    keep = rows["extraction_level"] == "full_text"
    add("full-text extractions only", rows.loc[keep, "yi"], rows.loc[keep, "vi"], p["method"],
        None if ni is None else ni[keep.to_numpy()])
    return pd.DataFrame(out)


def _normal_pool(a: Analysis, rows, ev: Evidence, measure, tname, ni=None):
    """Fit the normal-normal model to rows' yi/vi, fill a.fit, a.summary (natural scale), a.heterogeneity;
    returns rows with percentage weights."""
    p = ev.params
    fit = rma(rows["yi"], rows["vi"], method=p["method"], test=p["test"], level=p["level"], measure=measure,
              ni=ni, slab=list(rows["label"]))
    a.fit = fit
    t = fit.transformed(tname, ni=ni)
    a.summary.update({k: t[k] for k in ("estimate", "ci_lb", "ci_ub", "pi_lb", "pi_ub")})
    a.heterogeneity = _het(fit)
    return rows.assign(weight=fit.weights)


def _het(fit) -> dict:
    return {"tau2": fit.tau2, "tau2_ci": fit.tau2_ci, "I2": fit.I2, "I2_ci": fit.I2_ci, "H2": fit.H2,
            "Q": fit.Q, "Q_df": fit.Q_df, "Q_pval": fit.Q_pval, "Q_type": "Cochran"}


def _z(level):
    from scipy.special import ndtri
    return float(-ndtri((1 - level) / 2))


def _fmt_est(a: Analysis, x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if a.kind == "proportion":
        return f"{100 * x:.1f}%"
    return f"{x:.2f}"


def _clean(d):
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, float)):
            out[k] = None if math.isnan(float(v)) else float(v)
        elif isinstance(v, (np.integer,)):
            out[k] = int(v)
        elif isinstance(v, (list, tuple)):
            out[k] = [None if x is None else float(x) for x in v]
        else:
            out[k] = v
    return out

