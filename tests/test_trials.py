"""Randomised evidence (ivighelpers.trials): each statistic against an independent computation, the published
anchors of the trials reproduced from the data, crossover trials counted by randomised participants, harms
reported as harms, and the analysis plan validated with messages that name file, row and column."""
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from ivighelpers import analysis as an
from ivighelpers import trials as tr
from ivighelpers.data import DATA_DIR, load_all
from ivighelpers.errors import DataValidationError, InputError


@pytest.fixture(scope="module")
def results():
    return {t.comparison_id: t for t in tr.randomised_evidence(an.load_evidence({}))}


# ---- statistics --------------------------------------------------------------------------------

@pytest.mark.parametrize("a,b,c,d", [(20, 9, 3, 8), (5, 1, 7, 27), (12, 2, 2, 4)])
def test_crossover_binary_equals_the_exact_matched_pairs_variance(a, b, c, d):
    # pairs: a both respond, b only on treatment, c only on control, d neither; rho = phi of the pair table
    n = a + b + c + d
    pt, pc, p11 = (a + b) / n, (a + c) / n, a / n
    phi = (p11 - pt * pc) / math.sqrt(pt * (1 - pt) * pc * (1 - pc))
    r = tr.crossover_binary(a + b, n, a + c, n, n, phi)
    assert r["vi"] == pytest.approx((b + c) / ((a + b) * (a + c)), rel=1e-12)
    assert r["rr"] == pytest.approx((a + b) / (a + c), rel=1e-12)


def test_crossover_binary_without_correlation_is_the_parallel_analysis_and_correlation_narrows_it():
    r0 = tr.crossover_binary(9, 12, 3, 11, 8, 0.0)
    assert r0["vi"] == pytest.approx(1 / 9 - 1 / 12 + 1 / 3 - 1 / 11, rel=1e-12)
    r5 = tr.crossover_binary(9, 12, 3, 11, 8, 0.5)
    assert r5["vi"] < r0["vi"] and r5["rr"] == pytest.approx(r0["rr"])
    with pytest.raises(InputError, match="n_both"):
        tr.crossover_binary(9, 12, 3, 11, 13, 0.5)


def test_crossover_md_equals_the_variance_of_the_within_patient_differences():
    rng = np.random.default_rng(7)
    x = rng.normal(10, 3, 14)
    y = 0.6 * x + rng.normal(2, 2, 14)
    rho = np.corrcoef(x, y)[0, 1]
    r = tr.crossover_md(x.mean(), x.std(ddof=1), 14, y.mean(), y.std(ddof=1), 14, 14, rho)
    assert r["se"] ** 2 == pytest.approx(np.var(x - y, ddof=1) / 14, rel=1e-10)


@pytest.mark.parametrize("rd,lb,ub,harm,text", [
    (0.35, 0.167, 0.533, False, "NNTB 3 (2 to 6)"),
    (0.224, 0.049, 0.400, True, "NNTH 5 (3 to 21)"),
    (0.0192, -0.018, 0.057, True, "NNTH 53 (NNTB 56 to infinity to NNTH 18)"),
    (0.10, -0.05, 0.25, False, "NNTB 10 (NNTB 4 to infinity to NNTH 20)"),
    (-0.10, -0.25, -0.05, True, "NNTB 10 (4 to 20)"),
])
def test_nnt_is_altmans_number_needed_to_treat_benefit_or_harm(rd, lb, ub, harm, text):
    assert tr.nnt(rd, lb, ub, harm=harm).text == text


def test_marginal_risk_equals_numerical_integration_and_differs_from_the_median_study():
    mu, tau2 = -2.9, 5.0
    want = integrate.quad(lambda z: special.expit(mu + math.sqrt(tau2) * z) * stats.norm.pdf(z), -40, 40)[0]
    got = tr.marginal_risk(mu, tau2)
    assert got == pytest.approx(want, rel=1e-9)
    assert got > 2 * special.expit(mu)          # with tau2 = 5 the two differ by more than twofold
    assert tr.marginal_risk(mu, 0.0) == pytest.approx(special.expit(mu))


@pytest.mark.parametrize("x,t", [(545, 664), (8, 664), (1, 50), (0, 664)])
def test_poisson_rate_limits_are_the_exact_poisson_tail_limits(x, t):
    rate, lo, hi = tr.poisson_rate(x, t, per=100, level=0.95)
    assert rate == pytest.approx(100 * x / t)
    if x > 0:
        assert stats.poisson.sf(x - 1, lo * t / 100) == pytest.approx(0.025, rel=1e-8)    # P(X >= x | lower limit)
    else:
        assert lo == 0
    assert stats.poisson.cdf(x, hi * t / 100) == pytest.approx(0.025, rel=1e-8)           # P(X <= x | upper limit)


def test_md_from_arm_cis_uses_the_t_quantile_below_60_per_arm():
    md, se, lo, hi = tr.md_from_arm_cis(-9.36, -12.52, -6.19, 47, -1.16, -3.32, 0.99, 48)
    se1 = (-6.19 + 12.52) / (2 * stats.t.ppf(0.975, 46))
    se2 = (0.99 + 3.32) / (2 * stats.t.ppf(0.975, 47))
    assert md == pytest.approx(-8.2) and se == pytest.approx(math.hypot(se1, se2), rel=1e-12)
    assert (lo, hi) == pytest.approx((md - 1.959964 * se, md + 1.959964 * se), rel=1e-6)


# ---- the review's trials -----------------------------------------------------------------------

@pytest.mark.parametrize("cid", ["proderm_tis20", "proderm_tis40", "proderm_tis60"])
def test_proderm_published_differences_are_reproduced_from_the_counts(results, cid):
    t = results[cid]
    a = t.anchor
    got = [100 * x for x in t.rd]
    assert [round(x) for x in got] == [round(a["estimate"]), round(a["ci_lb"]), round(a["ci_ub"])]
    assert t.nnt.kind == "NNTB" and t.grade["certainty"] in ("moderate", "low")


def test_proderm_tis40_is_32_of_47_vs_11_of_48_with_its_published_risk_ratio(results):
    t = results["proderm_tis40"]
    assert t.counts == {"ig": (32, 47), "placebo": (11, 48)}
    assert (round(t.estimate, 2), round(t.ci_lb, 2), round(t.ci_ub, 2)) == (2.97, 1.71, 5.17)


def test_cdasi_is_a_randomised_mean_difference(results):
    t = results["proderm_cdasi"]
    assert t.measure == "MD" and t.estimate == pytest.approx(-8.2) and t.ci_ub < 0
    assert "improves skin disease activity" in t.statement()


def test_a_crossover_trial_counts_its_randomised_participants_and_gives_no_nnt(results):
    t = results["dalakas1993_major"]
    assert t.n_randomised == 15 and t.nnt is None and not t.absolute
    assert [s[0] for s in t.sensitivity] == ["within-patient correlation 0", "within-patient correlation 0.25",
                                             "within-patient correlation 0.5"]
    assert t.sensitivity[2][2] > t.sensitivity[0][2]          # correlation narrows the interval
    pooled = results["dalakas1993_major_pooled"]
    assert pooled.role == "sensitivity" and pooled.nnt is None
    md = results["dalakas1993_strength"]
    assert (md.estimate, md.n_randomised) == (9.5, 15)
    assert (round(md.ci_lb, 2), round(md.ci_ub, 2)) == (4.33, 14.67)  # the Cochrane review's interval, as reported


def test_miyasaka_is_reported_by_its_between_group_result(results):
    t = results["miyasaka2012_mmt"]
    assert t.measure == "narrative" and t.significant == "no" and t.n_randomised == 26
    assert "between-group" in t.narrative and "within" not in t.narrative


def test_harms_are_reported_as_harms(results):
    harms = [t for t in results.values() if t.harm]
    assert harms and all(t.nnt is None or t.nnt.kind in ("NNTH", "NNTB") for t in harms)
    assert all("NNTH" in t.nnt.text for t in harms if t.nnt and t.rd[1] < 0 < t.rd[2])
    for cid in ("proderm_ae_serious", "proderm_ae_thromboembolic", "proderm_discontinued"):
        t = results[cid]
        assert sum(x for x, _ in t.counts.values()) <= 5
        assert t.grade["certainty"] == "very low" and t.grade["domains"]["imprecision"]["levels"] == 3
        assert "little or no difference" not in t.statement() and t.statement().startswith("We are very uncertain")
    assert results["proderm_ae_infusion"].statement() == ("Immunoglobulin probably increases infusion-related adverse "
                                                          "events over 16 weeks.")


def test_ibm_trials_are_synthesised_apart(results):
    ibm = [t for t in results.values() if t.population == "ibm" and t.outcome_code in ("mrc_sum", "strength_score_other")]
    syn = tr.narrative_group(ibm, "muscle strength", "ibm")
    assert syn["k"] == 3 and syn["participants"] == 19 + 22 + 36 and syn["significant"] == 0
    assert syn["statement"] == "Immunoglobulin may result in little or no difference in muscle strength."
    assert results["dalakas1997_mrc"].estimate == pytest.approx(4.2 + 2.7)


def test_randomised_trials_never_enter_single_arm_pools():
    ev = an.load_evidence({})
    a = an.proportion_analysis(ev, "t", "t", "tis_moderate", population="non_ibm")
    assert "aggarwal2022" not in set(a.data["study_id"])
    assert "randomised trial" in " ".join(a.excluded["reason"])
    ibm = an.proportion_analysis(ev, "i", "i", "strength_improved", population="ibm")
    assert "dalakas1997" not in set(ibm.data["study_id"])


def test_exposure_rates_count_events_not_patients():
    r = an.per_infusion_rates(an.load_evidence({})).set_index("result_id")
    te = r.loc["aggarwal2022-24"]
    assert te["events_counted"] == 545 and te["per_100_infusions"] == pytest.approx(100 * 545 / 664)
    # Hara 2003 counts its adverse effects per infusion (2 of 15 infusions; audit v3 moved the 2 from events)
    assert r.loc["hara2003-07", "events_counted"] == 2 and r.loc["hara2003-07", "per_100_infusions"] == pytest.approx(100 * 2 / 15)
    assert pd.isna(r.loc["hara2003-07", "events"])


# ---- the plan is validated ---------------------------------------------------------------------

def _broken(tmp_path, find, replace, name="randomised.csv"):
    d = tmp_path / "data"
    shutil.copytree(DATA_DIR, d)
    p = d / name
    text = p.read_text()
    assert find in text
    p.write_text(text.replace(find, replace, 1))
    return d


@pytest.mark.parametrize("find,replace,message", [
    ("aggarwal2022-01; aggarwal2022-02", "aggarwal2022-01; aggarwal2022-99",
     "randomised.csv: row 2, column result_ids: 'aggarwal2022-99' is not a result_id in outcomes.csv"),
    ("aggarwal2022-01; aggarwal2022-02", "aggarwal2022-02; aggarwal2022-01",
     "randomised.csv: row 2, column result_ids: 'aggarwal2022-02' is arm 'placebo'; the first id must be the immunoglobulin arm"),
    ("proderm_tis20,aggarwal2022", "proderm_tis20,lim2021", "randomised.csv: row 2, column study_id: 'lim2021' is not a randomised trial"),
    ("0; 0.25; 0.5", "0; 1.5", "randomised.csv: row 7, column rho: correlations must lie in [-1, 1]"),
    ("parallel_binary", "paralel_binary", "randomised.csv: row 2, column analysis"),
])
def test_broken_plan_names_file_row_and_column(tmp_path, find, replace, message):
    with pytest.raises(DataValidationError, match=re.escape(message)):
        load_all(_broken(tmp_path, find, replace))


def test_fewer_events_than_patients_with_an_event_is_refused(tmp_path):
    d = _broken(tmp_path, ",664,545,", ",664,50,", name="outcomes.csv")
    with pytest.raises(DataValidationError, match=r"outcomes.csv: row \d+, column n_events: 50 events cannot be fewer"):
        load_all(d)


# ---- controlled non-randomised comparisons (ROBINS-I) ------------------------------------------

def test_controlled_cohort_is_a_comparison_rated_as_observational_evidence():
    got = {t.comparison_id: t for t in tr.controlled_evidence(an.load_evidence({}))}
    t = got["dm42_complete_remission"]
    # 50% of 24 and 44.4% of 18 (counts from the printed percentages), computed independently
    assert t.counts == {"ig": (12, 24), "placebo": (8, 18)}
    assert t.estimate == pytest.approx((12 / 24) / (8 / 18), rel=1e-12)
    se = math.sqrt(1 / 12 - 1 / 24 + 1 / 8 - 1 / 18)
    assert t.ci_lb == pytest.approx(t.estimate * math.exp(-stats.norm.ppf(0.975) * se), rel=1e-12)
    assert not t.randomised and t.grade["starting certainty"] == "low"
    assert t.grade["certainty"] == "very low"
    assert "ROBINS-I overall serious" in t.grade["domains"]["risk of bias"]["reason"]
    assert "without immunoglobulin" in t.absolute_text() and "placebo" not in t.absolute_text()
    assert got["lam2011_activity"].population == "jdm" and got["lam2011_activity"].measure == "narrative"


def test_controlled_plan_refuses_a_randomised_trial(tmp_path):
    d = _broken(tmp_path, "dm42_complete_remission,anon_dm42_2012", "dm42_complete_remission,aggarwal2022",
                name="nonrandomised.csv")
    with pytest.raises(DataValidationError, match=re.escape(
            "nonrandomised.csv: row 2, column study_id: 'aggarwal2022' is not a controlled non-randomised study")):
        load_all(d)


def test_retreatment_of_an_unprinted_number_of_children_is_not_a_rate():
    ev = an.load_evidence({})
    a = an.proportion_analysis(ev, "retreatment", "Response to retreatment", "retreatment_response")
    assert "anon_pedres1997" not in set(a.data.get("study_id", []))
    ex = a.excluded.set_index("study_id")
    assert "anon_pedres1997" in ex.index and "number of patients" in ex.loc["anon_pedres1997", "reason"]


@pytest.mark.parametrize("a,n1,c,n2", [(56, 70, 48, 80), (0, 125, 0, 110), (3, 16, 0, 6)])
def test_newcombe_interval_matches_statsmodels_and_newcombe_1998(a, n1, c, n2):
    from statsmodels.stats.proportion import confint_proportions_2indep
    d, lo, hi = tr.newcombe_rd(a, n1, c, n2)
    ref = confint_proportions_2indep(a, n1, c, n2, method="newcomb", compare="diff")
    assert d == pytest.approx(a / n1 - c / n2) and (lo, hi) == pytest.approx(ref, rel=1e-10)
    if (a, n1, c, n2) == (56, 70, 48, 80):                 # Newcombe 1998, method 10: 0.0524 to 0.3339
        assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_no_event_in_either_group_gives_no_ratio_and_a_score_interval_for_the_difference():
    t = {t.comparison_id: t for t in tr.controlled_evidence(an.load_evidence({}))}["jdm_te_thrombo"]
    assert t.estimate is None and t.effect_text().startswith("not estimable: no event in either group")
    assert t.rd[0] == 0 and t.rd[1] < 0 < t.rd[2]
    assert t.grade["certainty"] == "very low" and "does not exclude an important harm" in \
        t.grade["domains"]["imprecision"]["reason"]
