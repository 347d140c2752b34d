"""Edge cases: tiny k, identical studies, boundary tau2, 0/n and n/n, extreme variances, non-convergence."""
import warnings

import numpy as np
import pytest

from ivighelpers import (ConvergenceWarning, cumulative, egger, escalc, leave_one_out, rma, rma_glmm,
                         rma_mh, trimfill)
from ivighelpers.effects import transf_ipft_hm


def test_k1_reports_the_single_study_without_heterogeneity():
    r = rma([0.5], [0.04], method="REML")
    assert r.k == 1
    assert r.estimate == 0.5 and r.se == pytest.approx(0.2)
    assert r.ci_lb == pytest.approx(0.5 - 1.959964 * 0.2, rel=1e-6)
    assert r.tau2 is None and r.I2 is None and r.Q is None and r.pi_lb is None and r.tau2_ci is None
    assert "no pooling" in r.notes[0]
    assert "k = 1" in r.one_line()


def test_k2_works_for_every_method():
    for m in ["FE", "DL", "REML", "ML", "PM", "HS", "SJ", "HE", "EB"]:
        r = rma([0.1, 0.9], [0.02, 0.03], method=m)
        assert r.k == 2 and np.isfinite(r.estimate) and r.tau2 >= 0


def test_identical_studies_give_zero_heterogeneity():
    for m in ["DL", "REML", "ML", "PM", "HS", "SJ", "HE", "EB"]:
        r = rma([0.3] * 5, [0.01] * 5, method=m)
        assert r.tau2 == 0 and r.I2 == 0 and r.Q == pytest.approx(0)
        assert r.estimate == pytest.approx(0.3)
        assert r.tau2_ci == [0.0, 0.0]


def test_tau2_on_boundary_equals_fixed_effect():
    yi = [0.10, 0.11, 0.12]
    r = rma(yi, [0.1] * 3, method="DL")
    assert r.tau2 == 0.0 and r.I2 == 0.0   # statsmodels' DL returns a negative tau2 here
    assert r.estimate == pytest.approx(rma(yi, [0.1] * 3, method="FE").estimate)


def test_zero_and_all_events_proportions():
    x, n = [0, 5, 10, 3], [10, 10, 10, 12]
    plo = escalc("PLO", xi=x, ni=n)
    assert plo.yi[0] == pytest.approx(np.log(0.5 / 10.5))   # 0.5 added to xi and ni - xi
    assert plo.yi[2] == pytest.approx(np.log(10.5 / 0.5))
    pft = escalc("PFT", xi=x, ni=n)                           # no correction for PFT
    assert pft.yi[0] == pytest.approx(0.5 * np.arcsin(np.sqrt(1 / 11)))
    r = rma(pft.yi, pft.vi, method="REML", measure="PFT", ni=n)
    t = r.transformed()
    assert 0 <= t["ci_lb"] <= t["estimate"] <= t["ci_ub"] <= 1
    assert float(transf_ipft_hm(0.0, n)) == 0.0 and float(transf_ipft_hm(np.pi / 2, n)) == 1.0
    g = rma_glmm(xi=x, ni=n)                                  # exact likelihood, no correction
    assert 0 < g.transformed()["estimate"] < 1


def test_all_zero_events_in_glmm_and_mh_give_clear_results():
    g = rma_glmm(xi=[0, 0, 1], ni=[20, 30, 25])
    assert g.transformed()["estimate"] < 0.05
    with pytest.raises(ValueError, match="not estimable"):
        rma_mh("OR", ai=[0, 0], n1i=[10, 10], ci=[0, 0], n2i=[10, 10])


def test_huge_and_tiny_variances():
    yi = np.array([0.2, 0.5, 0.1, 0.4])
    vi = np.array([1e-10, 1e6, 1e-8, 1e4])
    fe = rma(yi, vi, method="FE")
    assert fe.estimate == pytest.approx(np.average(yi, weights=1 / vi), rel=1e-12)
    for m in ["DL", "REML", "ML", "PM", "HS", "SJ", "HE", "EB"]:
        r = rma(yi, vi, method=m)
        assert np.isfinite(r.estimate) and np.isfinite(r.se) and r.tau2 >= 0
        assert yi.min() <= r.estimate <= yi.max()


def test_nonconvergence_warns_and_states_the_fallback():
    yi = np.array([0.1, 1.5, -0.8, 2.2, 0.3])
    vi = np.array([0.05, 0.2, 0.1, 0.3, 0.02])
    with pytest.warns(ConvergenceWarning, match="REML.*instead"):
        r = rma(yi, vi, method="REML", control={"maxiter": 1})
    ref = rma(yi, vi, method="REML")
    assert r.tau2 == pytest.approx(ref.tau2, rel=1e-3)
    assert any("did not converge" in n for n in r.notes)


def test_fallback_to_dl_for_pm_states_it():
    yi = np.array([0.1, 1.5, -0.8, 2.2, 0.3])
    vi = np.array([0.05, 0.2, 0.1, 0.3, 0.02])
    with pytest.warns(ConvergenceWarning, match="fell back to the DL"):
        r = rma(yi, vi, method="PM", control={"maxiter": 1})
    assert r.tau2 == pytest.approx(rma(yi, vi, method="DL").tau2)


def test_local_maximum_is_replaced_by_boundary_when_higher():
    # this subset of metadat::dat.debruin2009 has a REML local maximum at 0.0625 below ll(0)
    yi = [0.18232156, 0.63598877, -0.49247649, 0.98082925, 0.19695322]
    vi = [0.03666667, 0.16993464, 0.14646465, 0.15277778, 0.01238931]
    r = rma(yi, vi, method="REML")
    assert r.tau2 == 0.0
    assert "tau2 = 0 is used" in r.notes[0]


def test_post_fit_tools_on_small_k():
    r = rma([0.1, 0.4, 0.3], [0.01, 0.02, 0.015], method="REML")
    assert len(leave_one_out(r)) == 3
    assert len(cumulative(r)) == 3
    assert egger(r).df is None
    assert trimfill(r).k0 >= 0
    with pytest.raises(ValueError, match="at least 3"):
        egger(rma([0.1, 0.2], [0.01, 0.01]))


def test_no_runtime_warnings_from_boundary_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rma([0.2, 0.2], [0.1, 0.1], method="SJ")
        rma([0.2, 0.2, 0.2], [0.1, 0.1, 0.1], method="HE")


def test_views_are_built_from_the_numbers():
    es = escalc("PLO", xi=[16, 10, 4, 43, 10], ni=[17, 12, 8, 58, 10])
    r = rma(es, method="REML")
    assert r.measure == "PLO"
    t = r.transformed()
    assert t["transform"] == "ilogit"
    assert t["estimate"] == pytest.approx(1 / (1 + np.exp(-r.estimate)))
    line = r.one_line()
    assert line.startswith("REML, k = 5: ") and f"{t['estimate']:.2f}" in line and f"{t['pi_lb']:.2f}" in line
    sf = r.summary_frame()
    assert sf.loc["estimate", "value"] == r.estimate and sf.loc["I2", "value"] == r.I2
    assert sf.loc["tau2_ci_lb", "value"] == r.tau2_ci[0]


def test_categorical_moderator_names_and_subgroups():
    from ivighelpers import rma_subgroups
    yi = [0.1, 0.3, 0.5, 0.9, 1.1, 0.2]
    vi = [0.02, 0.03, 0.02, 0.04, 0.05, 0.03]
    g = ["ivig", "ivig", "scig", "scig", "scig", "ivig"]
    r = rma(yi, vi, mods={"route": g}, method="REML")
    assert list(r.coefficients.index) == ["intrcpt", "routescig"]
    assert r.QM_df == 1 and 0 <= r.QM_pval <= 1
    sg = rma_subgroups(yi, vi, g, method="REML")
    assert set(sg.fits) == {"ivig", "scig"} and sg.Q_between_df == 1
    assert list(sg.summary_frame().index) == ["ivig", "scig"]


def test_glmm_with_extreme_heterogeneity_has_a_sane_standard_error():
    # 0/5, 9/17, 84/95, 0/24: a naive Newton mode search diverges here and collapses the SE to ~0
    g = rma_glmm(xi=[0, 9, 84, 0], ni=[5, 17, 95, 24])
    assert 1.0 < g.se < 5.0
    assert 5.0 < g.tau2 < 30.0
    t = g.transformed()
    assert t["ci_lb"] < 0.05 and t["ci_ub"] > 0.5


def test_figures_are_byte_reproducible(tmp_path):
    from ivighelpers import analysis as an
    from ivighelpers import plots
    a = an.proportion_analysis(an.load_evidence({}), "s", "Strength", "strength_improved", population="non_ibm")
    first = plots.save_figure(plots.forest_plot(a), "t", "f", tmp_path / "one")
    second = plots.save_figure(plots.forest_plot(a), "t", "f", tmp_path / "two")
    for p1, p2 in zip(first, second):
        assert p1.read_bytes() == p2.read_bytes(), p1.suffix
