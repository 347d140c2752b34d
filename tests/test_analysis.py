"""The analysis layer: selection, pooling and the computed narrative agree with the engine and the data."""
import numpy as np
import pytest

from ivighelpers import analysis as an
from ivighelpers import escalc, rma
from ivighelpers.errors import ParameterError

RESP = [("strength", "responders"), ("response", "responders")]


@pytest.fixture(scope="module")
def ev():
    return an.load_evidence({})


def test_pooled_proportion_is_the_engine_on_the_selected_rows(ev):
    a = an.proportion_analysis(ev, "s", "Strength", RESP)
    es = escalc("PLO", xi=a.data["events"].astype(float), ni=a.data["n"].astype(float))
    fit = rma(es, method="REML")
    assert a.summary["estimate"] == pytest.approx(1 / (1 + np.exp(-fit.estimate)), rel=1e-12)
    assert a.k == len(set(a.data["study_id"])) == len(a.data)
    assert a.n_patients == int(a.data["n"].sum())
    # one row per study, each with events <= n, all from the Ig arm
    assert (a.data["events"] <= a.data["n"]).all()
    oc = ev.outcomes.set_index("result_id")
    assert set(oc.loc[a.data["result_id"], "arm"]) == {"ig"}


def test_sentence_is_built_from_the_numbers(ev):
    a = an.proportion_analysis(ev, "s", "Strength", RESP)
    s = a.sentence()
    assert f"{100 * a.summary['estimate']:.1f}%" in s and f"from {a.k} studies with {a.n_patients} patients" in s
    assert f"I\u00b2 = {a.heterogeneity['I2']:.0f}%" in s


def test_filters_change_the_selection():
    full = an.load_evidence({})
    low = an.load_evidence({"exclude_high_rob": True})
    assert len(low.studies) < len(full.studies)
    assert not low.studies["rob_high"].any()
    scig = an.load_evidence({"route": "SCIg"})
    assert set(scig.studies["route"]) == {"SCIg"}
    assert dict(low.filter_log)["overall risk of bias not high/serious/critical"] == len(full.studies) - len(low.studies)
    nod = an.load_evidence({"exclude_derived": True})
    assert (nod.outcomes["derived"] == "").all()


def test_glmm_default_for_safety_uses_exact_likelihood():
    ev = an.load_evidence({"transform": "GLMM"})
    a = an.proportion_analysis(ev, "ae", "Serious", [("safety", "ae_serious")])
    assert a.measure == "GLMM" and a.k >= 2
    assert 0 < a.summary["ci_lb"] < a.summary["estimate"] < a.summary["ci_ub"] < 1
    assert a.sensitivity["analysis"].iloc[0] == "main (GLMM, ML)"


def test_grade_rules(ev):
    a = an.proportion_analysis(ev, "s", "Strength", RESP)
    g = a.grade
    assert g["starting certainty"] == "low"              # single-arm evidence
    assert g["inconsistency"].startswith("serious") == (a.heterogeneity["I2"] > 50)
    assert g["certainty"] == "very low"


def test_explanation_names_studies_outside_the_review_window(ev):
    a = an.proportion_analysis(ev, "s", "Strength", RESP)
    cmp = an.published_comparison(a, ev, ["PE-D-02"])
    text = an.explain_difference(a, cmp)
    outside = a.data[(a.data["year"] < 2010) | (a.data["year"] > 2020)]
    assert f"{len(outside)} of our {a.k} studies were published outside 2010-2020" in text
    assert cmp.iloc[0]["estimate"] == pytest.approx(0.885)


@pytest.mark.parametrize("params,msg", [
    ({"method": "XX"}, r"method='XX' is not allowed"),
    ({"designs": ["rct", "anecdote"]}, r"\['anecdote'\] not allowed"),
    ({"level": 1.2}, r"level=1.2 must lie in \(0, 1\)"),
    ({"ri": 2}, r"ri=2.0 .* must lie in \[-1, 1\]"),
    ({"year_min": 2020, "year_max": 2000}, r"year_min \(2020\) is after year_max \(2000\)"),
    ({"exclude_high_rob": "yes"}, r"exclude_high_rob='yes' must be True or False"),
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
    assert len(r) > 0 and r["n_infusions"].notna().all()
    for row in r.itertuples():
        lo, hi = confint_poisson(row.events, row.n_infusions, method="exact-c", alpha=0.05)
        assert row.per_100_infusions == pytest.approx(100 * row.events / row.n_infusions)
        assert row.ci_lb == pytest.approx(100 * np.nan_to_num(lo), abs=1e-9)
        assert row.ci_ub == pytest.approx(100 * hi, rel=1e-9)


def test_leave_one_out_on_the_natural_scale(ev):
    a = an.proportion_analysis(ev, "s", "Strength", RESP)
    loo = an.loo_natural(a)
    assert loo["estimate"].iloc[0] == pytest.approx(1 / (1 + np.exp(-a.loo["estimate"].iloc[0])))
    assert (loo["ci_lb"] <= loo["estimate"]).all() and (loo["estimate"] <= loo["ci_ub"]).all()
