"""Domain analyses behind the notebooks: parameters, study selection, pooling, sensitivity, GRADE.

A notebook calls ``validate_params`` on its parameters, ``load_evidence`` for the filtered data, then one
of ``proportion_analysis`` / ``prepost_analysis`` / ``comparison_analysis`` / ``swim_analysis`` per question.
Each returns an ``Analysis`` whose fields hold every number the notebook shows, and whose ``sentence()``
states the result in words built from those numbers.

Selection rules (stated in the output where applied):
- a pool takes rows of one outcome code (``ivighelpers.vocabulary``); a broad pool over several codes is
  labelled as such and tested with the definition as moderator;
- rows of a combined regimen (e.g. pulse methylprednisolone + IVIG) never enter an immunoglobulin pool;
- population: ``non_ibm`` (DM, PM, IMNM, antisynthetase, JDM: the headline efficacy pools) takes a study's
  whole-sample result only if at most 20% of its patients have IBM, otherwise its non-IBM result if printed;
  ``ibm`` takes IBM results, or whole-sample results of studies with >= 80% IBM;
- one report per cohort per outcome (``data/cohorts.csv``): the largest n, then the longest follow-up, then
  the deeper extraction (full text > tables > abstract), then the later year; the other reports are shown
  and used in a sensitivity analysis;
- a pooled number is declined when studies are too unlike: two studies whose CIs do not overlap, or I2 > 75%
  together with a prediction interval spanning more than half of 0-100% (proportions) or more than a 10-fold
  range (ratios); the studies and their range are shown instead, with no pooled weights or GRADE rating;
- randomised trials never enter a single-arm pool: their arms are analysed as the comparison
  (``ivighelpers.trials``), not as an uncontrolled rate.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special

from . import diagnostics as dg
from . import grade as gr
from .bayes import bayesmeta
from .data import SECONDARY_SOURCES, load_all, possible_overlaps
from .effects import MEASURE_TRANSFORM, escalc, transform
from .errors import ConvergenceWarning, InputError, MissingValueWarning, ParameterError
from .meta import METHODS, _crit, rma, rma_subgroups
from .models import rma_glmm
from .swim import romc_grid, vote_count
from .vocabulary import BROAD_POOLS, OUTCOMES
from .trials import marginal_risk

DESIGNS = ("rct", "crossover_rct", "prospective_open", "retrospective_cohort", "case_series",
           "nonrandomized_controlled", "registry")
SUBTYPES = ("dm", "pm", "ibm", "imnm", "asyns", "jdm", "cadm", "other")
NON_IBM = ("dm", "pm", "imnm", "asyns", "jdm", "cadm", "other", "non_ibm")
POPULATIONS = ("non_ibm", "ibm", "all")
DEFAULT_PARAMS = {
    "method": "REML", "test": "z", "level": 0.95, "transform": "PLO", "ri": 0.5, "add": 0.5, "to": "only0",
    "designs": "all", "subtypes": "all", "subtype_share": 0.8, "route": "all", "line": "all", "population": "all",
    "year_min": 1900, "year_max": 2100, "min_n": 1, "exclude_high_rob": False, "exclude_derived": False,
    "exclude_secondary": False,
}
ALLOWED = {
    "method": METHODS, "test": ("z", "knha"), "transform": ("PLO", "PFT", "PAS", "PR", "GLMM"),
    "to": ("only0", "all", "if0all", "none"),
}
FILTERS = {  # list-valued filters: "all" or a list of these
    "designs": DESIGNS, "subtypes": SUBTYPES, "route": ("IVIG", "SCIg", "both"),
    "line": ("first_line", "refractory", "maintenance", "mixed", "unclear"),
    "population": ("adult", "juvenile", "mixed", "unclear"),
}
PARAM_HELP = {
    "method": "tau2 estimator: " + ", ".join(METHODS), "test": "CI method: z (normal) or knha (Knapp-Hartung)",
    "level": "confidence level, in (0, 1)", "transform": "proportions: PLO (logit), PFT, PAS, PR, GLMM (exact binomial)",
    "ri": "assumed pre-post correlation, in [-1, 1]", "add": "continuity correction for zero cells, >= 0",
    "to": "where to add it: only0, all, if0all, none",
    "designs": "study designs: all, or a list of " + ", ".join(DESIGNS),
    "subtypes": "subtypes: all, or a list of " + ", ".join(SUBTYPES),
    "subtype_share": "share of a study's patients with the chosen subtypes, in [0.5, 1]",
    "route": "all, or a list of IVIG, SCIg, both", "line": "all, or a list of first_line, refractory, maintenance, mixed, unclear",
    "population": "all, or a list of adult, juvenile, mixed, unclear", "year_min": "publication year from (whole number)",
    "year_max": "publication year to (whole number)", "min_n": "minimum Ig-treated patients per study",
    "exclude_high_rob": "true/false: drop studies at high/serious/critical risk of bias",
    "exclude_derived": "true/false: drop derived values (counts from %, SDs from p or CI)",
    "exclude_secondary": "true/false: drop values read on secondary pages (news, manufacturer, other reviews)",
}
HIGH_ROB = {"high", "serious", "critical"}
RANDOMISED = ("rct", "crossover_rct")
SUBGROUP_VARIABLES = {"subtype": "predominant subtype", "route": "route", "line": "line of therapy",
                      "population": "adult or juvenile", "design_group": "design"}
COLUMN_WORDS = {"n": "number of patients", "events": "number with the outcome", "mean_pre": "mean before",
                "mean_post": "mean after", "sd_pre": "SD before", "sd_post": "SD after"}
LEVEL_RANK = {"full_text": 2, "tables": 1, "abstract": 0}
DECLINE_I2 = 75.0
BAYES_SCALES = (0.5, 1.0)


def validate_params(params: dict) -> dict:
    """Check notebook parameters; raise ParameterError naming the parameter and what is allowed."""
    unknown = set(params) - set(DEFAULT_PARAMS) - {"domain", "output_dir"}
    if unknown:
        raise ParameterError(f"unknown parameter(s) {sorted(unknown)}; allowed: {', '.join(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if k in DEFAULT_PARAMS}}
    for key, allowed in ALLOWED.items():
        p[key] = _case(key, p[key], allowed)
    try:
        p["level"] = float(p["level"])
        p["ri"] = float(p["ri"])
        p["add"] = float(p["add"])
        p["subtype_share"] = float(p["subtype_share"])
    except (TypeError, ValueError):
        raise ParameterError("level, ri, add and subtype_share must be numbers") from None
    if not 0 < p["level"] < 1:
        raise ParameterError(f"level={p['level']!r} must lie in (0, 1), e.g. 0.95")
    if not -1 <= p["ri"] <= 1:
        raise ParameterError(f"ri={p['ri']!r} (assumed pre-post correlation) must lie in [-1, 1]")
    if p["add"] < 0:
        raise ParameterError(f"add={p['add']!r} (continuity correction) must be >= 0")
    if not 0.5 <= p["subtype_share"] <= 1:
        raise ParameterError(f"subtype_share={p['subtype_share']!r} (share of a study's patients with the chosen "
                             "subtypes) must lie in [0.5, 1]")
    for key, allowed in FILTERS.items():
        val = p[key]
        if isinstance(val, str):
            vals = [v.strip() for v in val.strip().strip("[]").split(",") if v.strip()]
        elif isinstance(val, (list, tuple)):
            vals = list(val)
        else:
            raise ParameterError(f"{key}={val!r} must be 'all' or a list of {', '.join(allowed)}")
        if [str(v).lower() for v in vals] == ["all"] or not vals:
            p[key] = "all"
            continue
        out = []
        for v in vals:
            try:
                out.append(_case(key, v, allowed))
            except ParameterError:
                raise ParameterError(f"{key}={val!r}: {[v]} not allowed; allowed: 'all' or a list of "
                                     f"{', '.join(allowed)}") from None
        p[key] = out
    for key in ("year_min", "year_max", "min_n"):
        p[key] = _whole(key, p[key])
    if p["min_n"] < 1:
        raise ParameterError(f"min_n={p['min_n']!r} (minimum Ig-treated patients per study) must be >= 1")
    if p["year_min"] > p["year_max"]:
        raise ParameterError(f"year_min ({p['year_min']}) is after year_max ({p['year_max']})")
    for key in ("exclude_high_rob", "exclude_derived", "exclude_secondary"):
        v = p[key]
        if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no"):
            v = v.lower() in ("true", "yes")
        if not isinstance(v, (bool, np.bool_)):
            raise ParameterError(f"{key}={p[key]!r} must be True or False")
        p[key] = bool(v)
    return p


def _whole(key, value) -> int:
    """A whole number from an int, an integral float or its text; 5.7 is refused, not truncated."""
    v = value
    if isinstance(v, str):
        v = v.strip()
        try:
            v = int(v)
        except ValueError:
            try:
                v = float(v)
            except ValueError:
                pass
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, float, np.floating)) \
            or (isinstance(v, (float, np.floating)) and not float(v).is_integer()):
        raise ParameterError(f"{key}={value!r} must be a whole number")
    return int(v)


def _case(key, value, allowed):
    """The allowed value matching ``value`` case-insensitively (e.g. 'dm' or 'DM', 'scig' for 'SCIg')."""
    if value in allowed:
        return value
    hits = [a for a in allowed if str(a).lower() == str(value).lower()]
    if len(hits) == 1:
        return hits[0]
    raise ParameterError(f"{key}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


@dataclass
class Evidence:
    tables: dict
    studies: pd.DataFrame          # after filters, with derived study-level variables
    outcomes: pd.DataFrame         # outcomes of those studies
    filter_log: list               # (filter, studies removed, which)
    params: dict
    _reselected: dict = field(default_factory=dict, repr=False, compare=False)


def reselect(ev: Evidence, params: dict) -> Evidence:
    """``load_evidence(params)`` on the tables of ``ev``, computed once per distinct selection and kept on ``ev``
    (a report's published comparisons re-select its evidence dozens of times with a few distinct selections)."""
    p = validate_params(params)
    key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(p.items()))
    if key not in ev._reselected:
        ev._reselected[key] = load_evidence(p, tables=ev.tables)
    return ev._reselected[key]


def load_evidence(params: dict, tables: dict | None = None) -> Evidence:
    """Load data/ and apply the inclusion filters of ``params``; the log says what each filter removed."""
    p = validate_params(params)
    t = tables or load_all()
    st = _study_variables(t)
    log = []

    def apply(name, mask):
        nonlocal st
        gone = st.loc[~mask, "label"].tolist()
        st = st[mask]
        log.append((name, len(gone), gone))

    if p["designs"] != "all":
        apply(f"designs in {p['designs']}", st["design"].isin(p["designs"]))
    if p["subtypes"] != "all":
        share = _share(st, p["subtypes"])
        own = set(t["outcomes"].loc[t["outcomes"]["subgroup"].isin(p["subtypes"]), "study_id"])
        apply(f"at least {100 * p['subtype_share']:.0f}% of patients with subtype in {p['subtypes']}, or results "
              "reported for that subtype", (share >= p["subtype_share"]) | st["study_id"].isin(own))
    for key in ("route", "line", "population"):
        if p[key] != "all":
            apply(f"{key} in {p[key]}", st[key].isin(p[key]))
    if (p["year_min"], p["year_max"]) != (1900, 2100):
        undated = st["year"].isna()
        apply(f"year {p['year_min']}-{p['year_max']} (undated studies are removed)",
              st["year"].fillna(0).between(p["year_min"], p["year_max"]) & ~undated)
    if p["min_n"] > 1:
        apply(f"at least {p['min_n']} Ig-treated patients (studies with n not printed are removed)",
              st["n_ig"].fillna(0) >= p["min_n"])
    if p["exclude_high_rob"]:
        apply("overall risk of bias not high/serious/critical", ~st["rob_high"])
    oc = t["outcomes"][t["outcomes"]["study_id"].isin(st["study_id"])]
    if p["exclude_derived"]:
        oc = oc[oc["derived"] == ""]
    if p["exclude_secondary"]:
        oc = oc[~oc["source_type"].isin(SECONDARY_SOURCES)]
    return Evidence(t, st.reset_index(drop=True), oc.reset_index(drop=True), log, p)


@dataclass
class Analysis:
    name: str
    title: str
    kind: str                       # proportion | prepost | comparison | swim
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
    codes: tuple = ()
    population: str = "all"
    merged: list = field(default_factory=list)       # cohort merges: {cohort, kept, dropped, rule}
    alternatives: pd.DataFrame | None = None         # rows of the other reports of merged cohorts
    bayes: dict = field(default_factory=dict)        # tau prior scale -> BayesResult
    declined: str = ""                               # why no single pooled number is given
    extra: dict = field(default_factory=dict)

    @property
    def pooled(self) -> bool:
        return self.fit is not None and self.k >= 2

    @property
    def headline(self) -> bool:
        """A pooled number may be given (pooled, and not declined by the rule)."""
        return self.pooled and not self.declined and not self.summary.get("exact_total")

    def sentence(self) -> str:
        """The result in one sentence, built from the numbers."""
        lv = f"{round(self.params['level'] * 100):g}%"
        if self.k == 0:
            return f"{self.title}: no study in the current selection reports usable data, so nothing is pooled."
        if self.kind == "swim":
            vc = self.extra["vote"]
            return (f"{self.title}: {vc.sentence()}. The size of the change cannot be pooled: "
                    f"{'no study prints' if 'romc' not in self.extra else 'few studies print'} means with spreads.")
        if self.k == 1:
            r = self.data.iloc[0]
            return (f"{self.title}: only one study ({r['label']}) reports usable data "
                    f"({fmt_est(self, r['est'])}, {lv} CI {fmt_est(self, r['ci_lb'])} to {fmt_est(self, r['ci_ub'])}); "
                    "no pooling is possible.")
        s = self.summary
        if s.get("exact_total"):
            return (f"{self.title}: none of {self.k} studies can be pooled by the GLMM ({self.notes[0]}); "
                    f"total {fmt_est(self, s['estimate'])} ({lv} exact CI {fmt_est(self, s['ci_lb'])} to "
                    f"{fmt_est(self, s['ci_ub'])}) in {self.n_patients} patients.")
        if self.declined:
            lo, hi = self.data["est"].min(), self.data["est"].max()
            return (f"{self.title}: no single pooled number is given. The {self.k} studies ({self.n_patients} patients) "
                    f"range from {fmt_est(self, lo)} to {fmt_est(self, hi)}; {self.declined}")
        h = self.heterogeneity
        if s.get("marginal") is not None:
            return (f"{self.title}: population-average {self.summary['label']} {fmt_est(self, s['marginal'])} "
                    f"({lv} CI {fmt_est(self, s['marginal_lb'])} to {fmt_est(self, s['marginal_ub'])}; GLMM, "
                    f"{self.k} studies with {self.n_patients} patients); the median study's "
                    f"{fmt_est(self, s['estimate'])} ({fmt_est(self, s['ci_lb'])} to {fmt_est(self, s['ci_ub'])})"
                    + (f"; {lv} prediction interval {fmt_est(self, s['pi_lb'])} to {fmt_est(self, s['pi_ub'])}"
                       if s.get("pi_lb") is not None else "")
                    + (f"; I\u00b2 = {h['I2']:.0f}%" if h.get("I2") is not None else "") + ".")
        txt = (f"{self.title}: pooled {self.summary['label']} {fmt_est(self, s['estimate'])} "
               f"({lv} CI {fmt_est(self, s['ci_lb'])} to {fmt_est(self, s['ci_ub'])}"
               + (f"; Knapp-Hartung {fmt_est(self, s['ci_hksj_lb'])} to {fmt_est(self, s['ci_hksj_ub'])}"
                  if s.get("ci_hksj_lb") is not None else "")
               + f") from {self.k} studies with {self.n_patients} patients")
        if s.get("pi_lb") is not None:
            txt += f"; {lv} prediction interval {fmt_est(self, s['pi_lb'])} to {fmt_est(self, s['pi_ub'])}"
        else:
            txt += "; no prediction interval (fewer than 3 studies)"
        if h.get("I2") is not None:
            txt += f"; I\u00b2 = {h['I2']:.0f}%"
            if h.get("I2_ci"):
                txt += f" ({h['I2_ci'][0]:.0f}% to {h['I2_ci'][1]:.0f}%)"
        return txt + "."

    def results_json(self) -> dict:
        """Key results for tests and for the report's JSON file."""
        out = {"name": self.name, "title": self.title, "kind": self.kind, "measure": self.measure, "k": self.k,
               "n_patients": self.n_patients, "studies": list(self.data["study_id"]) if len(self.data) else [],
               "codes": list(self.codes), "population": self.population, "declined": self.declined,
               "summary": _clean(self.summary), "heterogeneity": _clean(self.heterogeneity),
               "grade": {k: v for k, v in self.grade.items() if k != "domains"} if self.grade else {},
               "merged": self.merged, "sentence": self.sentence()}
        if self.bayes:
            out["bayes"] = {str(k): _clean(b.transformed(_natural(self), ni=self.extra.get("bayes_ni")))
                            for k, b in self.bayes.items()}
        return out


# ---------------------------------------------------------------------------------------------
# analyses

def proportion_analysis(ev: Evidence, name: str, title: str, codes, label: str = "proportion",
                        population: str = "all", light: bool = False) -> Analysis:
    """Pool a single-arm proportion (events / n in the Ig arm) of the outcome ``codes`` (one code, or a
    broad pool name from ``vocabulary.BROAD_POOLS``).

    Transform from ``params['transform']``: PLO, PFT, PAS, PR with the chosen tau2 estimator, or GLMM
    (binomial-normal model, exact likelihood). Beside the main fit: Knapp-Hartung CI, prediction interval
    on t with k - 2 df, Bayesian fits with half-normal(0.5) and half-normal(1) priors on tau, and the GLMM
    (or the logit model when the GLMM is the main one) as sensitivity analyses. ``light``: the main fit, its
    summary and the decline rule only (what a like-for-like comparison with a published estimate needs).
    """
    p = ev.params
    codes, broad = _codes(codes)
    rows, excluded, merged, alts = _pick(ev, codes, need=("events", "n"), population=population)
    a = Analysis(name, title, "proportion", p["transform"], p, pd.DataFrame(), excluded=excluded, codes=codes,
                 population=population, merged=merged, alternatives=alts)
    a.summary["label"] = label
    if broad:
        a.notes.append(f"Broad pool: {broad}. The definitions differ; the test of definition as moderator is shown.")
    if rows.empty:
        return a
    x = rows["events"].astype(float).to_numpy()
    n = rows["n"].astype(float).to_numpy()
    measure = "PLO" if p["transform"] == "GLMM" else p["transform"]
    es = _escalc_quiet(measure, xi=x, ni=n, add=p["add"], to=p["to"])
    rows = rows.assign(yi=es["yi"].to_numpy(), vi=es["vi"].to_numpy())
    bad = _not_estimable(a, rows, measure, p, glmm=p["transform"] == "GLMM")
    if bad.any() and p["transform"] != "GLMM":
        rows = rows[~bad].reset_index(drop=True)
        x, n = x[~bad], n[~bad]
        bad = np.zeros(len(rows), dtype=bool)
        if rows.empty:
            return a
    a.k, a.n_patients = len(rows), int(n.sum())
    tname = MEASURE_TRANSFORM[measure]
    lo, hi = clopper_pearson(x, n, p["level"])  # per-study CIs for display: exact, valid at 0/n and n/n
    rows = rows.assign(est=x / n, ci_lb=lo, ci_ub=hi)
    if a.k == 1:
        a.data = rows.assign(weight=100.0)
        a.grade = gr.suggest(a, ev)
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
        a.grade = gr.suggest(a, ev)
        return a
    nn_rows = rows[~bad].reset_index(drop=True) if bad.any() else rows  # the normal-normal models' studies
    nn_fit = None if nn_rows.empty else rma(nn_rows["yi"], nn_rows["vi"], method=p["method"], test=p["test"],
                                            level=p["level"], measure=measure,
                                            ni=nn_rows["n"].astype(float).to_numpy(), slab=list(nn_rows["label"]))
    glmm = _try_glmm(x, n, p["level"], a) if (not light or p["transform"] == "GLMM") else None
    if p["transform"] == "GLMM" and glmm is not None:
        a.fit = glmm
        t = glmm.transformed("ilogit")
        a.summary.update({k: t[k] for k in ("estimate", "ci_lb", "ci_ub")})
        # the population-average risk E[expit(mu + tau Z)] is the headline; expit(mu) is the median study's risk
        a.summary.update(marginal=marginal_risk(glmm.estimate, glmm.tau2),
                         marginal_lb=marginal_risk(glmm.ci_lb, glmm.tau2), marginal_ub=marginal_risk(glmm.ci_ub, glmm.tau2))
        pi = _pi_k2(glmm.estimate, glmm.se, glmm.tau2, a.k, p["level"])
        a.summary.update(pi_lb=None if pi is None else float(special.expit(pi[0])),
                         pi_ub=None if pi is None else float(special.expit(pi[1])))
        a.heterogeneity = {"tau2": glmm.tau2, "I2": glmm.I2, "Q": glmm.QE_lrt, "Q_pval": glmm.QE_lrt_pval,
                           "Q_type": "likelihood ratio", "I2_ci": None, "tau2_ci": None, "nAGQ": glmm.nAGQ}
        # display weights: logit variance (with the default 0.5 correction where a cell is 0) + tau2
        vw = escalc("PLO", xi=x, ni=n)["vi"].to_numpy()
        w = 1 / (vw + glmm.tau2)
        rows = rows.assign(weight=100 * w / w.sum())
        a.notes.append(f"GLMM fitted with {glmm.nAGQ}-node adaptive quadrature (nodes increased from 7 until the "
                       "estimate and tau\u00b2 changed by < 1e-7). Weights shown are approximate (logit variance + tau\u00b2).")
        if nn_fit is not None and not light:
            _post_fit(a, nn_rows, nn_fit, ev)
        a.data = rows
        if not light:
            _glmm_loo(a, x, n)
            main = {"analysis": f"main (GLMM, ML, {glmm.nAGQ}-node quadrature)", "k": a.k, "estimate": t["estimate"],
                    "ci_lb": t["ci_lb"], "ci_ub": t["ci_ub"], "tau2": glmm.tau2, "I2": glmm.I2}
            nn = a.sensitivity if a.sensitivity is not None else pd.DataFrame({"analysis": pd.Series(dtype=str)})
            a.sensitivity = pd.concat([pd.DataFrame([main]), nn.assign(
                analysis=nn["analysis"].str.replace("main", "normal-normal PLO"))], ignore_index=True)
    else:
        if p["transform"] == "GLMM":
            a.notes.append("The GLMM could not be fitted; the normal-normal logit model is used instead.")
            if nn_rows.empty:
                a.data = rows.assign(weight=np.nan)
                a.grade = gr.suggest(a, ev)
                return a
            rows = nn_rows
            a.k, a.n_patients = len(rows), int(rows["n"].sum())
        rows = _normal_pool(a, rows, ev, measure, tname, ni=rows["n"].astype(float).to_numpy())
        if light:
            a.data = rows
        else:
            _post_fit(a, rows, a.fit, ev)
        if glmm is not None and measure == "PLO" and not light:
            t = glmm.transformed("ilogit")
            a.sensitivity = pd.concat([a.sensitivity, pd.DataFrame([{
                "analysis": f"GLMM, exact binomial likelihood ({glmm.nAGQ}-node quadrature)", "k": a.k,
                "estimate": t["estimate"], "ci_lb": t["ci_lb"], "ci_ub": t["ci_ub"], "tau2": glmm.tau2,
                "I2": glmm.I2}])], ignore_index=True)
    if light:
        _decline_rule(a)
        return a
    _bayes(a, nn_rows, measure if measure != "GLMM" else "PLO")
    _decline_rule(a)
    if broad and len(nn_rows):
        _definition_test(a, nn_rows)
    a.grade = gr.suggest(a, ev)
    return a


def prepost_analysis(ev: Evidence, name: str, title: str, codes, measure: str = "SMCR",
                     label: str = "standardised mean change", unit: str = "", population: str = "all",
                     light: bool = False) -> Analysis:
    """Pool a pre-post change in the Ig arm: SMCR (needs sd of the first measurement), SMCC, MC, ROMC.

    m1i is the later measurement, so a rise is positive; ``params['ri']`` is the assumed pre-post
    correlation where the study does not report one. ``light``: the main fit, its summary and the decline rule.
    """
    p = ev.params
    codes, _ = _codes(codes)
    need = ("n", "mean_pre", "mean_post", "sd_pre", "sd_post") if measure != "SMCR" else ("n", "mean_pre", "mean_post", "sd_pre")
    rows, excluded, merged, alts = _pick(ev, codes, need=need, population=population)
    a = Analysis(name, title, "prepost", measure, p, pd.DataFrame(), excluded=excluded, unit=unit, codes=codes,
                 population=population, merged=merged, alternatives=alts)
    a.summary["label"] = label
    if rows.empty:
        return a
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
    if light:
        a.data = rows
        _decline_rule(a)
        return a
    _post_fit(a, rows, a.fit, ev)
    _bayes(a, rows, measure)
    _decline_rule(a)
    a.grade = gr.suggest(a, ev)
    return a


def swim_analysis(ev: Evidence, name: str, title: str, codes, good: str, population: str = "all",
                  binary_codes=()) -> Analysis:
    """Synthesis without meta-analysis of a continuous outcome whose SDs are missing (SWiM; Cochrane Handbook
    12.2): one direction per cohort (from printed numbers, or the words of the report, ``direction`` column),
    vote counting with a sign test and a Wilson CI; a ratio-of-means grid (``swim.romc_grid``) over imputed CV
    and pre-post correlation for the studies that print means before and after.

    ``good`` is the direction of benefit ('decrease' for CK and glucocorticoid dose, 'increase' for strength).
    ``binary_codes``: binary outcomes of the same construct (e.g. 'glucocorticoid dose reduced') whose
    events > 0 count as votes in the good direction only when the study has no continuous row.
    """
    p = ev.params
    codes, _ = _codes(codes)
    a = Analysis(name, title, "swim", "vote counting", p, pd.DataFrame(), codes=codes, population=population)
    a.summary["label"] = f"studies showing a {'fall' if good == 'decrease' else 'rise'}"
    oc = _eligible_rows(ev, codes, population)[0]
    oc = oc[oc["direction"] != ""]
    rows = []
    for sid, g in oc.groupby("study_id", sort=False):
        r = g.assign(_n=g["n"].fillna(0)).sort_values("_n", ascending=False, kind="stable").iloc[0]
        rows.append(r)
    if binary_codes:
        bc = _eligible_rows(ev, list(binary_codes), population)[0]
        bc = bc[bc["events"].notna() & bc["n"].notna() & (bc["n"] > 0)]
        have = {r["study_id"] for r in rows}
        for sid, g in bc.groupby("study_id", sort=False):
            if sid in have:
                continue
            r = g.sort_values("n", ascending=False, kind="stable").iloc[0].copy()
            if r["events"] > 0:
                r["direction"] = good
                r["notes"] = f"{int(r['events'])}/{int(r['n'])} patients: {r['definition']}"
                rows.append(r)
    if not rows:
        return a
    d = pd.DataFrame(rows).reset_index(drop=True).drop(columns=["_n"], errors="ignore")
    d = d.drop(columns=["source"]).merge(ev.studies[_STUDY_KEEP], on="study_id", how="left")
    d, merged, alts = _one_per_cohort(d)
    a.merged, a.alternatives = merged, alts
    a.data = d.sort_values(["year", "label"], kind="stable").reset_index(drop=True)
    a.k = len(a.data)
    a.n_patients = int(a.data["n"].fillna(0).sum())
    a.extra["n_missing"] = int(a.data["n"].isna().sum())
    dirs = a.data["direction"].map({"increase": 1.0, "decrease": -1.0, "no_change": 0.0}).to_numpy()
    vc = vote_count(dirs, direction="fall" if good == "decrease" else "rise", level=p["level"])
    a.extra["vote"] = vc
    a.summary.update({"estimate": vc.proportion, "ci_lb": vc.ci_lb, "ci_ub": vc.ci_ub, "sign_pval": vc.pval,
                      "favouring": vc.favouring, "voting": vc.voting})
    # Stouffer's combined test needs exact p-values (and n): one-sided p = p/2 in the direction of the change
    from .derive import parse_exact_p
    from .swim import stouffer
    ex = [(parse_exact_p(r["p_value"]), r["n"], r["direction"]) for _, r in a.data.iterrows()]
    ex = [(pv, n, d) for pv, n, d in ex if pv is not None and 0 < pv < 1 and pd.notna(n) and d in ("increase", "decrease")]
    if len(ex) >= 2:
        one = [pv / 2 if d == good else 1 - pv / 2 for pv, n, d in ex]
        a.extra["stouffer"] = stouffer(one, [n for _, n, _ in ex])
    else:
        a.extra["stouffer_note"] = (f"Stouffer's combined test is not given: {len(ex)} "
                                    f"{'study prints' if len(ex) == 1 else 'studies print'} an exact p-value with n "
                                    "(at least 2 are needed; bounds such as p < 0.05 cannot be combined).")
    means = a.data[a.data["mean_pre"].notna() & a.data["mean_post"].notna() & a.data["n"].notna()]
    means = means[(means["mean_pre"] > 0) & (means["mean_post"] > 0)]
    if len(means) >= 1:
        a.extra["romc"] = romc_grid(means["mean_pre"], means["mean_post"], means["n"], method="DL" if len(means) > 1 else "FE",
                                    level=p["level"])
        a.extra["romc_studies"] = list(means["label"])
    a.grade = gr.suggest(a, ev)
    return a


def comparison_analysis(ev: Evidence, name: str, title: str, codes, measure: str = "RR",
                        label: str = "risk ratio (Ig vs placebo)", list_all: bool = False) -> Analysis:
    """Randomised comparison Ig vs placebo on a binary outcome. Arms are paired by the explicit ``comparison``
    key in the data (first-period or pooled crossover periods, as the key says); RR (or OR) with the risk
    difference, the absolute effect per 1,000 from the control-arm risk and the NNT."""
    p = ev.params
    codes, _ = _codes(codes)
    st = ev.studies.set_index("study_id")
    oc = ev.outcomes
    sel = oc[oc["outcome_code"].isin(codes) & oc["events"].notna() & oc["n"].notna() & (oc["n"] > 0)
             & (oc["combined_regimen"] == "")]
    pairs, unusable = [], []
    rand = st[st["design"].isin(list(RANDOMISED))]
    for sid in rand.index:
        g = sel[sel["study_id"] == sid]
        found = None
        for key, kg in g[g["comparison"] != ""].groupby("comparison", sort=False):
            ig = kg[kg["arm"].isin(["ig", "ig_then_placebo"])]
            pl = kg[kg["arm"].isin(["placebo", "placebo_then_ig", "control"])]
            if len(ig) and len(pl):
                found = (key, ig.iloc[0], pl.iloc[0])
                break
        if found is None:
            anyrows = oc[(oc["study_id"] == sid) & oc["outcome_code"].isin(codes)]
            if anyrows.empty and not list_all:
                continue
            why = ("no result for this outcome" if anyrows.empty else
                   "arms not paired by a comparison key, or counts per arm not printed")
            unusable.append({"study": st.loc[sid, "label"], "design": st.loc[sid, "design"], "reason": why})
            continue
        key, r, q = found
        pairs.append({"study_id": sid, "label": st.loc[sid, "label"], "design": st.loc[sid, "design"],
                      "ai": r["events"], "n1i": r["n"], "ci": q["events"], "n2i": q["n"], "comparison": key,
                      "definition": r["definition"], "timepoint": r["timepoint"], "outcome_code": r["outcome_code"],
                      "rob_overall": st.loc[sid, "rob_overall"], "rob_high": st.loc[sid, "rob_high"],
                      "result_ids": f"{r['result_id']}, {q['result_id']}"})
    rows = pd.DataFrame(pairs)
    a = Analysis(name, title, "comparison", measure, p, pd.DataFrame(), codes=codes)
    a.excluded = pd.DataFrame(unusable)
    a.summary["label"] = label
    if rows.empty:
        return a
    es = _escalc_quiet(measure, ai=rows["ai"].astype(float), n1i=rows["n1i"].astype(float),
                       ci=rows["ci"].astype(float), n2i=rows["n2i"].astype(float), add=p["add"], to=p["to"])
    bad = ~_estimable(es["yi"].to_numpy(), es["vi"].to_numpy())
    if bad.any():
        gone = rows[bad]
        a.excluded = pd.concat([a.excluded, pd.DataFrame(
            [{"study": r.label, "design": r.design, "reason": _NOT_ESTIMABLE.format(measure=measure)}
             for r in gone.itertuples()])], ignore_index=True)
        a.notes.append(f"{_n_studies(len(gone))} ({', '.join(gone['label'])}) left out: "
                       + _NOT_ESTIMABLE.format(measure=measure) + ".")
        rows, es = rows[~bad].reset_index(drop=True), es[~bad].reset_index(drop=True)
        if rows.empty:
            return a
    yi, vi = es["yi"].to_numpy(), es["vi"].to_numpy()
    z = _z(p["level"])
    tname = MEASURE_TRANSFORM[measure]
    # risk difference from the raw counts (no continuity correction: a zero cell has a finite RD variance);
    # only where the variance is 0 (0/n or n/n in both arms) is the 0.5 correction used
    cnt = dict(ai=rows["ai"].astype(float), n1i=rows["n1i"].astype(float), ci=rows["ci"].astype(float),
               n2i=rows["n2i"].astype(float))
    rd = escalc("RD", **cnt, add=0, to="none")
    if (rd["vi"] <= 0).any():
        rd_c = escalc("RD", **cnt, add=p["add"], to="all")
        rd = rd.where(rd["vi"] > 0, rd_c)
    rows = rows.assign(yi=yi, vi=vi, n=rows["n1i"] + rows["n2i"], est=transform(yi, tname),
                       ci_lb=transform(yi - z * np.sqrt(vi), tname), ci_ub=transform(yi + z * np.sqrt(vi), tname),
                       rd=rd["yi"].to_numpy(), rd_lb=rd["yi"].to_numpy() - z * np.sqrt(rd["vi"].to_numpy()),
                       rd_ub=rd["yi"].to_numpy() + z * np.sqrt(rd["vi"].to_numpy()),
                       risk_ig=rows["ai"] / rows["n1i"], risk_ctrl=rows["ci"] / rows["n2i"])
    rows = rows.assign(per1000_ctrl=1000 * rows["risk_ctrl"], per1000_ig=1000 * rows["risk_ig"])
    a.k, a.n_patients = len(rows), int(rows["n"].sum())
    codes_used = list(dict.fromkeys(rows["outcome_code"]))
    if a.k >= 2 and len(codes_used) > 1:
        a.declined = ("the trials measure different outcomes (" + "; ".join(
            f"{r.label}: {OUTCOMES[r.outcome_code].label}" for r in rows.itertuples())
            + "), so each trial is shown on its own and no pooled risk ratio is given.")
        a.data = rows.assign(weight=100 * (1 / rows["vi"]) / (1 / rows["vi"]).sum())
        a.grade = gr.suggest(a, ev)
        return a
    if a.k == 1:
        r = rows.iloc[0]
        a.data = rows.assign(weight=100.0)
        a.summary.update({"estimate": r["est"], "ci_lb": r["ci_lb"], "ci_ub": r["ci_ub"]})
        rr, rlo, rhi, cr = r["est"], r["ci_lb"], r["ci_ub"], r["risk_ctrl"]
        rdv, rdlo, rdhi = r["rd"], r["rd_lb"], r["rd_ub"]
    else:
        rows = _normal_pool(a, rows, ev, measure, tname)
        a.data = rows
        rdfit = rma(rows["rd"], (rows["rd_ub"] - rows["rd"]) ** 2 / z ** 2, method=p["method"], level=p["level"])
        rr, rlo, rhi = a.summary["estimate"], a.summary["ci_lb"], a.summary["ci_ub"]
        cr = float((rows["ci"].sum()) / rows["n2i"].sum())
        rdv, rdlo, rdhi = rdfit.estimate, rdfit.ci_lb, rdfit.ci_ub
    a.summary.update({"control_risk": cr, "rd": rdv, "rd_lb": rdlo, "rd_ub": rdhi})
    if measure == "RR" and cr > 0:
        # GRADE absolute effect: control risk x RR, bounded by 1,000 per 1,000 (a risk cannot exceed 1)
        cap = lambda x: min(1000.0, 1000 * cr * x)  # noqa: E731
        a.summary.update({"per1000_ctrl": 1000 * cr, "per1000_ig": cap(rr), "per1000_lb": cap(rlo),
                          "per1000_ub": cap(rhi), "per1000_diff": cap(rr) - 1000 * cr, "per1000_from": "risk ratio"})
    elif measure == "RR":
        # no event with placebo: a ratio gives no absolute effect, the risk difference does
        b = lambda x: min(1000.0, max(0.0, 1000 * x))  # noqa: E731
        a.summary.update({"per1000_ctrl": 0.0, "per1000_ig": b(rdv), "per1000_lb": b(rdlo), "per1000_ub": b(rdhi),
                          "per1000_diff": b(rdv), "per1000_from": "risk difference (no event with placebo)"})
    if rdlo > 0 or rdhi < 0:
        a.summary["nnt"] = 1 / abs(rdv)
        a.summary["nnt_ci"] = (1 / abs(rdhi if rdv > 0 else rdlo), 1 / abs(rdlo if rdv > 0 else rdhi))
    a.grade = gr.suggest(a, ev)
    return a


def meta_regression(a: Analysis, variable: str, values, reference) -> dict:
    """Common-tau2 meta-regression of the analysis' effect sizes on a two-level moderator (e.g. IBM vs not)."""
    if a.k < 4 or len(set(values)) < 2:
        return {}
    x = np.asarray([1.0 if v != reference else 0.0 for v in values])
    fit = rma(a.data["yi"], a.data["vi"], mods={variable: x}, method=a.params["method"], test=a.params["test"],
              level=a.params["level"])
    c = fit.coefficients
    row = c.iloc[1]
    return {"variable": variable, "k": fit.k, "coef": float(row["estimate"]), "ci_lb": float(row["ci_lb"]),
            "ci_ub": float(row["ci_ub"]), "pval": float(row["pval"]), "QM": fit.QM, "QM_pval": fit.QM_pval,
            "R2": fit.R2, "tau2": fit.tau2}


def ibm_regression(a: Analysis) -> dict:
    """Meta-regression on IBM (a study's IBM share >= 50%) vs not; {} when the selection leaves too few studies
    (or none: then the analysis has no data columns at all)."""
    if a.data is None or a.data.empty or "ibm_share" not in a.data:
        return {}
    return meta_regression(a, "IBM", a.data["ibm_share"] >= 0.5, reference=False)


def clopper_pearson(x, n, level):
    """Exact binomial (Clopper-Pearson 1934) limits for x events in n; 0 and 1 at the boundaries."""
    x, n = np.asarray(x, dtype=float), np.asarray(n, dtype=float)
    a = 1 - level
    with np.errstate(invalid="ignore"):         # beta quantiles as scipy.stats.beta.ppf computes them
        lo = np.where(x > 0, special.betaincinv(x, n - x + 1, a / 2), 0.0)
        hi = np.where(x < n, special.betaincinv(x + 1, n - x, 1 - a / 2), 1.0)
    return lo, hi


def per_infusion_rates(ev: Evidence) -> pd.DataFrame:
    """Adverse events per 100 infusions (cycles) where a study reports both the number of events (``n_events``, or
    no patient with an event) and the number of infusions: exact Poisson limits (``trials.poisson_rate``,
    Garwood 1936), beside the share of patients with at least one event (Clopper-Pearson). Rows that count
    patients but not events give no exposure rate (a patient count over infusions is not a rate) and are
    returned with ``rate_note``."""
    from .trials import poisson_rate
    oc = ev.outcomes
    r = oc[(oc["domain"] == "safety") & oc["n_infusions"].notna() & (oc["arm"] == "ig")].copy()
    lv = ev.params["level"]
    x = r["n_events"].where(r["n_events"].notna(), r["events"].where(r["events"] == 0))
    r["events_counted"] = x
    rates = [poisson_rate(float(e), float(t), 100, lv) if pd.notna(e) else (np.nan, np.nan, np.nan)
             for e, t in zip(x, r["n_infusions"])]
    r["per_100_infusions"] = [q[0] for q in rates]
    r["ci_lb"] = [q[1] for q in rates]
    r["ci_ub"] = [q[2] for q in rates]
    ok = r["events"].notna() & r["n"].notna()
    lo, hi = clopper_pearson(r.loc[ok, "events"].astype(float).to_numpy(), r.loc[ok, "n"].astype(float).to_numpy(), lv)
    r.loc[ok, "patients_lb"], r.loc[ok, "patients_ub"] = lo, hi
    r["rate_note"] = np.where(x.isna(), "number of events not reported (only patients or episodes): no exposure rate", "")
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


SELECTION_PARAMS = ("designs", "subtypes", "route", "line", "population", "year_min", "year_max", "min_n",
                    "exclude_high_rob", "exclude_derived", "exclude_secondary")


def filtered(params: dict) -> bool:
    """True when a study-selection parameter differs from its default (the run looks at a subset of studies)."""
    return any(params.get(k, DEFAULT_PARAMS[k]) != DEFAULT_PARAMS[k] for k in SELECTION_PARAMS)


# ---------------------------------------------------------------------------------------------
# helpers

_STUDY_KEEP = ["study_id", "label", "cohort_id", "design", "design_group", "route", "line", "population", "subtype",
               "predominant", "ibm_share", "year", "follow_up_months", "rob_overall", "rob_high", "source"]


def _codes(codes):
    """(tuple of outcome codes, broad-pool label or '')."""
    if isinstance(codes, str):
        if codes in BROAD_POOLS:
            c, lab = BROAD_POOLS[codes]
            return tuple(c), lab
        codes = [codes]
    codes = tuple(codes)
    bad = [c for c in codes if c not in OUTCOMES]
    if bad:
        raise InputError(f"unknown outcome code(s) {bad}; see ivighelpers.vocabulary.OUTCOMES")
    return codes, ("" if len(codes) == 1 else "mixed definitions: " + ", ".join(codes))


def _share(st, subtypes):
    cols = [f"n_{s}" for s in SUBTYPES]
    tot = st[cols].astype(float).fillna(0).sum(axis=1)
    num = st[[f"n_{s}" for s in subtypes]].astype(float).fillna(0).sum(axis=1)
    return (num / tot.where(tot > 0)).fillna(0.0)


def _eligible_rows(ev: Evidence, codes, population):
    """Ig-arm rows of the codes that fit the population and subtype filters, and the rows set aside with why."""
    p = ev.params
    oc = ev.outcomes
    oc = oc[oc["outcome_code"].isin(codes) & oc["arm"].isin(["ig"])]
    st = ev.studies.set_index("study_id")
    design, ibm_share = st["design"].to_dict(), st["ibm_share"].to_dict()
    keep, why = [], []
    chosen = p["subtypes"]
    shares = _share(st, chosen).to_dict() if chosen != "all" else {}
    for i, r in zip(oc.index, oc.to_dict("records")):       # plain dicts: a row lookup per result is slow in pandas
        sg = r["subgroup"]
        if r["combined_regimen"]:
            why.append((r, f"combined regimen ({r['combined_regimen']}), not immunoglobulin alone"))
            continue
        if design[r["study_id"]] in RANDOMISED:
            why.append((r, "randomised trial: analysed as a comparison with placebo (randomised evidence), "
                           "never as an uncontrolled rate of its treated arm"))
            continue
        if chosen != "all":
            share = shares[r["study_id"]]
            if not (sg in chosen or (sg == "all" and share >= p["subtype_share"])):
                why.append((r, f"result not restricted to {chosen} (study share {100 * share:.0f}%)"))
                continue
        ibm = ibm_share[r["study_id"]]
        if population == "ibm" and not (sg == "ibm" or (sg == "all" and ibm >= 0.8)):
            if sg == "all" and ibm > 0:
                why.append((r, f"IBM patients {100 * ibm:.0f}% of the study, no separate IBM result"))
            continue
        if population == "non_ibm" and not (sg in NON_IBM or (sg == "all" and not ibm > 0.2)):
            why.append((r, f"IBM patients are {100 * ibm:.0f}% of the study and no separate non-IBM result is printed"
                        if sg == "all" else f"result for the {sg.upper()} subgroup"))
            continue
        keep.append(i)
    rows = oc.loc[keep]
    # prefer whole-sample rows where they fit, then larger n
    rows = rows.assign(_all=(rows["subgroup"] == "all").astype(int))
    return rows, why


def _pick(ev: Evidence, codes, need, population="all"):
    """One row per cohort: per study the first code (in ``codes`` order) with every column in ``need``
    (whole-sample rows before subgroup rows, then the largest n); then one report per cohort."""
    rows, why = _eligible_rows(ev, codes, population)
    chosen, excluded, seen = [], [], set()
    for code in codes:
        sel = rows[rows["outcome_code"] == code]
        for sid, g in sel.groupby("study_id", sort=False):
            if sid in seen:
                continue
            ok = g.dropna(subset=list(need))
            ok = ok[ok["n"] > 0] if "n" in need else ok
            if len(ok):
                chosen.append(ok.sort_values(["_all", "n"], ascending=False, kind="stable").iloc[0])
                seen.add(sid)
            else:
                miss = [COLUMN_WORDS.get(c, c) for c in need if g[c].isna().all()]
                excluded.append({"study_id": sid, "result_id": g["result_id"].iloc[0], "outcome": code,
                                 "reason": "not reported: " + ", ".join(miss)})
    for r, reason in why:
        if r["study_id"] not in seen:
            excluded.append({"study_id": r["study_id"], "result_id": r["result_id"], "outcome": r["outcome_code"],
                             "reason": reason})
    excluded = pd.DataFrame([e for e in excluded if e["study_id"] not in seen]).drop_duplicates("study_id") \
        if excluded else pd.DataFrame()
    if not chosen:
        return pd.DataFrame(), excluded, [], None
    out = pd.DataFrame(chosen).reset_index(drop=True).drop(columns=["_all"])
    out = out.drop(columns=["source"]).merge(ev.studies[_STUDY_KEEP], on="study_id", how="left")
    out, merged, alts = _one_per_cohort(out)
    return out.sort_values(["year", "label"], kind="stable").reset_index(drop=True), excluded, merged, alts


def _one_per_cohort(rows):
    """Keep one report per cohort: largest n, then longest follow-up, then deeper extraction, then later year."""
    if rows.empty:
        return rows, [], None
    r = rows.assign(_n=rows["n"].fillna(-1).astype(float), _fu=rows["follow_up_months"].fillna(-1).astype(float),
                    _lv=rows["extraction_level"].map(LEVEL_RANK).fillna(0), _yr=rows["year"].fillna(0).astype(float))
    r = r.sort_values(["cohort_id", "_n", "_fu", "_lv", "_yr"], ascending=[True, False, False, False, False], kind="stable")
    keep = ~r["cohort_id"].duplicated(keep="first")
    merged = []
    for cid, g in r.groupby("cohort_id", sort=False):
        if len(g) > 1:
            k = g.iloc[0]
            merged.append({"cohort": cid, "kept": k["label"], "dropped": list(g["label"].iloc[1:]),
                           "rule": "largest n, then longest follow-up, then full text over abstract, then later year"})
    alts = r[~keep].drop(columns=["_n", "_fu", "_lv", "_yr"])
    return r[keep].drop(columns=["_n", "_fu", "_lv", "_yr"]), merged, (alts if len(alts) else None)


def _study_variables(t) -> pd.DataFrame:
    st = t["studies"].copy()
    rob = t["risk_of_bias"]
    overall = rob[rob["domain"].str.lower() == "overall"].drop_duplicates("study_id").set_index("study_id")["judgement"]
    st["rob_overall"] = st["study_id"].map(overall).fillna("no_information")
    st["rob_high"] = st["rob_overall"].isin(HIGH_ROB)
    sub = st[[f"n_{s}" for s in SUBTYPES]].astype(float).fillna(0)
    tot = sub.sum(axis=1)
    st["ibm_share"] = (sub["n_ibm"] / tot.where(tot > 0)).fillna(0.0)
    top = (sub.max(axis=1) / tot.where(tot > 0))
    st["predominant"] = np.where(tot == 0, "unclear", np.where(top >= 0.8, sub.idxmax(axis=1).str[2:], "mixed"))
    # the subtype a study stands for: the one with >= 80% of its patients, else "mixed" (or "unclear")
    st["subtype"] = np.where(st["predominant"].isin(["mixed", "unclear"]), st["predominant"],
                             st["predominant"].str.upper())
    st["design_group"] = np.where(st["design"].isin(list(RANDOMISED)), "randomised", "non-randomised")
    journal = st["journal"].fillna("").str.split(r"[,(\d]", regex=True).str[0].str.strip()
    host = st["url"].fillna("").str.extract(r"https?://(?:www\.|cm\.)?([^/]+)", expand=False).fillna("")
    unnamed = np.where(host != "", "Report (" + host + ", authors not shown)", "Unnamed report (authors not shown)")
    anon = (journal + " (authors not shown)").where(journal != "", pd.Series(unnamed, index=st.index))
    auth = st["first_author"].where(st["first_author"] != "", anon).str.replace(r"\s*\((unverified|probable)[^)]*\)$", "",
                                                                                 regex=True)
    yr = pd.Series([str(int(y)) if pd.notna(y) else "n.d." for y in st["year"]], index=st.index)
    st["label"] = auth + " " + yr
    dup = st["label"].duplicated(keep=False)
    st.loc[dup, "label"] = st.loc[dup, "label"] + " (" + st.loc[dup, "study_id"] + ")"
    return st


def _post_fit(a: Analysis, rows, fit, ev: Evidence):
    p = ev.params
    k = len(rows)
    for var in SUBGROUP_VARIABLES:
        levels = rows[var].astype(str)
        if levels.nunique() >= 2:
            a.subgroups[var] = rma_subgroups(rows["yi"], rows["vi"], levels, method=p["method"], test=p["test"],
                                             level=p["level"], measure=fit.measure)
    if k >= 2:
        a.loo = dg.leave_one_out(fit)
    if k >= 3:
        a.influence = dg.influence(fit)
        a.small_study["rank_test"] = dg.rank_test(fit)
    if k >= 10:
        eg = dg.egger(fit)
        a.small_study.update({"egger_stat": eg.stat, "egger_pval": eg.pval, "limit_estimate": eg.limit_estimate})
    else:
        a.small_study["egger_note"] = (f"Funnel plot and Egger's test are not shown: k = {k} < 10 studies, too few to "
                                       "distinguish asymmetry from chance (Cochrane Handbook 13.3.5.4).")
    a.sensitivity = _sensitivity(a, rows, fit, ev)
    pairs = [f"{x} and {y}" for x, y in _overlap_pairs(rows, ev.tables.get("cohort_pairs"))]
    if pairs:
        a.notes.append(f"Possible overlap of patients (data/cohort_pairs.csv): {'; '.join(pairs)}. Both reports are in the "
                       "pool; the sensitivity table shows it without the smaller of each pair.")
    a.data = rows


def _sensitivity(a, rows, fit, ev) -> pd.DataFrame:
    p = ev.params
    tname = MEASURE_TRANSFORM.get(fit.measure or "", "none")
    out = []

    def add(label, y, v, method, ni=None, test=None):
        y, v = np.asarray(y, dtype=float), np.asarray(v, dtype=float)
        ok = _estimable(y, v)                                # to = none: zero cells have no finite effect size
        y, v, ni = y[ok], v[ok], None if ni is None else np.asarray(ni, dtype=float)[ok]
        if len(y) == 0:
            out.append({"analysis": label, "k": 0})
            return
        f = rma(y, v, method=method, test=test or p["test"], level=p["level"], measure=fit.measure, ni=ni)
        t = f.transformed(tname, ni=ni)
        out.append({"analysis": label, "k": f.k, "estimate": t["estimate"], "ci_lb": t["ci_lb"], "ci_ub": t["ci_ub"],
                    "tau2": f.tau2, "I2": f.I2})

    ni = rows["n"].astype(float).to_numpy() if "n" in rows else None
    add(f"main ({p['method']}, {'z' if p['test'] == 'z' else 'Knapp-Hartung'})", rows["yi"], rows["vi"], p["method"], ni)
    add("Knapp-Hartung (HKSJ) CI" if p["test"] == "z" else "z-based CI", rows["yi"], rows["vi"], p["method"], ni,
        test="knha" if p["test"] == "z" else "z")
    for m in ("FE", "DL", "REML", "PM", "ML"):
        if m != p["method"]:
            add(f"estimator {m}", rows["yi"], rows["vi"], m, ni)
    for label, keep in (("excluding high/serious risk of bias", ~rows["rob_high"].astype(bool)),
                        ("excluding derived values", rows["derived"] == ""),
                        ("tables or full-text extractions only", rows["extraction_level"].isin(["tables", "full_text"]))):
        add(label, rows.loc[keep, "yi"], rows.loc[keep, "vi"], p["method"], None if ni is None else ni[keep.to_numpy()])
    drop = _overlap_drops(rows, ev.tables.get("cohort_pairs"))
    if drop:
        keep = ~rows["study_id"].isin(drop)
        add(f"without the smaller report of each possible overlap of patients (-{len(drop)}: "
            f"{', '.join(rows.loc[~keep, 'label'])})", rows.loc[keep, "yi"], rows.loc[keep, "vi"], p["method"],
            None if ni is None else ni[keep.to_numpy()])
    if a.alternatives is not None and len(a.alternatives):
        alt = a.alternatives
        measure = fit.measure
        if a.kind == "proportion" and {"events", "n"} <= set(alt.columns):
            e = _escalc_quiet(measure if measure != "GLMM" else "PLO", xi=alt["events"].astype(float),
                              ni=alt["n"].astype(float), add=p["add"], to=p["to"])
            y = np.concatenate([rows["yi"], e["yi"]])
            v = np.concatenate([rows["vi"], e["vi"]])
            nn = None if ni is None else np.concatenate([ni, alt["n"].astype(float)])
            add(f"all reports, overlapping cohorts counted separately (+{len(alt)})", y, v, p["method"], nn)
    return pd.DataFrame(out)


def _overlap_pairs(rows, pairs) -> list[tuple[str, str]]:
    """Labels of the possible-overlap pairs (``cohort_pairs.csv``) whose two reports are both in ``rows``."""
    lab = dict(zip(rows["study_id"], rows["label"]))
    return [(lab[x], lab[y]) for x, y in possible_overlaps(pairs) if x in lab and y in lab]


def _overlap_drops(rows, pairs) -> set:
    """For each possible overlap with both reports in the pool, the smaller one (fewer patients; on a tie the second
    of the pair): the reports a sensitivity analysis leaves out."""
    n = dict(zip(rows["study_id"], rows["n"].astype(float).fillna(-1))) if "n" in rows else {}
    out = set()
    for x, y in possible_overlaps(pairs):
        if x in n and y in n:
            out.add(x if n[x] < n[y] else y)
    return out


def _normal_pool(a: Analysis, rows, ev: Evidence, measure, tname, ni=None):
    """Fit the normal-normal model to rows' yi/vi, fill a.fit, a.summary (natural scale, with the Knapp-Hartung
    CI and the t(k-2) prediction interval), a.heterogeneity; returns rows with percentage weights."""
    p = ev.params
    fit = rma(rows["yi"], rows["vi"], method=p["method"], test=p["test"], level=p["level"], measure=measure,
              ni=ni, slab=list(rows["label"]))
    a.fit = fit
    t = fit.transformed(tname, ni=ni)
    a.summary.update({k: t[k] for k in ("estimate", "ci_lb", "ci_ub")})
    pi = fit.prediction_interval()
    f = (lambda x: float(transform(np.array([x]), tname, ni=ni)[0])) if tname != "ipft_hm" else \
        (lambda x: float(transform(np.array([x]), tname, ni=np.array([1 / np.mean(1 / ni)]))[0]))
    a.summary.update(pi_lb=None if pi is None else f(pi[0]), pi_ub=None if pi is None else f(pi[1]),
                     pi_note="t on k - 2 df (IntHout 2016)" if pi is not None else "none below k = 3")
    if p["test"] == "z":
        kh = rma(rows["yi"], rows["vi"], method=p["method"], test="knha", level=p["level"], measure=measure, ni=ni)
        th = kh.transformed(tname, ni=ni)
        a.summary.update(ci_hksj_lb=th["ci_lb"], ci_hksj_ub=th["ci_ub"])
    a.heterogeneity = _het(fit)
    return rows.assign(weight=fit.weights)


_NOT_ESTIMABLE = ("no finite {measure} without a continuity correction (a zero cell with to = none); left out of "
                  "the normal-normal models, as metafor does")


def _escalc_quiet(measure, **kw):
    """escalc whose missing-value warning is not printed: the analysis lists such studies itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingValueWarning)
        return escalc(measure, **kw)


def _not_estimable(a, rows, measure, p, glmm=False):
    """Mask of rows whose yi/vi is not finite or whose vi is 0 (possible only with to = none); the studies are
    listed in ``a.excluded`` (or, for the GLMM, which needs no correction, in a note) with the reason."""
    bad = ~_estimable(rows["yi"].to_numpy(), rows["vi"].to_numpy())
    if not bad.any():
        return bad
    gone = rows[bad]
    names = ", ".join(gone["label"])
    if glmm:
        a.notes.append(f"{_n_studies(len(gone))} ({names}) {'has' if len(gone) == 1 else 'have'} no finite logit without "
                       "a continuity correction (to = none): the GLMM (exact binomial likelihood, no correction needed) "
                       "includes them; the normal-normal sensitivity analyses leave them out.")
        return bad
    extra = pd.DataFrame([{"study_id": r.study_id, "result_id": r.result_id, "outcome": r.outcome_code,
                           "reason": _NOT_ESTIMABLE.format(measure=measure)} for r in gone.itertuples()])
    a.excluded = extra if a.excluded is None or a.excluded.empty else pd.concat([a.excluded, extra], ignore_index=True)
    a.notes.append(f"{_n_studies(len(gone))} ({names}) left out: " + _NOT_ESTIMABLE.format(measure=measure) + ".")
    return bad


def _estimable(yi, vi):
    """Mask of effect sizes a normal-normal model can use: finite yi and vi, vi > 0 (not so with to = none and a
    zero cell)."""
    return np.isfinite(yi) & np.isfinite(vi) & (vi > 0)


def _n_studies(k):
    return f"{k} {'study' if k == 1 else 'studies'}"


def _try_glmm(x, n, level, a):
    if len(x) < 2 or np.all(x == 0) or np.all(x == n):
        return None
    try:
        g = _glmm_quiet(x, n, level)
    except InputError as e:
        a.notes.append(f"GLMM not fitted: {str(e).replace('rma_glmm: ', '')}")
        return None
    if not g.stable:
        a.notes.append(f"The GLMM estimate still changed by more than 1e-7 between 151 and 201 quadrature nodes; "
                       f"the {g.nAGQ}-node fit is reported.")
    return g


def _glmm_quiet(x, n, level):
    """rma_glmm whose convergence warnings are not printed into a report: the caller states them in words."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return rma_glmm(xi=x, ni=n, level=level)


def _glmm_loo(a, x, n):
    if a.k < 3:
        return
    loo, unstable = [], []
    for i in range(a.k):
        keep = np.arange(a.k) != i
        try:
            g = _glmm_quiet(x[keep], n[keep], a.params["level"])
            loo.append({"study": a.data["label"].iloc[i], "estimate": g.estimate, "ci_lb": g.ci_lb,
                        "ci_ub": g.ci_ub, "tau2": g.tau2, "I2": g.I2})
            if not g.stable:
                unstable.append(a.data["label"].iloc[i])
        except InputError as e:
            loo.append({"study": a.data["label"].iloc[i], "estimate": np.nan, "ci_lb": np.nan, "ci_ub": np.nan,
                        "tau2": np.nan, "I2": np.nan})
            a.notes.append(f"Without {a.data['label'].iloc[i]} the GLMM has no finite estimate "
                           f"({str(e).replace('rma_glmm: ', '').split(';')[0]}).")
    if unstable:
        a.notes.append(f"Leave-one-out GLMM without {', '.join(unstable)}: the estimate still changed by more than "
                       "1e-7 between 151 and 201 quadrature nodes; the 201-node fit is shown.")
    a.loo = pd.DataFrame(loo).set_index("study")
    a.influence = None


def _bayes(a, rows, measure):
    """Bayesian normal-normal fits with half-normal priors on tau (scales 0.5 and 1) on the model scale."""
    if len(rows) < 2:
        return
    for sc in BAYES_SCALES:
        a.bayes[sc] = bayesmeta(rows["yi"].to_numpy(), rows["vi"].to_numpy(), tau_scale=sc, level=a.params["level"],
                                measure=measure)
    tn = _natural(a)
    ni = rows["n"].astype(float).to_numpy() if "n" in rows else None
    a.extra["bayes_ni"] = ni
    extra = []
    for sc, b in a.bayes.items():
        t = b.transformed(tn, ni=ni)
        extra.append({"analysis": f"Bayesian, half-normal({sc:g}) prior on tau (median, credible interval)",
                      "k": b.k, "estimate": t["estimate"], "ci_lb": t["ci_lb"], "ci_ub": t["ci_ub"],
                      "tau2": b.tau_median ** 2, "I2": None})
    a.sensitivity = pd.concat([a.sensitivity, pd.DataFrame(extra)], ignore_index=True)


def _decline_rule(a):
    """No single pooled number when studies are too unlike (one rule, stated in the module docstring): k = 2 whose
    CIs do not overlap, or I2 > 75% together with a prediction interval spanning more than half of the range
    (proportions: 50 percentage points; ratios: a 10-fold range)."""
    d, s = a.data, a.summary
    i2 = a.heterogeneity.get("I2")
    if a.k == 2 and "ci_lb" in d and d["ci_lb"].max() > d["ci_ub"].min():
        a.declined = ("the two studies' confidence intervals do not overlap, so one number between them would "
                      "describe neither.")
        return
    if i2 is None or i2 <= DECLINE_I2 or s.get("pi_lb") is None:
        return
    if a.kind == "proportion" and s["pi_ub"] - s["pi_lb"] > 0.5:
        a.declined = (f"I\u00b2 = {i2:.0f}% (> {DECLINE_I2:.0f}%) and the prediction interval spans "
                      f"{100 * (s['pi_ub'] - s['pi_lb']):.0f} of 100 percentage points, so a single number would mislead.")
    elif a.kind != "proportion" and a.measure in ("ROMC", "RR", "OR") and s["pi_ub"] / s["pi_lb"] > 10:
        a.declined = (f"I\u00b2 = {i2:.0f}% (> {DECLINE_I2:.0f}%) and the prediction interval spans a "
                      f"{s['pi_ub'] / s['pi_lb']:.0f}-fold range, so a single number would mislead.")


def _definition_test(a, rows):
    """Meta-regression on outcome definition for a broad pool (common tau2; QM tests the definitions)."""
    if rows["outcome_code"].nunique() < 2 or len(rows) < rows["outcome_code"].nunique() + 2:
        return
    fit = rma(rows["yi"], rows["vi"], mods={"definition": rows["outcome_code"].astype(str).to_numpy()},
              method=a.params["method"], level=a.params["level"])
    a.extra["definition_test"] = {"QM": fit.QM, "df": fit.QM_df, "pval": fit.QM_pval, "R2": fit.R2}


def _pi_k2(mu, se, tau2, k, level):
    if k < 3:
        return None
    half = _crit(level, k - 2) * math.sqrt(tau2 + se ** 2)
    return mu - half, mu + half


def _natural(a) -> str:
    return "ilogit" if a.measure == "GLMM" else MEASURE_TRANSFORM.get(a.measure, "none")


def _het(fit) -> dict:
    return {"tau2": fit.tau2, "tau2_ci": fit.tau2_ci, "I2": fit.I2, "I2_ci": fit.I2_ci, "H2": fit.H2,
            "Q": fit.Q, "Q_df": fit.Q_df, "Q_pval": fit.Q_pval, "Q_type": "Cochran"}


def _z(level):
    from scipy.special import ndtri
    return float(-ndtri((1 - level) / 2))




def fmt_est(a: Analysis, x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "not estimable"
    if a.kind in ("proportion", "swim"):
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
