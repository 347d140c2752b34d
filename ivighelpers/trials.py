"""Randomised evidence, analysed as randomised evidence (Cochrane Handbook 14.1.6, 23; GRADE 12, 26, 34).

``randomised_evidence(ev)`` turns the review team's analysis plan (``data/randomised.csv``: which rows of
``outcomes.csv`` make each comparison, and how a trial is analysed) into ``TrialResult`` objects: a risk ratio
with the risk difference and absolute effects per 1,000, a mean difference, a crossover analysis, or a
structured narrative result where the trial prints no numbers. Each result carries a GRADE suggestion with
its reasons. The numbers always come from ``outcomes.csv``; the plan only says what is compared with what.

Statistics, each small and checked against an independent computation in the tests:
- risk ratio and risk difference come from ``effects.escalc`` (RR with 0.5 added to the cells of a zero-cell
  trial; RD on the raw counts, whose Wald variance stays finite at a zero cell);
- ``nnt``: number needed to treat for benefit or harm, with Altman's (1998, BMJ 317:1309) form
  "NNTB a to infinity to NNTH b" when the RD interval includes 0;
- ``md_from_arm_cis``: mean difference from each arm's mean change and CI, SE = (ub - lb) / (2 t) per arm
  (t on n - 1 df below 60 per arm, else z; Handbook 6.5.2.3);
- ``crossover_binary`` / ``crossover_md``: crossover trials from marginal (per-period) results with a
  within-patient correlation rho (Elbourne et al. 2002, Int J Epidemiol 31:140; Becker & Balagtas 1993).
  Patients with both periods make the two estimates covariant: cov = rho n_both sd_t sd_c / (n_t n_c);
- ``poisson_rate``: events per exposure with exact (Garwood 1936) limits;
- ``marginal_risk``: population-average risk of a logit-normal model, E[expit(mu + tau Z)] (Zeger 1988).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special

from .data import SECONDARY_SOURCES, SOURCE_WORDS
from .effects import escalc, wilson_ci
from .errors import InputError
from .text import count_text

ANALYSES = {
    "parallel_binary": "parallel comparison (first period or parallel trial)",
    "crossover_paired_binary": "crossover trial, paired analysis of the treatment periods",
    "crossover_pooled_periods": "crossover periods pooled as if independent (unit-of-analysis error; sensitivity only)",
    "md_from_arm_cis": "mean difference from each arm's mean change and CI",
    "reported_md": "mean difference as reported",
    "narrative": "structured narrative synthesis (no numbers to compute an effect)",
}
POPULATIONS = {"dm_pm": "refractory DM/PM and related myositis", "ibm": "inclusion body myositis",
               "jdm": "juvenile dermatomyositis"}
RR_THRESHOLDS = (0.75, 1.25)   # appreciable benefit or harm on the ratio scale (GRADE 6, 34)
_LEVELS = ["very low", "low", "moderate", "high"]


# ---------------------------------------------------------------------------------------------
# statistics

@dataclass(frozen=True)
class NNT:
    """Number needed to treat. ``kind`` is 'NNTB' (benefit) or 'NNTH' (harm); bounds are rounded up (Altman 1998)."""
    kind: str
    value: float
    text: str


def nnt(rd: float, lb: float, ub: float, harm: bool = False) -> NNT | None:
    """NNTB or NNTH from a risk difference (IVIG minus control) and its CI.

    For a beneficial outcome a positive RD is a benefit; for an adverse outcome (``harm``) a positive RD is a
    harm. When the CI includes 0 the interval reads "NNTB x to infinity to NNTH y" (Altman 1998). None when
    RD = 0."""
    if not rd:
        return None
    sign = -1 if harm else 1          # +1: positive RD is benefit
    def name(x):  # noqa: E306
        return "NNTB" if sign * x > 0 else "NNTH"
    def whole(x):  # noqa: E306
        return math.ceil(1 / abs(x) - 1e-9)
    kind = name(rd)
    if lb > 0 or ub < 0:
        lo, hi = sorted((whole(lb), whole(ub)))
        return NNT(kind, 1 / abs(rd), f"{kind} {whole(rd)} ({lo} to {hi})")
    ben, hrm = (ub, lb) if sign > 0 else (lb, ub)   # the bound on the benefit side and on the harm side
    return NNT(kind, 1 / abs(rd), f"{kind} {whole(rd)} (NNTB {whole(ben)} to infinity to NNTH {whole(hrm)})"
               if ben and hrm else f"{kind} {whole(rd)}")


def md_from_arm_cis(m1: float, lb1: float, ub1: float, n1: int, m2: float, lb2: float, ub2: float, n2: int,
                    level: float = 0.95, ci_level: float = 0.95) -> tuple[float, float, float, float]:
    """(MD, SE, lb, ub) of arm 1 minus arm 2 from each arm's mean and CI (Handbook 6.5.2.3): SE_i =
    (ub_i - lb_i) / (2 q_i), q_i the t quantile on n_i - 1 df when n_i < 60, else the normal quantile."""
    if n1 is None or n2 is None or n1 < 2 or n2 < 2 or ub1 < lb1 or ub2 < lb2:
        raise InputError(f"md_from_arm_cis needs n >= 2 per arm and lb <= ub; got n={n1}, {n2}, "
                         f"CIs ({lb1}, {ub1}), ({lb2}, {ub2})")
    def q(n):  # noqa: E306
        p = 1 - (1 - ci_level) / 2
        return special.stdtrit(n - 1, p) if n < 60 else special.ndtri(p)
    se = math.hypot((ub1 - lb1) / (2 * q(n1)), (ub2 - lb2) / (2 * q(n2)))
    z = special.ndtri(1 - (1 - level) / 2)
    md = m1 - m2
    return md, se, md - z * se, md + z * se


def crossover_binary(e_t: float, n_t: float, e_c: float, n_c: float, n_both: float, rho: float,
                     level: float = 0.95, add: float = 0.5) -> dict:
    """Risk ratio of a crossover trial from its per-period counts (treatment periods e_t/n_t, control
    periods e_c/n_c, n_both patients with both periods) and a within-patient correlation ``rho``:

    var(log RR) = q_t/(n_t p_t) + q_c/(n_c p_c) - 2 rho n_both sqrt(q_t q_c / (p_t p_c)) / (n_t n_c).

    With full pairing (n_both = n_t = n_c) and rho the phi coefficient of the pairs this equals the exact
    matched-pairs variance (b + c)/((a + b)(a + c)). A zero or full cell gets ``add`` in each arm's two cells.
    """
    if not (0 <= n_both <= min(n_t, n_c)) or not (-1 <= rho <= 1):
        raise InputError(f"crossover_binary needs 0 <= n_both <= min(n_t, n_c) and -1 <= rho <= 1; got "
                         f"n_both={n_both}, n_t={n_t}, n_c={n_c}, rho={rho}")
    if min(e_t, e_c) == 0 or e_t == n_t or e_c == n_c:
        e_t, n_t, e_c, n_c = e_t + add, n_t + 2 * add, e_c + add, n_c + 2 * add
        corrected = True
    else:
        corrected = False
    pt, pc = e_t / n_t, e_c / n_c
    qt, qc = 1 - pt, 1 - pc
    var = qt / (n_t * pt) + qc / (n_c * pc) - 2 * rho * n_both * math.sqrt(qt * qc / (pt * pc)) / (n_t * n_c)
    y = math.log(pt / pc)
    z = special.ndtri(1 - (1 - level) / 2)
    se = math.sqrt(max(var, 0.0))
    return {"rr": math.exp(y), "ci_lb": math.exp(y - z * se), "ci_ub": math.exp(y + z * se), "yi": y, "vi": var,
            "rho": rho, "corrected": corrected}


def crossover_md(m_t: float, sd_t: float, n_t: int, m_c: float, sd_c: float, n_c: int, n_both: int, rho: float,
                 level: float = 0.95) -> dict:
    """Mean difference of a crossover trial from per-period means and SDs with within-patient correlation rho:
    var = sd_t^2/n_t + sd_c^2/n_c - 2 rho n_both sd_t sd_c / (n_t n_c) (Elbourne 2002). With full pairing this is
    the variance of the mean within-patient difference."""
    if not (0 <= n_both <= min(n_t, n_c)) or not (-1 <= rho <= 1):
        raise InputError(f"crossover_md needs 0 <= n_both <= min(n_t, n_c) and -1 <= rho <= 1; got "
                         f"n_both={n_both}, n_t={n_t}, n_c={n_c}, rho={rho}")
    var = sd_t ** 2 / n_t + sd_c ** 2 / n_c - 2 * rho * n_both * sd_t * sd_c / (n_t * n_c)
    z = special.ndtri(1 - (1 - level) / 2)
    md, se = m_t - m_c, math.sqrt(max(var, 0.0))
    return {"md": md, "se": se, "ci_lb": md - z * se, "ci_ub": md + z * se, "rho": rho}


def poisson_rate(events: float, exposure: float, per: float = 100.0, level: float = 0.95) -> tuple[float, float, float]:
    """(rate, lb, ub) per ``per`` units of exposure; exact limits chi2(a/2; 2x)/2 and chi2(1 - a/2; 2x + 2)/2."""
    if exposure is None or not exposure > 0 or events is None or events < 0:
        raise InputError(f"poisson_rate needs events >= 0 and exposure > 0; got events={events}, exposure={exposure}")
    a = 1 - level
    lo = special.gammaincinv(events, a / 2) if events > 0 else 0.0
    hi = special.gammaincinv(events + 1, 1 - a / 2)
    return per * events / exposure, per * lo / exposure, per * hi / exposure


def newcombe_rd(a: float, n1: float, c: float, n2: float, level: float = 0.95) -> tuple[float, float, float]:
    """Risk difference a/n1 - c/n2 with Newcombe's (1998, Stat Med 17:873, method 10) hybrid Wilson-score
    interval, which stays informative when a group has no events (the Wald interval collapses to a point)."""
    (l1, u1), (l2, u2) = wilson_ci(a, n1, level), wilson_ci(c, n2, level)
    p1, p2 = a / n1, c / n2
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def marginal_risk(mu: float, tau2: float, nodes: int = 101) -> float:
    """Population-average risk E[expit(mu + tau Z)], Z ~ N(0, 1), by Gauss-Hermite quadrature. This is the
    risk a randomly chosen treated patient population has on average; expit(mu) is the median study's risk."""
    if tau2 < 0:
        raise InputError(f"marginal_risk needs tau2 >= 0; got {tau2}")
    if tau2 == 0:
        return float(special.expit(mu))
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return float(np.sum(w * special.expit(mu + math.sqrt(tau2) * x)) / math.sqrt(2 * math.pi))


# ---------------------------------------------------------------------------------------------
# the review's randomised comparisons

@dataclass
class TrialResult:
    """One randomised comparison (or one trial's structured narrative result)."""
    comparison_id: str
    study_id: str
    trial: str
    design: str
    population: str
    outcome: str
    outcome_code: str
    analysis: str
    role: str
    harm: bool
    n_randomised: int
    timepoint: str
    result_ids: list
    unit: str = ""
    measure: str = ""                 # RR | MD | narrative
    estimate: float | None = None
    ci_lb: float | None = None
    ci_ub: float | None = None
    counts: dict = field(default_factory=dict)      # events/n per arm (binary)
    rd: tuple | None = None                          # (rd, lb, ub)
    nnt: NNT | None = None
    absolute: dict = field(default_factory=dict)    # per 1,000 with comparator / with IVIG (binary)
    narrative: str = ""
    direction: str = ""
    significant: str = ""
    anchor: dict = field(default_factory=dict)      # the published between-group result to reproduce
    sensitivity: list = field(default_factory=list)  # (label, estimate, lb, ub)
    notes: list = field(default_factory=list)
    arm_means: dict = field(default_factory=dict)   # mean change per arm where printed (continuous)
    rob: str = "no_information"
    secondary_source: bool = False     # a number read on a news, manufacturer or other review's page
    source_types: list = field(default_factory=list)   # the kinds of page its rows were read on
    randomised: bool = True
    year: int | None = None
    mid: float | None = None
    grade: dict = field(default_factory=dict)
    level: float = 0.95

    @property
    def comparator(self) -> str:
        return "with placebo" if self.randomised else "without immunoglobulin"

    @property
    def has_effect(self) -> bool:
        return self.estimate is not None and not pd.isna(self.estimate)

    def effect_text(self) -> str:
        """The relative effect as printed in tables: 'RR 1.80 (1.26 to 2.56)', 'MD -8.2 points (...)'."""
        lv = f"{round(self.level * 100):g}% CI"
        if self.measure == "RR" and self.has_effect:
            return f"RR {self.estimate:.2f} ({lv} {self.ci_lb:.2f} to {self.ci_ub:.2f})"
        if self.measure == "MD" and self.has_effect:
            u = f" {self.unit}" if self.unit else ""
            if self.ci_lb is None or pd.isna(self.ci_lb):
                return f"MD {self.estimate:+.1f}{u} (CI not computable: SDs not reported)"
            return f"MD {self.estimate:+.1f}{u} ({lv} {self.ci_lb:+.1f} to {self.ci_ub:+.1f})"
        return "not estimable: " + (self.narrative or "no numbers reported")

    def absolute_text(self) -> str:
        """Assumed risk with placebo and corresponding risk with IVIG per 1,000, from the risk difference."""
        ab = self.absolute
        if not ab:
            return ""
        ctrl = (f"{ab['ctrl']:.0f} per 1,000 {self.comparator}" if ab["ctrl_events"] else
                f"none of {ab['ctrl_n']} {self.comparator}")
        d, lo, hi = ab["diff"], ab["diff_lb"], ab["diff_ub"]
        return f"{ctrl}; {_more(d)} per 1,000 with immunoglobulin ({_more(lo)} to {_more(hi)})"

    def statement(self) -> str:
        """GRADE informative statement (Santesso 2020, GRADE 26), from the certainty and the interval: 'little or no
        difference' only when the interval excludes an important effect (RR 0.75-1.25, or the MID)."""
        c = (self.grade or {}).get("certainty", "not rated")
        what = self.outcome
        if self.role == "subgroup":
            return (f"A subgroup of one trial, not rated: it neither shows nor excludes a different effect of "
                    f"immunoglobulin on {what}.")
        if c not in VERBS["improves"]:
            return f"We are very uncertain about the effect of immunoglobulin on {what}."
        if self.measure == "narrative" or not self.has_effect or self.ci_lb is None or pd.isna(self.ci_lb):
            if self.significant == "no":
                return f"Immunoglobulin {VERBS['little'][c]} {what}."
            return f"Immunoglobulin {VERBS['increases' if self.harm else 'improves'][c]} {what}."
        null = 1.0 if self.measure == "RR" else 0.0
        if self.ci_lb <= null <= self.ci_ub:
            if self.measure == "RR":
                near = RR_THRESHOLDS[0] <= self.ci_lb and self.ci_ub <= RR_THRESHOLDS[1]
            else:
                near = self.mid is not None and -self.mid <= self.ci_lb and self.ci_ub <= self.mid
            if near:
                return f"Immunoglobulin {VERBS['little'][c]} {what}."
            return (f"Immunoglobulin {VERBS['little'][c]} {what}, but the interval does not exclude an important "
                    f"{'harm' if self.harm else 'effect'}.")
        up = self.estimate > null
        if self.measure == "RR":
            verb = VERBS["increases" if up else "reduces"][c]
            return f"Immunoglobulin {verb} {'the proportion of patients with ' if not self.harm else ''}{what}."
        better = up if self.outcome_code not in LOWER_IS_BETTER else not up
        return f"Immunoglobulin {VERBS['improves' if better else 'worsens'][c]} {what}."


VERBS = {"improves": {"high": "improves", "moderate": "probably improves", "low": "may improve"},
         "worsens": {"high": "worsens", "moderate": "probably worsens", "low": "may worsen"},
         "increases": {"high": "increases", "moderate": "probably increases", "low": "may increase"},
         "reduces": {"high": "reduces", "moderate": "probably reduces", "low": "may reduce"},
         "little": {"high": "results in little or no difference in", "moderate": "probably results in little or no "
                    "difference in", "low": "may result in little or no difference in"}}
LOWER_IS_BETTER = {"cdasi", "ck_level", "gc_dose", "disease_activity", "dysphagia_score"}


def _more(x: float) -> str:
    v = round(1000 * x)
    return f"{v} more" if v > 0 else (f"{-v} fewer" if v < 0 else "0 more")


def randomised_evidence(ev, report: str | None = None, population: str | None = None,
                        role: str | None = None, codes=None) -> list[TrialResult]:
    """The plan's comparisons (``data/randomised.csv``) whose trial is in the selection (``ev`` from
    ``analysis.load_evidence``), optionally for one report, population, role or outcome codes; each computed
    from its rows of ``outcomes.csv``."""
    plan = ev.tables["randomised"]
    st = ev.studies.set_index("study_id")
    oc = ev.tables["outcomes"].set_index("result_id")
    kept = set(ev.outcomes["result_id"])
    out = []
    for r in plan.itertuples(index=False):
        if r.study_id not in st.index or not _rows_kept(r, kept):
            continue
        if (report is not None and r.report != report) or (population is not None and r.population != population) \
                or (role is not None and r.role != role) or (codes is not None and r.outcome_code not in codes):
            continue
        out.append(_compute(r, st.loc[r.study_id], oc, ev.params.get("level", 0.95)))
    return out


def left_out_by_value_filters(ev, report: str | None = None) -> list[dict]:
    """Comparisons (randomised and controlled) of trials in the selection that a value filter of the run
    (``exclude_secondary``, ``exclude_derived``) leaves without one of their rows: what and why."""
    kept = set(ev.outcomes["result_id"])
    oc = ev.tables["outcomes"].set_index("result_id")
    st = ev.studies.set_index("study_id")
    out = []
    for plan in (ev.tables["randomised"], ev.tables["nonrandomised"]):
        for r in plan.itertuples(index=False):
            if r.study_id in st.index and (report is None or r.report == report) and not _rows_kept(r, kept):
                ids = [i for i in _ids(r) if i not in kept]
                why = sorted({("read on a secondary page: " + SOURCE_WORDS[oc.at[i, "source_type"]]
                               if oc.at[i, "source_type"] in SECONDARY_SOURCES else "a derived value") for i in ids})
                out.append({"comparison_id": r.comparison_id, "trial": st.at[r.study_id, "label"], "outcome": r.outcome,
                            "role": r.role, "rows": ids, "why": "; ".join(why)})
    return out


def controlled_evidence(ev, report: str | None = None) -> list[TrialResult]:
    """Controlled non-randomised comparisons (``data/nonrandomised.csv``), computed like the randomised ones
    but rated as observational evidence with ROBINS-I (Sterne 2016): certainty starts low, and a serious or
    critical overall risk of bias rates it down further. They never enter a summary of findings where randomised
    evidence exists (Handbook 14.1.6)."""
    plan = ev.tables["nonrandomised"]
    st = ev.studies.set_index("study_id")
    oc = ev.tables["outcomes"].set_index("result_id")
    out = []
    kept = set(ev.outcomes["result_id"])
    for r in plan.itertuples(index=False):
        if r.study_id in st.index and (report is None or r.report == report) and _rows_kept(r, kept):
            out.append(_compute(r, st.loc[r.study_id], oc, ev.params.get("level", 0.95), randomised=False))
    return out


def summary_frame(results: list[TrialResult]) -> pd.DataFrame:
    """One row per comparison: trial, outcome, analysis, participants, effect, absolute effect, certainty."""
    return pd.DataFrame([{
        "comparison": t.comparison_id, "trial": t.trial, "population": t.population, "outcome": t.outcome,
        "analysis": ANALYSES[t.analysis], "role": t.role, "randomised": t.n_randomised, "measure": t.measure,
        "estimate": t.estimate, "ci_lb": t.ci_lb, "ci_ub": t.ci_ub, "effect": t.effect_text(),
        "absolute": t.absolute_text(), "nnt": t.nnt.text if t.nnt else "",
        "certainty": t.grade.get("certainty", "not rated"), "statement": t.statement()} for t in results])


def narrative_group(results: list[TrialResult], outcome: str, population: str) -> dict:
    """Structured narrative synthesis of several trials without computable effects (SWiM; Handbook 12):
    trials, participants, how many found a significant between-group difference, a GRADE suggestion."""
    rs = [t for t in results if t.population == population and t.role == "main"]
    if not rs:
        return {}
    g = combine(rs)
    sig = [t for t in rs if _significant(t)]
    return {"trials": [t.trial for t in rs], "k": len(rs), "participants": sum(t.n_randomised for t in rs),
            "significant": len(sig), "grade": g, "statement": combined_statement(rs, outcome, g["certainty"]),
            "results": rs}


def combine(results: list[TrialResult]) -> dict:
    """The rules' GRADE suggestion for one outcome answered by several trials that are not pooled (different
    scales, or no spreads): risk of bias one level when any trial is not at low risk (the trials carry similar
    weight, so each contributes materially; GRADE 4); inconsistency one level when the trials disagree in
    significance or direction; imprecision from all participants (< 30 two levels, < 400 one level; one more
    when a trial's interval includes no effect); publication bias not assessable with so few trials."""
    if len(results) == 1:
        return results[0].grade
    n = sum(t.n_randomised for t in results)
    nonlow = [t for t in results if t.rob != "low"]
    start = "high" if all(t.randomised for t in results) else "low"
    dom = {"risk of bias": (1, "serious: " + "; ".join(f"{t.trial} {_rob_words(t)}" for t in nonlow))
           if nonlow else (0, "not serious: all trials at low risk of bias")}
    sig = [t for t in results if _significant(t)]
    dirs = {t.direction for t in results if t.direction in ("favours_ig", "favours_placebo")}
    if 0 < len(sig) < len(results) or len(dirs) > 1:
        dom["inconsistency"] = (1, f"serious: {len(sig)} of {len(results)} trials found a significant difference"
                                   + ("; directions differ" if len(dirs) > 1 else ""))
    else:
        dom["inconsistency"] = (0, f"not serious: {len(sig)} of {len(results)} trials found a significant difference")
    dom["indirectness"] = (0, "not serious")
    lv = 2 if n < 30 else (1 if n < 400 else 0)
    nulls = [t for t in results if t.has_effect and t.ci_lb is not None and not pd.isna(t.ci_lb)
             and t.ci_lb <= (1.0 if t.measure == "RR" else 0.0) <= t.ci_ub]
    lv = min(3, lv + (1 if nulls else 0))
    dom["imprecision"] = (lv, f"{_SEVERITY[lv]}: {n} participants in {len(results)} trials, not pooled"
                              + ("; an interval includes no effect" if nulls else "")
                              + ("" if any(t.has_effect and t.ci_lb is not None and not pd.isna(t.ci_lb) for t in results)
                                 else "; no interval can be computed (spreads not reported)"))
    dom["publication bias"] = (0, f"not assessed: {len(results)} trials")
    return _grade_from(dom, start=start)


def combined_statement(results: list[TrialResult], outcome: str, certainty: str) -> str:
    """GRADE-26 statement for several unpooled trials: benefit only when every trial found a significant
    difference in favour; 'little or no difference' when none did; otherwise the evidence is uncertain."""
    sig = [t for t in results if _significant(t)]
    if certainty not in VERBS["improves"]:
        return f"We are very uncertain about the effect of immunoglobulin on {outcome}."
    if not sig:
        return f"Immunoglobulin {VERBS['little'][certainty]} {outcome}."
    if len(sig) == len(results):
        return f"Immunoglobulin {VERBS['improves'][certainty]} {outcome}."
    return (f"The trials disagree: {len(sig)} of {len(results)} found a significant difference; immunoglobulin "
            f"{VERBS['improves'][certainty]} {outcome}, but this is uncertain.")


_SEVERITY = ["not serious", "serious", "very serious", "extremely serious"]


def _significant(t: TrialResult) -> bool:
    """A significant between-group difference in favour of immunoglobulin (for a benefit) or against it (harm)."""
    if t.measure == "narrative" or not t.has_effect or t.ci_lb is None or pd.isna(t.ci_lb):
        return t.significant == "yes"
    null = 1.0 if t.measure == "RR" else 0.0
    return not (t.ci_lb <= null <= t.ci_ub)


def _rob_words(t: TrialResult) -> str:
    return f"{'RoB 2' if t.randomised else 'ROBINS-I'} overall {t.rob.replace('_', ' ')}"


# ---------------------------------------------------------------------------------------------
# helpers

def _ids(r) -> list:
    return [x.strip() for x in str(r.result_ids).split(";") if x.strip()]


def _rows_kept(r, kept) -> bool:
    """Every row of the comparison survived the run's value filters (a missing row: no comparison)."""
    return all(i in kept for i in _ids(r))


def _compute(r, s, oc, level, randomised: bool = True) -> TrialResult:
    ids = _ids(r)
    rows = [oc.loc[i] for i in ids]
    t = TrialResult(comparison_id=r.comparison_id, study_id=r.study_id, trial=s["label"], design=s["design"],
                    population=r.population, outcome=r.outcome, outcome_code=r.outcome_code, analysis=r.analysis,
                    role=r.role, harm=r.effect == "harm", n_randomised=int(r.n_randomised),
                    timepoint=r.timepoint or str(rows[0]["timepoint"]), result_ids=ids, unit=r.unit or "",
                    level=level, mid=None if pd.isna(r.mid) else float(r.mid), randomised=randomised,
                    year=int(s["year"]) if pd.notna(s["year"]) else None)
    t.rob = s.get("rob_overall", "no_information")
    t.source_types = list(dict.fromkeys(str(x["source_type"]) for x in rows))
    t.secondary_source = any(x in SECONDARY_SOURCES for x in t.source_types)
    if r.notes:
        t.notes.append(r.notes)
    z = special.ndtri(1 - (1 - level) / 2)
    if r.analysis in ("parallel_binary", "crossover_pooled_periods", "crossover_paired_binary"):
        ig, pl = rows[0], rows[1]
        a, n1, c, n2 = float(ig["events"]), float(ig["n"]), float(pl["events"]), float(pl["n"])
        t.counts = {"ig": (int(a), int(n1)), "placebo": (int(c), int(n2))}
        t.measure = "RR"
        if r.analysis == "crossover_paired_binary":
            rhos = [float(x) for x in str(r.rho).split(";") if x.strip()]
            res = [crossover_binary(a, n1, c, n2, float(r.n_both_periods), rho, level=level) for rho in rhos]
            t.estimate, t.ci_lb, t.ci_ub = res[0]["rr"], res[0]["ci_lb"], res[0]["ci_ub"]
            t.sensitivity = [(f"within-patient correlation {x['rho']:g}", x["rr"], x["ci_lb"], x["ci_ub"]) for x in res]
            t.notes.append(f"{int(n1)} treatment and {int(n2)} control periods in {t.n_randomised} randomised patients "
                           f"({int(r.n_both_periods)} with both periods); correlation {rhos[0]:g} in the main analysis, "
                           + ", ".join(f"{x:g}" for x in rhos[1:]) + " as sensitivity"
                           + ("; 0.5 added to each cell of both arms (a zero cell)" if res[0]["corrected"] else "")
                           + ". No absolute effect or NNT: periods are not patients.")
            t.grade = suggest_grade(t)
            return t
        cnt = dict(ai=[a], n1i=[n1], ci=[c], n2i=[n2])
        corr = min(a, c) == 0 or a == n1 or c == n2
        if a == 0 and c == 0:        # no event in either group: no ratio (Handbook 10.4.4.1), the difference is 0
            t.narrative = f"no event in either group (0 of {int(n1)} and 0 of {int(n2)}): risk ratio not estimable"
            t.notes.append("No event in either group: the risk ratio is not estimable (Cochrane Handbook 10.4.4.1); "
                           "the risk difference and its interval are given.")
            corr = False
        if a or c:
            es = escalc("RR", **cnt, add=0.5, to="only0")
            y, se = float(es["yi"].iloc[0]), math.sqrt(float(es["vi"].iloc[0]))
            t.estimate, t.ci_lb, t.ci_ub = math.exp(y), math.exp(y - z * se), math.exp(y + z * se)
        if corr:
            t.notes.append("A zero cell: 0.5 added to each cell for the risk ratio (the risk difference uses the raw counts).")
        if r.analysis == "crossover_pooled_periods":
            t.notes.append("Periods counted as patients: a unit-of-analysis error (Handbook 23.2); shown only as a "
                           "sensitivity analysis, with no absolute effect or NNT.")
            t.grade = suggest_grade(t)
            return t
        if a or c:
            d = escalc("RD", **cnt, add=0, to="none")
            y, se = float(d["yi"].iloc[0]), math.sqrt(float(d["vi"].iloc[0]))
            rd = t.rd = (y, y - z * se, y + z * se)
        else:                        # the Wald interval is a point at 0: Newcombe's score interval instead
            rd = t.rd = newcombe_rd(a, n1, c, n2, level)
            t.notes.append("Interval of the risk difference by Newcombe's hybrid score method (no events in either "
                           "group, where the usual interval collapses to a point).")
        t.nnt = nnt(*rd, harm=t.harm)
        t.absolute = {"ctrl": 1000 * c / n2, "ctrl_events": int(c), "ctrl_n": int(n2), "diff": rd[0],
                      "diff_lb": rd[1], "diff_ub": rd[2]}
        if n1 + n2 > t.n_randomised:
            t.notes.append(f"The arms count {int(n1 + n2)} patients for {t.n_randomised} randomised (patients who "
                           "switched appear in both columns); participants are counted as randomised.")
    elif r.analysis == "md_from_arm_cis":
        ig, pl = rows[0], rows[1]
        lvl = float(ig["ci_level"]) if pd.notna(ig["ci_level"]) else 0.95
        md, se, lo, hi = md_from_arm_cis(float(ig["mean_change"]), float(ig["ci_lb"]), float(ig["ci_ub"]), int(ig["n"]),
                                         float(pl["mean_change"]), float(pl["ci_lb"]), float(pl["ci_ub"]), int(pl["n"]),
                                         level=level, ci_level=lvl)
        t.measure, t.estimate, t.ci_lb, t.ci_ub = "MD", md, lo, hi
        t.arm_means = {"ig": float(ig["mean_change"]), "placebo": float(pl["mean_change"])}
        t.notes.append(f"Mean change {ig['mean_change']:g} with immunoglobulin and {pl['mean_change']:g} with placebo; "
                       "SE of each arm from its CI (Handbook 6.5.2.3).")
    elif r.analysis == "reported_md":
        x = rows[0]
        t.measure, t.estimate = "MD", float(x["estimate"])
        lvl = float(x["ci_level"]) if pd.notna(x["ci_level"]) else 0.95
        if pd.notna(x["ci_lb"]):
            se = (float(x["ci_ub"]) - float(x["ci_lb"])) / (2 * special.ndtri(1 - (1 - lvl) / 2))
            t.ci_lb, t.ci_ub = t.estimate - z * se, t.estimate + z * se
    elif r.analysis == "narrative":
        t.measure = "narrative"
        t.direction, t.significant = r.direction, r.significant
        means = [x for x in rows if pd.notna(x["mean_change"])]
        if len(means) == 2 and {means[0]["arm"], means[1]["arm"]} == {"ig", "placebo"}:
            mi = next(x for x in means if x["arm"] == "ig")
            mp = next(x for x in means if x["arm"] == "placebo")
            t.measure, t.estimate = "MD", float(mi["mean_change"]) - float(mp["mean_change"])
            t.arm_means = {"ig": float(mi["mean_change"]), "placebo": float(mp["mean_change"])}
            t.notes.append(f"Mean change {mi['mean_change']:+g} with immunoglobulin (n = {count_text(mi['n'])}) and "
                           f"{mp['mean_change']:+g} with placebo (n = {count_text(mp['n'])}); no SD is reported, so no CI.")
        t.narrative = _narrative_words(r)
    _anchor(t, r, oc)
    t.grade = suggest_grade(t)
    return t


def _narrative_words(r) -> str:
    d = {"favours_ig": "favoured immunoglobulin", "favours_placebo": "favoured placebo",
         "unclear": "no clear direction", "none": "no difference"}.get(r.direction, r.direction)
    s = {"yes": "statistically significant", "no": "not statistically significant",
         "unclear": "significance not reported"}.get(r.significant, r.significant)
    return f"between-group result {d}, {s} (as reported)"


def _anchor(t: TrialResult, r, oc) -> None:
    """The published between-group result (e.g. a difference in percentage points) beside the computed one."""
    aid = str(getattr(r, "anchor_result_id", "") or "")
    if not aid or aid not in oc.index:
        return
    x = oc.loc[aid]
    t.anchor = {"result_id": aid, "estimate": float(x["estimate"]), "ci_lb": float(x["ci_lb"]) if pd.notna(x["ci_lb"]) else None,
                "ci_ub": float(x["ci_ub"]) if pd.notna(x["ci_ub"]) else None, "definition": x["definition"]}


def suggest_grade(t: TrialResult) -> dict:
    """The rules' GRADE suggestion for one randomised comparison (the panel's recorded judgement may differ):
    start high; risk of bias: RoB 2 'some concerns' or 'high' one level (a secondary source of the numbers is
    named); imprecision (GRADE 34): RR: CI including both 0.75 and 1.25 two levels, three with < 10 events;
    fewer than 30 events two levels; CI crossing 1 or 1.25/0.75, or fewer than 300 events (optimal information
    size), one level; MD: fewer than 30 participants two levels, fewer than 400 one level, one more when the CI
    includes no effect; inconsistency and publication bias are not assessable for one trial."""
    dom = {}
    why = []
    if not t.randomised:
        return _observational_grade(t)
    if t.role == "subgroup":
        return {"starting certainty": "high", "downgrades": 0, "certainty": "not rated", "domains": {},
                "footnotes": ["a subgroup of one trial is not rated with GRADE: read it as hypothesis-generating "
                              "(credibility of subgroup effects, Handbook 10.11.5)"]}
    if t.rob != "low":
        why.append(f"RoB 2 overall {t.rob.replace('_', ' ')}")
    if t.analysis in ("crossover_paired_binary", "crossover_pooled_periods") or t.design == "crossover_rct":
        why.append("crossover design (carry-over and period effects not reported)")
    if t.secondary_source:
        why.append("numbers read in a secondary source")
    dom["risk of bias"] = (1, "serious: " + "; ".join(why)) if (t.rob != "low") else (
        (0, "not serious: low risk of bias" + (f" ({'; '.join(why)})" if why else "")))
    dom["inconsistency"] = (0, "not assessable: one trial")
    dom["indirectness"] = (0, "not serious")
    if t.measure == "RR" and t.has_effect:
        dom["imprecision"] = rr_imprecision(t.ci_lb, t.ci_ub, sum(x[0] for x in t.counts.values()))
    elif t.measure == "MD" and t.has_effect:
        n = t.n_randomised
        lv = 2 if n < 30 else (1 if n < 400 else 0)
        nulls = t.ci_lb is None or pd.isna(t.ci_lb) or (t.ci_lb <= 0 <= t.ci_ub)
        lv = min(3, lv + (1 if nulls else 0))
        dom["imprecision"] = (lv, f"{['not serious', 'serious', 'very serious', 'extremely serious'][lv]}: "
                                  f"{n} participants (optimal information size about 400)"
                                  + ("; the interval includes no effect or cannot be computed" if nulls else ""))
    else:
        n = t.n_randomised
        lv = 2 if n < 30 else (1 if n < 400 else 0)
        dom["imprecision"] = (lv, f"{['not serious', 'serious', 'very serious'][lv]}: {n} participants; no "
                                  "effect estimate can be computed")
    dom["publication bias"] = (0, "not assessed: one trial")
    return _grade_from(dom)


def rr_imprecision(lo: float, hi: float, ev: int) -> tuple[int, str]:
    """Imprecision of a risk ratio (GRADE 6, 34): a CI including both 0.75 and 1.25 two levels, three with < 10
    events; fewer than 30 events two levels; a CI crossing 1, 0.75 or 1.25, or fewer than 300 events (optimal
    information size), one level. Returns (levels, reason)."""
    both = lo < RR_THRESHOLDS[0] and hi > RR_THRESHOLDS[1]
    cross = lo < 1 < hi or lo < RR_THRESHOLDS[1] < hi or lo < RR_THRESHOLDS[0] < hi
    ci = f"CI {lo:.2f} to {hi:.2f}"
    if both and ev < 10:
        return 3, (f"extremely serious: {ev} {'event' if ev == 1 else 'events'} and a {ci} that includes both "
                   "appreciable benefit and appreciable harm")
    if both:
        return 2, f"very serious: the {ci} includes both 0.75 and 1.25 ({ev} events)"
    if ev < 30:
        return 2, f"very serious: only {ev} events (fragile); {ci}"
    if cross or ev < 300:
        return 1, (f"serious: {ev} events, fewer than the optimal information size (300)"
                   + (f"; the {ci} crosses a threshold of no or appreciable effect" if cross else ""))
    return 0, f"not serious: {ev} events; {ci}"


def _observational_grade(t: TrialResult) -> dict:
    """A controlled non-randomised comparison: start low (GRADE 1); ROBINS-I overall serious one level, critical
    two (or not assessed: one, with the reason); a secondary source of the numbers is named; imprecision from the
    events (RR) or participants."""
    dom = {}
    why = [f"ROBINS-I overall {t.rob.replace('_', ' ')}"]
    if t.secondary_source:
        why.append("numbers read in a secondary source")
    lv = {"low": 0, "moderate": 0, "serious": 1, "critical": 2}.get(t.rob, 1)
    dom["risk of bias"] = (lv, ("very serious: " if lv == 2 else "serious: " if lv else "not serious: ") + "; ".join(why))
    dom["inconsistency"] = (0, "not assessable: one study")
    dom["indirectness"] = (0, "not serious")
    if t.measure == "RR" and not t.has_effect and t.rd:
        lo, hi = 1000 * t.rd[1], 1000 * t.rd[2]
        dom["imprecision"] = (2, f"very serious: no events in {t.n_randomised} participants; the risk difference "
                                 f"interval ({lo:+.0f} to {hi:+.0f} per 1,000) does not exclude an important harm")
    elif t.measure == "RR" and t.has_effect:
        ev = sum(x[0] for x in t.counts.values())
        cross = t.ci_lb < 1 < t.ci_ub
        lvl = 2 if (cross and ev < 30) else (1 if cross or ev < 300 else 0)
        dom["imprecision"] = (lvl, f"{['not serious', 'serious', 'very serious'][lvl]}: {ev} events; CI "
                                   f"{t.ci_lb:.2f} to {t.ci_ub:.2f}")
    else:
        dom["imprecision"] = (1, f"serious: {t.n_randomised} participants; no effect estimate can be computed")
    dom["publication bias"] = (0, "not assessed: one study")
    return _grade_from(dom, start="low")


def _grade_from(dom: dict, start: str = "high") -> dict:
    down = sum(v[0] for v in dom.values())
    c = _LEVELS[max(0, _LEVELS.index(start) - down)]
    return {"starting certainty": start, "downgrades": down, "certainty": c,
            "domains": {k: {"levels": v[0], "reason": v[1]} for k, v in dom.items()},
            "footnotes": [f"{k}: {v[1]}" for k, v in dom.items() if v[0] > 0]}

