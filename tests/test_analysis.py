"""The analysis layer: selection, pooling and the computed narrative agree with the engine and the data."""
import math

import numpy as np
import pytest
from scipy import stats

from ivighelpers import analysis as an
from ivighelpers import grade as gr
from ivighelpers.sof import observed_rates
from ivighelpers import escalc, rma
from ivighelpers.errors import InputError, ParameterError
from ivighelpers.vocabulary import OUTCOMES


@pytest.fixture(scope="module")
def ev():
    return an.load_evidence({})


@pytest.fixture(scope="module")
def strength(ev):
    return an.proportion_analysis(ev, "s", "Strength", "strength_improved", population="non_ibm")


def test_pooled_proportion_is_the_engine_on_the_selected_rows(ev, strength):
    a = strength
    es = escalc("PLO", xi=a.data["events"].astype(float), ni=a.data["n"].astype(float))
    fit = rma(es, method="REML")
    assert a.summary["estimate"] == pytest.approx(1 / (1 + np.exp(-fit.estimate)), rel=1e-12)
    kh = rma(es, method="REML", test="knha")
    assert a.summary["ci_hksj_lb"] == pytest.approx(1 / (1 + np.exp(-kh.ci_lb)), rel=1e-12)
    lo, hi = fit.prediction_interval()
    assert a.summary["pi_lb"] == pytest.approx(1 / (1 + np.exp(-lo)), rel=1e-12)
    assert a.k == len(set(a.data["study_id"])) == len(a.data)
    assert a.n_patients == int(a.data["n"].sum())
    oc = ev.outcomes.set_index("result_id")
    rows = oc.loc[a.data["result_id"]]
    assert set(rows["arm"]) == {"ig"} and set(rows["outcome_code"]) == {"strength_improved"}
    assert (rows["combined_regimen"] == "").all()


def test_one_report_per_cohort(ev, strength):
    for code in ("strength_improved", "relapse", "gc_reduced", "any_improvement"):
        a = an.proportion_analysis(ev, code, code, code, population="non_ibm")
        assert not a.data["cohort_id"].duplicated().any(), code
    # Toronto JDM clinic: the larger report (Al-Mayouf 2000, n = 18) is kept, Lang 1991 (n = 5) is shown as merged
    gc = an.proportion_analysis(ev, "gc", "gc", "gc_reduced", population="all")
    m = {x["cohort"]: x for x in gc.merged}
    assert m["toronto_jdm"]["kept"] == "Al-Mayouf 2000" and m["toronto_jdm"]["dropped"] == ["Lang 1991"]
    alt = gc.sensitivity[gc.sensitivity["analysis"].str.startswith("all reports")]
    assert len(alt) == 1 and int(alt["k"].iloc[0]) == gc.k + len(gc.alternatives)


def test_ibm_is_pooled_apart(ev, strength):
    ibm = an.proportion_analysis(ev, "i", "IBM", "strength_improved", population="ibm")
    st = ev.studies.set_index("study_id")
    assert (st.loc[ibm.data["study_id"], "ibm_share"] >= 0.8).all()
    assert (st.loc[strength.data["study_id"], "ibm_share"] <= 0.2).all()
    assert set(ibm.data["study_id"]).isdisjoint(strength.data["study_id"])
    assert ibm.summary["estimate"] < strength.summary["estimate"]
    # a mixed study (Cherin 2016: 7 of 19 IBM) enters neither pool, and says why
    ex = strength.excluded.set_index("study_id")
    assert "IBM patients are 37%" in ex.loc["cherin2016", "reason"]


def test_combined_regimens_never_enter_an_ig_pool(ev):
    # Levy 2010's group had IVIG and/or methotrexate (audit v3): never an immunoglobulin rate
    a = an.proportion_analysis(ev, "s", "Serious adverse events", "ae_serious")
    assert "levy2010" not in set(a.data["study_id"])
    assert "combined regimen (IVIG and/or methotrexate" in a.excluded.set_index("study_id").loc["levy2010", "reason"]


def test_decline_rule_on_unlike_studies():
    ev = an.load_evidence({"transform": "GLMM"})
    a = an.proportion_analysis(ev, "ae", "Any adverse event", "ae_any_reported")
    b = an.proportion_analysis(ev, "te", "Treatment-emergent", "ae_any_te")
    # the trial's treatment-emergent events are never pooled with observational "adverse events", nor as a rate
    assert b.k == 0 and "randomised trial" in " ".join(b.excluded["reason"])
    assert "aggarwal2022" not in set(a.data["study_id"])
    # a synthetic pool meeting the rule: I2 > 75% and a prediction interval over half the range
    a.heterogeneity["I2"], a.summary["pi_lb"], a.summary["pi_ub"] = 80.0, 0.01, 0.9
    a.declined = ""
    an._decline_rule(a)
    assert a.declined.startswith("I\u00b2 = 80% (> 75%) and the prediction interval spans 89 of 100")
    assert "no single pooled number is given" in a.sentence() and not a.headline
    # ... and not when the prediction interval is narrower than half the range
    a.summary["pi_lb"], a.summary["pi_ub"], a.declined = 0.1, 0.5, ""
    an._decline_rule(a)
    assert a.declined == ""


def test_two_studies_whose_intervals_do_not_overlap_are_not_pooled_weighted_or_rated():
    ev = an.load_evidence({})
    a = an.proportion_analysis(ev, "ae", "Any adverse event", "ae_any_reported")
    two = a.data.iloc[[0, 1]].reset_index(drop=True)
    two[["est", "ci_lb", "ci_ub"]] = [[0.05, 0.01, 0.10], [0.70, 0.50, 0.90]]   # synthetic: intervals apart
    a.data, a.k, a.declined = two, 2, ""
    an._decline_rule(a)
    assert a.declined.startswith("the two studies' confidence intervals do not overlap")
    g = gr.suggest(a, ev)
    assert g["certainty"] == "not rated (not pooled)" and not g["domains"]


def test_sentence_is_built_from_the_numbers(strength):
    s = strength.sentence()
    a = strength
    assert f"{100 * a.summary['estimate']:.1f}%" in s and f"from {a.k} studies with {a.n_patients} patients" in s
    assert f"Knapp-Hartung {100 * a.summary['ci_hksj_lb']:.1f}%" in s
    assert f"I\u00b2 = {a.heterogeneity['I2']:.0f}%" in s


def test_bayesian_and_glmm_sensitivity_rows(strength):
    sens = strength.sensitivity.set_index("analysis")
    for sc in (0.5, 1.0):
        b = strength.bayes[sc]
        row = sens.loc[f"Bayesian, half-normal({sc:g}) prior on tau (median, credible interval)"]
        assert row["estimate"] == pytest.approx(1 / (1 + math.exp(-b.mu_median)), rel=1e-12)
    assert any(i.startswith("GLMM, exact binomial likelihood") for i in sens.index)


def test_swim_vote_counts_match_binomtest(ev):
    s = an.swim_analysis(ev, "ck", "CK", "ck_level", "decrease", population="non_ibm")
    vc = s.extra["vote"]
    assert s.k >= 3 and vc.voting >= 3
    assert vc.pval == pytest.approx(stats.binomtest(vc.favouring, vc.voting).pvalue, rel=1e-12)
    dirs = s.data["direction"]
    assert vc.favouring == int((dirs == "decrease").sum()) and vc.no_change == int((dirs == "no_change").sum())
    assert not s.data["cohort_id"].duplicated().any()


def test_randomised_analysis_pairs_arms_by_comparison_key(ev):
    c = an.comparison_analysis(ev, "rct", "Response", ["tis_minimal", "clinical_improved", "strength_improved"],
                               list_all=True)
    assert {"aggarwal2022", "dalakas1993"} <= set(c.data["study_id"])
    d93 = c.data.set_index("study_id").loc["dalakas1993"]
    assert (d93["ai"], d93["n1i"], d93["ci"], d93["n2i"]) == (9, 12, 0, 11)   # crossover periods pooled, by key
    # different outcome definitions are never pooled into one risk ratio
    assert c.declined.startswith("the trials measure different outcomes") and not c.pooled
    assert set(c.excluded["study"]) >= {"Walter 2000", "Dalakas 1997"}
    # one definition: absolute effect per 1,000 from the control-arm risk, NNT from the risk difference
    t = an.comparison_analysis(ev, "tis", "TIS", "tis_minimal")
    r = t.data.iloc[0]
    cr = r["ci"] / r["n2i"]
    assert t.summary["per1000_ctrl"] == pytest.approx(1000 * cr)
    assert t.summary["per1000_ig"] == pytest.approx(1000 * cr * t.summary["estimate"])
    assert t.summary["rd"] == pytest.approx(r["ai"] / r["n1i"] - cr)
    assert t.summary["nnt"] == pytest.approx(1 / t.summary["rd"])
    # no event with placebo: the absolute effect comes from the risk difference, never above 1,000
    d = an.comparison_analysis(ev, "clin", "Clinical", "clinical_improved")
    assert d.summary["per1000_ctrl"] == 0 and d.summary["per1000_ig"] == pytest.approx(1000 * 9 / 12)


def test_grade_rules(ev, strength):
    g = strength.grade
    assert g["starting certainty"] == "low"               # single-arm evidence starts low
    assert set(g["domains"]) == {"risk of bias", "inconsistency", "indirectness", "imprecision", "publication bias"}
    assert g["downgrades"] == sum(d["levels"] for d in g["domains"].values())
    levels = ["very low", "low", "moderate", "high"]
    assert g["certainty"] == levels[max(0, 1 - g["downgrades"])]
    c = an.comparison_analysis(ev, "rct", "Response", ["tis_minimal"])
    assert c.grade["starting certainty"] == "high"
    assert "publication bias" in c.grade and c.grade["domains"]["publication bias"]["levels"] == 0  # k < 10


def test_summary_of_findings_rows(ev, strength):
    row = observed_rates([("strength improved", strength)]).iloc[0]
    assert row["Studies (patients)"] == f"{strength.k} ({strength.n_patients})"
    assert row["Certainty"] == strength.grade["certainty"]
    assert f"{100 * strength.summary['estimate']:.1f}%" in row["Observed rate"]


def test_outcome_codes_are_known(ev):
    assert set(ev.outcomes["outcome_code"]) <= set(OUTCOMES)
    with pytest.raises(InputError, match=r"unknown outcome code\(s\) \['strength'\]"):
        an.proportion_analysis(ev, "x", "x", "strength")


def test_filters_change_the_selection_and_say_which():
    full = an.load_evidence({})
    low = an.load_evidence({"exclude_high_rob": True})
    assert len(low.studies) < len(full.studies)
    assert not low.studies["rob_high"].any()
    log = {name: (n, which) for name, n, which in low.filter_log}
    n, which = log["overall risk of bias not high/serious/critical"]
    assert n == len(full.studies) - len(low.studies) == len(which)
    scig = an.load_evidence({"route": "SCIg"})
    assert set(scig.studies["route"]) == {"SCIg"}
    nod = an.load_evidence({"exclude_derived": True})
    assert (nod.outcomes["derived"] == "").all()
    yr = an.load_evidence({"year_min": 2000})
    name = [x for x in yr.filter_log if x[0].startswith("year")][0]
    assert any(w.endswith("n.d.") for w in name[2])   # undated studies are named as removed


def test_subtype_filter_uses_share_of_patients():
    dm = an.load_evidence({"subtypes": ["dm"]})
    share = an._share(dm.studies, ["dm"])
    own = set(dm.tables["outcomes"].loc[dm.tables["outcomes"]["subgroup"] == "dm", "study_id"])
    assert ((share >= 0.8) | dm.studies["study_id"].isin(own)).all()


def test_glmm_default_for_safety_uses_exact_likelihood():
    ev = an.load_evidence({"transform": "GLMM"})
    a = an.proportion_analysis(ev, "ae", "Serious", "ae_serious")
    assert a.measure == "GLMM" and a.k >= 2
    assert 0 < a.summary["ci_lb"] < a.summary["estimate"] < a.summary["ci_ub"] < 1
    assert a.sensitivity["analysis"].iloc[0].startswith("main (GLMM, ML,")


@pytest.mark.parametrize("params,msg", [
    ({"method": "XX"}, r"method='XX' is not allowed"),
    ({"designs": ["rct", "anecdote"]}, r"\['anecdote'\] not allowed"),
    ({"level": 1.2}, r"level=1.2 must lie in \(0, 1\)"),
    ({"ri": 2}, r"ri=2.0 .* must lie in \[-1, 1\]"),
    ({"subtype_share": 0.2}, r"subtype_share=0.2 .* must lie in \[0.5, 1\]"),
    ({"year_min": 2020, "year_max": 2000}, r"year_min \(2020\) is after year_max \(2000\)"),
    ({"exclude_high_rob": "maybe"}, r"exclude_high_rob='maybe' must be True or False"),
    ({"colour": "red"}, r"unknown parameter\(s\) \['colour'\]"),
])
def test_parameter_errors(params, msg):
    with pytest.raises(ParameterError, match=msg):
        an.validate_params(params)


def test_clopper_pearson_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint
    x = np.array([0, 1, 7, 19, 20])
    n = np.array([20, 20, 20, 20, 20])
    lo, hi = an.clopper_pearson(x, n, 0.95)
    ref_lo, ref_hi = proportion_confint(x, n, alpha=0.05, method="beta")
    assert lo == pytest.approx(np.nan_to_num(ref_lo, nan=0.0), abs=1e-12)
    assert hi == pytest.approx(np.nan_to_num(ref_hi, nan=1.0), abs=1e-12)


def test_per_infusion_rates_use_exact_poisson_limits(ev):
    from statsmodels.stats.rates import confint_poisson
    r = an.per_infusion_rates(ev)
    r = r[r["rate_note"] == ""]
    assert len(r) > 0 and r["n_infusions"].notna().all()
    for row in r.itertuples():
        lo, hi = confint_poisson(row.events_counted, row.n_infusions, method="exact-c", alpha=0.05)
        assert row.per_100_infusions == pytest.approx(100 * row.events_counted / row.n_infusions)
        assert row.ci_lb == pytest.approx(100 * np.nan_to_num(lo), abs=1e-9)
        assert row.ci_ub == pytest.approx(100 * hi, rel=1e-9)


def test_leave_one_out_on_the_natural_scale(strength):
    loo = an.loo_natural(strength)
    assert loo["estimate"].iloc[0] == pytest.approx(1 / (1 + np.exp(-strength.loo["estimate"].iloc[0])))
    assert (loo["ci_lb"] <= loo["estimate"]).all() and (loo["estimate"] <= loo["ci_ub"]).all()


def test_to_none_leaves_zero_cell_studies_out_of_normal_normal_pools_with_the_reason(strength):
    ev0 = an.load_evidence({"to": "none"})
    a = an.proportion_analysis(ev0, "s", "Strength", "strength_improved", population="non_ibm")
    full = strength.data
    zero = full[(full["events"] == 0) | (full["events"] == full["n"])]
    assert len(zero) >= 1                                          # the default pool holds 0/n or n/n studies
    assert a.k == strength.k - len(zero)
    assert set(a.data["study_id"]) == set(full["study_id"]) - set(zero["study_id"])
    gone = a.excluded[a.excluded["reason"].str.contains("no finite PLO without a continuity correction")]
    assert set(gone["study_id"]) == set(zero["study_id"])
    assert any(", ".join(zero["label"]) in n and "left out" in n for n in a.notes)
    es = escalc("PLO", xi=a.data["events"].astype(float), ni=a.data["n"].astype(float), to="none")
    assert a.summary["estimate"] == pytest.approx(1 / (1 + np.exp(-rma(es, method="REML").estimate)), rel=1e-12)


def test_to_none_keeps_every_study_in_the_glmm(strength):
    glmm0 = an.proportion_analysis(an.load_evidence({"to": "none", "transform": "GLMM"}), "s", "Strength",
                                   "strength_improved", population="non_ibm")
    glmm = an.proportion_analysis(an.load_evidence({"transform": "GLMM"}), "s", "Strength", "strength_improved",
                                  population="non_ibm")
    assert glmm0.k == glmm.k == strength.k                         # exact likelihood: no correction needed
    assert glmm0.summary["estimate"] == pytest.approx(glmm.summary["estimate"], rel=1e-12)
    assert any("the GLMM (exact binomial likelihood, no correction needed) includes them" in n for n in glmm0.notes)


def test_glmm_pool_whose_every_study_has_a_zero_cell_under_to_none(strength):
    # every study 0/n or n/n: no normal-normal model is possible without a correction, the GLMM still fits
    from ivighelpers.data import load_all
    t = load_all()
    oc = t["outcomes"].copy()
    ids = set(strength.data["result_id"])
    sel = oc["result_id"].isin(ids)
    oc.loc[sel, "events"] = [n if i % 2 else 0 for i, n in enumerate(oc.loc[sel, "n"])]
    t["outcomes"] = oc
    ev0 = an.load_evidence({"to": "none", "transform": "GLMM"}, tables=t)
    a = an.proportion_analysis(ev0, "s", "Strength", "strength_improved", population="non_ibm")
    # 0/n and n/n only: the GLMM likelihood rises without bound in tau2, and no logit is finite without a
    # correction, so nothing is pooled; the report says why instead of failing
    assert a.k == strength.k and a.fit is None and a.summary.get("estimate") is None
    assert any("GLMM not fitted: every one of the" in n and "no finite maximum-likelihood estimate" in n for n in a.notes)
    assert any("the normal-normal sensitivity analyses leave them out" in n for n in a.notes)
    # with at least one study strictly between 0 and n the GLMM fits, and its row leads the sensitivity table
    t["outcomes"].loc[oc.index[sel][0], "events"] = 1
    a1 = an.proportion_analysis(an.load_evidence({"to": "none", "transform": "GLMM"}, tables=t), "s", "Strength",
                                "strength_improved", population="non_ibm")
    assert a1.fit is not None and a1.sensitivity["analysis"].iloc[0].startswith("main (GLMM")


@pytest.mark.parametrize("code,population,transform", [("any_improvement", "non_ibm", "PLO"),
                                                        ("ae_serious", "all", "GLMM"), ("relapse", "all", "PFT")])
def test_a_light_fit_gives_the_same_pooled_result_as_the_full_analysis(code, population, transform):
    # published comparisons use light fits (main fit, summary, decline rule): the numbers must not move
    ev = an.load_evidence({"transform": transform})
    full = an.proportion_analysis(ev, "f", "f", code, population=population)
    light = an.proportion_analysis(ev, "l", "l", code, population=population, light=True)
    assert (light.k, light.n_patients, light.declined) == (full.k, full.n_patients, full.declined)
    for key in ("estimate", "ci_lb", "ci_ub", "pi_lb", "pi_ub"):
        assert light.summary.get(key) == full.summary.get(key), key
    assert light.sensitivity is None and full.sensitivity is not None
    assert list(light.data["study_id"]) == list(full.data["study_id"])
