"""Small-k and SWiM methods, each against an independent computation (issue 8)."""

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from ivighelpers import InputError, escalc, influence, leave_one_out, rma, rma_glmm
from ivighelpers.errors import MissingValueWarning
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
    assert "5 of 6 studies" in vc.sentence() and "1 study showed no change" in vc.sentence()
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
    assert auto.nAGQ > 7 and auto.nAGQ_path[0] == 7 and auto.nAGQ_path[-1] == auto.nAGQ and auto.stable
    assert abs(auto.estimate - ref.estimate) < 1e-6 and abs(auto.tau2 - ref.tau2) < 1e-6
    assert abs(seven.tau2 - ref.tau2) > 0.5          # 13.2 vs 14.03: why the default is adaptive
    assert special.expit(auto.estimate) == pytest.approx(0.1005, abs=5e-4)
    easy = rma_glmm(xi=[3, 9, 14, 5], ni=[20, 17, 25, 24])
    easy_ref = rma_glmm(xi=[3, 9, 14, 5], ni=[20, 17, 25, 24], nAGQ=201)
    assert easy.nAGQ <= 21
    assert abs(easy.estimate - easy_ref.estimate) < 1e-6 and abs(easy.tau2 - easy_ref.tau2) < 1e-6
    with pytest.raises(InputError, match="nAGQ must be 'auto' or a positive integer"):
        rma_glmm(xi=x, ni=n, nAGQ="many")


@pytest.mark.parametrize("test", ["z", "knha"])
def test_leave_one_out_with_two_studies_returns_each_single_study(test):
    # metafor 3.8: a single-study fit has tau2 = 0, Q = 0 (p = 1), I2 = 0, H2 = 1 and a z-based CI, also
    # under knha (0 df); checked against metafor itself in tests/reference/metafor-extra
    fit = rma([0.5, 1.2], [0.1, 0.2], slab=["A", "B"], test=test)
    loo = leave_one_out(fit)
    assert list(loo.index) == ["A", "B"]
    assert loo.loc["A", "estimate"] == 1.2 and loo.loc["B", "estimate"] == 0.5
    assert loo.loc["A", "se"] == pytest.approx(math.sqrt(0.2))
    assert loo.loc["B", "ci_ub"] == pytest.approx(0.5 + 1.959963984540054 * math.sqrt(0.1))
    assert loo.loc["A", "pval"] == pytest.approx(2 * stats.norm.sf(1.2 / math.sqrt(0.2)))
    assert (loo[["tau2", "I2", "Q"]].to_numpy() == 0).all()
    assert (loo["Q_pval"] == 1).all() and (loo["H2"] == 1).all()


@pytest.mark.parametrize("test", ["z", "knha"])
def test_influence_with_two_studies_by_hand(test):
    # each deleted fit is the other study alone (tau2 = 0, SE sqrt(v_j)); the full fit is DL, whose tau2 at
    # k = 2 is closed-form: Q = (y1 - y2)^2 / (v1 + v2), tau2 = max(0, (Q - 1) / (sum w - sum w^2 / sum w))
    y, v = np.array([0.8, -0.3]), np.array([0.04, 0.09])
    w = 1 / v
    Q = (y[0] - y[1]) ** 2 / v.sum()
    tau2 = max(0.0, (Q - 1) / (w.sum() - (w ** 2).sum() / w.sum()))
    ws = 1 / (v + tau2)
    mu, var_mu = (ws * y).sum() / ws.sum(), 1 / ws.sum()
    hat = ws / ws.sum()
    other = y[::-1]
    fit = rma(y, v, method="DL", test=test)
    inf = influence(fit)
    assert fit.tau2 == pytest.approx(tau2, rel=1e-12)
    assert inf["rstudent"].to_numpy() == pytest.approx((y - other) / np.sqrt(v.sum()), rel=1e-12)
    assert inf["dffits"].to_numpy() == pytest.approx((mu - other) / np.sqrt(hat * v), rel=1e-12)
    assert inf["cooks_d"].to_numpy() == pytest.approx((mu - other) ** 2 / var_mu, rel=1e-12)
    assert inf["cov_r"].to_numpy() == pytest.approx(v[::-1] / var_mu, rel=1e-12)
    assert (inf["tau2_del"] == 0).all() and (inf["Q_del"] == 0).all()
    assert inf["hat"].to_numpy() == pytest.approx(hat, rel=1e-12)
    # metafor 3.8-1 on the same data (printed by influence(rma(yi, vi, method="DL"))): 3.05085107923876
    assert inf["rstudent"].iloc[0] == pytest.approx(3.05085107923876, rel=1e-12)


def test_influence_rstudent_under_knha_uses_the_deleted_scale_factor():
    # rstudent_i = (y_i - mu_(i)) / sqrt(s2w_(i) (v_i + tau2_(i)) + var(mu_(i))), each part from a refit
    # without study i by rma itself (var(mu_(i)) already carries s2w_(i) under knha)
    fit = rma(Y, V, method="REML", test="knha")
    got = influence(fit)["rstudent"].to_numpy()
    want = []
    for i in range(len(Y)):
        keep = np.arange(len(Y)) != i
        d = rma(Y[keep], V[keep], method="REML", test="knha")
        want.append((Y[i] - d.estimate) / math.sqrt(d.s2w * (V[i] + d.tau2) + d.se ** 2))
    assert got == pytest.approx(np.array(want), rel=1e-10)
    z_fit = influence(rma(Y, V, method="REML"))["rstudent"].to_numpy()
    assert np.max(np.abs(got / z_fit - 1)) > 1e-3          # the scale factor matters on these data


def test_to_none_gives_missing_effect_sizes_and_rma_leaves_them_out():
    with pytest.warns(MissingValueWarning, match=r"yi/vi not finite for A \(a zero cell with to='none'\)"):
        es = escalc("RR", ai=[0, 3, 5], n1i=[10, 12, 15], ci=[2, 4, 1], n2i=[11, 12, 14], to="none",
                    slab=["A", "B", "C"])
    assert np.isnan(es.loc["A", "yi"]) and np.isnan(es.loc["A", "vi"])
    with pytest.warns(MissingValueWarning, match=r"1 study with a missing yi or vi left out of the model: A"):
        fit = rma(es, method="REML")
    ref = rma(es["yi"].iloc[1:].to_numpy(), es["vi"].iloc[1:].to_numpy(), method="REML")
    assert fit.k == 2 and fit.labels == ["B", "C"]
    assert fit.estimate == pytest.approx(ref.estimate, rel=1e-14)
    # moderators and ni are subset with the studies
    with pytest.warns(MissingValueWarning):
        mfit = rma([np.nan, 0.1, 0.4, 0.2], [0.1, 0.1, 0.2, 0.1], mods={"dose": [1.0, 2.0, 3.0, 4.0]})
    assert mfit.k == 3 and mfit.X[:, 1].tolist() == [2.0, 3.0, 4.0]


def test_glmm_gradient_is_the_derivative_of_the_agq_likelihood():
    from ivighelpers.models import _AGQ
    x, n = np.array([0.0, 9, 84, 0]), np.array([5.0, 17, 95, 24])
    for q in (7, 31):
        agq = _AGQ(x, n, q)
        z = np.zeros(4)
        for mu, tau in ((-1.5, 2.0), (-2.2, 3.7), (0.3, 0.2)):
            _, gmu, gtau, _ = agq.value_grad(mu, tau, z)
            h = 1e-6
            fmu = (agq.value_grad(mu + h, tau, z)[0] - agq.value_grad(mu - h, tau, z)[0]) / (2 * h)
            ftau = (agq.value_grad(mu, tau + h, z)[0] - agq.value_grad(mu, tau - h, z)[0]) / (2 * h)
            assert gmu == pytest.approx(fmu, rel=1e-6, abs=1e-8)
            assert gtau == pytest.approx(ftau, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("x,n", [([3, 9, 14, 5], [20, 17, 25, 24]), ([0, 9, 84, 0], [5, 17, 95, 24]),
                                 ([4, 6, 2, 10, 3, 1, 7, 5, 9, 2, 8, 4], [20, 25, 18, 30, 22, 15, 28, 24, 26, 19, 27, 21])])
def test_glmm_maximum_agrees_with_a_derivative_free_search(x, n):
    # the quasi-Newton maximum vs Nelder-Mead on the same 7-node likelihood, from the GLMM's own optimum
    # and from a distant start: no higher likelihood is found, and the estimates agree
    from scipy import optimize
    from ivighelpers.models import _AGQ
    g = rma_glmm(xi=x, ni=n, nAGQ=7)
    agq = _AGQ(np.asarray(x, float), np.asarray(n, float), 7)
    z = np.zeros(len(x))
    best = min((optimize.minimize(lambda t: -agq.value_grad(t[0], abs(t[1]), z)[0], np.array(s), method="Nelder-Mead",
                                  options={"xatol": 1e-11, "fatol": 1e-13, "maxiter": 20000})
                for s in ((g.estimate, math.sqrt(g.tau2) + 0.3), (0.0, 1.0))), key=lambda r: r.fun)
    assert g.loglik >= -best.fun - 1e-9
    assert g.estimate == pytest.approx(best.x[0], abs=2e-6)
    assert math.sqrt(g.tau2) == pytest.approx(abs(best.x[1]), abs=2e-5)


def test_prediction_interval_t_on_k_minus_2():
    fit = rma(Y, V, method="REML")
    lo, hi = fit.prediction_interval()
    half = stats.t.ppf(0.975, len(Y) - 2) * math.sqrt(fit.tau2 + fit.se ** 2)
    assert (lo, hi) == pytest.approx((fit.estimate - half, fit.estimate + half), rel=1e-12)
    assert rma(Y[:2], V[:2]).prediction_interval() is None


def test_p_values_read_the_same_everywhere():
    from ivighelpers.text import p_text
    assert p_text(0.0004) == "p < 0.001" and p_text(0.01634) == "p = 0.016" and p_text(0.5) == "p = 0.500"
    vc = vote_count([-1.0, -2.0, -0.5, -3.0, -1.5], direction="fall")       # 5 of 5 fall: exact p = 2 / 32
    assert "sign test p = 0.062)" in vc.sentence() and "p = <" not in vc.sentence()
    assert "p < 0.001" in vote_count([-1.0] * 12, direction="fall").sentence()
