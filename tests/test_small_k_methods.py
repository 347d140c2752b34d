"""Small-k and SWiM methods, each against an independent computation (issue 8)."""

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from ivighelpers import InputError, leave_one_out, rma, rma_glmm
from ivighelpers.bayes import bayesmeta
from ivighelpers.swim import ipd_summary, romc_grid, stouffer, vote_count

Y = np.array([-0.6, 0.1, -1.2, -0.3, 0.4])
V = np.array([0.1, 0.2, 0.3, 0.05, 0.4])


def _joint(mu, tau, scale):
    """Unnormalised joint posterior p(mu, tau | y): flat on mu, half-normal on tau (no analytic step)."""
    return stats.halfnorm.pdf(tau, scale=scale) * np.prod(stats.norm.pdf(Y, mu, np.sqrt(V + tau ** 2)))


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_bayesmeta_quantiles_match_direct_2d_quadrature(scale):
    r = bayesmeta(Y, V, tau_scale=scale)
    mu_lim, tau_hi = (-8, 7), 10 * scale
    kw = dict(epsabs=1e-13, epsrel=1e-10)
    Z = integrate.dblquad(lambda mu, tau: _joint(mu, tau, scale), 0, tau_hi, *mu_lim, **kw)[0]
    for x, p in ((r.mu_lb, 0.025), (r.mu_median, 0.5), (r.mu_ub, 0.975)):
        got = integrate.dblquad(lambda mu, tau: _joint(mu, tau, scale), 0, tau_hi, mu_lim[0], x, **kw)[0] / Z
        assert got == pytest.approx(p, abs=1e-6)
    for x, p in ((r.tau_lb, 0.025), (r.tau_median, 0.5), (r.tau_ub, 0.975)):
        got = integrate.dblquad(lambda mu, tau: _joint(mu, tau, scale), 0, x, *mu_lim, **kw)[0] / Z
        assert got == pytest.approx(p, abs=1e-5)
    for x, p in ((r.pred_lb, 0.025), (r.pred_ub, 0.975)):
        f = lambda mu, tau: _joint(mu, tau, scale) * (stats.norm.cdf((x - mu) / tau) if tau > 0 else float(x >= mu))  # noqa: E731
        assert integrate.dblquad(f, 0, tau_hi, *mu_lim, **kw)[0] / Z == pytest.approx(p, abs=1e-6)


def test_bayesmeta_wider_prior_gives_larger_tau_and_errors():
    a, b = bayesmeta(Y, V, tau_scale=0.5), bayesmeta(Y, V, tau_scale=1.0)
    assert b.tau_median > a.tau_median and (b.pred_ub - b.pred_lb) > (a.pred_ub - a.pred_lb)
    assert a.mu_lb < a.mu_median < a.mu_ub and a.pred_lb < a.mu_lb
    assert a.prob_mu_below(a.mu_median) == pytest.approx(0.5, abs=1e-9)
    with pytest.raises(InputError, match="tau_scale must be a positive number"):
        bayesmeta(Y, V, tau_scale=0)
    with pytest.raises(InputError, match="vi .sampling variance. must be > 0"):
        bayesmeta(Y, -V)


def test_vote_count_matches_binomtest_and_wilson():
    eff = [-3.0, -1.0, -2.0, 4.0, 0.0, -0.5, -7.0]
    vc = vote_count(eff, direction="fall")
    assert (vc.favouring, vc.against, vc.no_change) == (5, 1, 1)
    # two-sided exact sign test by direct summation of the binomial pmf (symmetric at p = 0.5)
    pmf = [math.comb(6, j) / 2 ** 6 for j in range(7)]
    assert vc.pval == pytest.approx(min(1.0, sum(p for p in pmf if p <= pmf[5] + 1e-15)), rel=1e-12)
    assert vc.pval == pytest.approx(stats.binomtest(5, 6).pvalue, rel=1e-12)
    z, p, n = 1.959963984540054, 5 / 6, 6
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (vc.ci_lb, vc.ci_ub) == pytest.approx((centre - half, centre + half), rel=1e-9)
    assert "5 of 6 studies" in vc.sentence() and "1 showed no change" in vc.sentence()
    with pytest.raises(InputError, match="at least one study with a non-zero change"):
        vote_count([0.0, 0.0])


def test_stouffer_against_hand_computation():
    p, n = np.array([0.01, 0.2, 0.04]), np.array([10, 20, 5])
    res = stouffer(p, n)
    z = stats.norm.isf(p)
    expect = float(np.sum(np.sqrt(n) * z) / math.sqrt(n.sum()))
    assert res.z == pytest.approx(expect, rel=1e-12)
    assert res.pval == pytest.approx(stats.norm.sf(expect), rel=1e-12)
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        stouffer([0.0, 0.5], [3, 4])


def test_romc_grid_matches_closed_form_dl():
    pre, post, n = np.array([1000.0, 800, 500, 2400]), np.array([400.0, 500, 200, 900]), np.array([10, 8, 12, 6])
    g = romc_grid(pre, post, n, cv=(0.5, 1.0), r=(0.3, 0.7), method="DL")
    for row in g.itertuples():
        y = np.log(post / pre)
        v = 2 * row.cv ** 2 * (1 - row.r) / n          # SD = CV x mean at both times
        w = 1 / v
        mu_fe = np.sum(w * y) / w.sum()
        Q = np.sum(w * (y - mu_fe) ** 2)
        tau2 = max(0.0, (Q - 3) / (w.sum() - np.sum(w ** 2) / w.sum()))
        ws = 1 / (v + tau2)
        mu = np.sum(ws * y) / ws.sum()
        se = 1 / math.sqrt(ws.sum())
        assert row.ratio == pytest.approx(math.exp(mu), rel=1e-10)
        assert row.ci_lb == pytest.approx(math.exp(mu - 1.959963984540054 * se), rel=1e-9)
        assert row.tau2 == pytest.approx(tau2, rel=1e-9, abs=1e-14)
    with pytest.raises(InputError, match="positive means"):
        romc_grid([1, -2], [1, 2], [5, 5])


def test_ipd_summary_is_exact():
    pre, post = [1200, 3400, 560, 8000, 300], [300, 900, 150, 2500, np.nan]
    s = ipd_summary(pre, post)
    a, b = np.array(pre[:4], float), np.array(post[:4], float)
    assert s["n"] == 4
    assert s["sd_change"] == pytest.approx(np.std(b - a, ddof=1), rel=1e-12)
    assert s["r"] == pytest.approx(stats.pearsonr(a, b)[0], rel=1e-12)
    # SD of the change from the two SDs and r (Handbook 6.5.2.8) reproduces the direct SD
    sd = math.sqrt(s["sd_pre"] ** 2 + s["sd_post"] ** 2 - 2 * s["r"] * s["sd_pre"] * s["sd_post"])
    assert s["sd_change"] == pytest.approx(sd, rel=1e-10)


def test_adaptive_glmm_agrees_with_high_node_fit_and_7_nodes_does_not():
    x, n = [0, 9, 84, 0], [5, 17, 95, 24]     # the flat likelihood of the review's "any adverse event" pool
    auto = rma_glmm(xi=x, ni=n)
    ref = rma_glmm(xi=x, ni=n, nAGQ=201)
    seven = rma_glmm(xi=x, ni=n, nAGQ=7)
    assert auto.nAGQ > 7 and auto.nAGQ_path[0] == 7 and auto.nAGQ_path[-1] == auto.nAGQ
    assert abs(auto.estimate - ref.estimate) < 1e-4 and abs(auto.tau2 - ref.tau2) < 1e-3
    assert abs(seven.tau2 - ref.tau2) > 0.5          # 13.2 vs 14.03: why the default is adaptive
    assert special.expit(auto.estimate) == pytest.approx(0.1005, abs=5e-4)
    easy = rma_glmm(xi=[3, 9, 14, 5], ni=[20, 17, 25, 24])
    assert easy.nAGQ <= 15
    with pytest.raises(InputError, match="nAGQ must be 'auto' or a positive integer"):
        rma_glmm(xi=x, ni=n, nAGQ="many")


def test_leave_one_out_with_two_studies_returns_each_single_study():
    fit = rma([0.5, 1.2], [0.1, 0.2], slab=["A", "B"])
    loo = leave_one_out(fit)
    assert list(loo.index) == ["A", "B"]
    assert loo.loc["A", "estimate"] == 1.2 and loo.loc["B", "estimate"] == 0.5
    assert loo.loc["A", "se"] == pytest.approx(math.sqrt(0.2))
    assert loo.loc["B", "ci_ub"] == pytest.approx(0.5 + 1.959963984540054 * math.sqrt(0.1))
    assert np.isnan(loo.loc["A", "tau2"])


def test_prediction_interval_t_on_k_minus_2():
    fit = rma(Y, V, method="REML")
    lo, hi = fit.prediction_interval()
    half = stats.t.ppf(0.975, len(Y) - 2) * math.sqrt(fit.tau2 + fit.se ** 2)
    assert (lo, hi) == pytest.approx((fit.estimate - half, fit.estimate + half), rel=1e-12)
    assert rma(Y[:2], V[:2]).prediction_interval() is None
