"""Bayesian random-effects meta-analysis of the normal-normal model by exact numerical integration.

``bayesmeta(yi, vi, tau_scale=0.5)`` follows R's bayesmeta (Röver 2020, J Stat Softw 93(6)): the model
yi ~ N(theta_i, vi), theta_i ~ N(mu, tau^2), a flat (improper uniform) prior on mu and a half-normal
prior on tau with the given scale. With the flat prior, mu can be integrated out analytically:

    p(tau | y) ∝ p(tau) · prod_i (vi + tau^2)^(-1/2) · (sum_i w_i)^(-1/2) · exp(-Q(tau)/2),
    w_i = 1/(vi + tau^2),  mu_hat(tau) = sum w_i yi / sum w_i,  Q(tau) = sum w_i (yi - mu_hat)^2,

and mu | tau, y ~ N(mu_hat(tau), 1/sum w_i); a new study's effect theta_new | tau, y ~ N(mu_hat(tau),
1/sum w_i + tau^2). The marginal posteriors of mu and theta_new are mixtures of these normals over
p(tau | y); they are computed on a fine grid of tau (no MCMC), and quantiles are found by root finding
on the mixture distribution function. Half-normal scales of 0.5 and 1 are "weakly informative" for log
odds ratios and logits (Röver et al. 2021, Res Synth Methods 12:448); both are reported by the review.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, special

from .effects import transform
from .errors import InputError

GRID = 8001  # tau grid points (trapezoid rule on [0, upper])


def bayesmeta(yi, vi, *, tau_prior: str = "halfnormal", tau_scale: float = 0.5, level: float = 0.95,
              slab=None, measure: str | None = None) -> "BayesResult":
    """Posterior of mu, tau and theta_new under a flat prior on mu and a half-normal(tau_scale) prior on tau."""
    y = np.asarray(yi, dtype=float)
    v = np.asarray(vi, dtype=float)
    if y.ndim != 1 or y.shape != v.shape:
        raise InputError(f"yi and vi must be 1-d of equal length; got shapes {y.shape} and {v.shape}")
    if len(y) < 1:
        raise InputError("yi is empty: no studies to pool")
    if not np.all(np.isfinite(y)):
        raise InputError("yi must be finite numbers")
    if not np.all(v > 0):
        raise InputError("vi (sampling variance) must be > 0 for every study")
    if tau_prior != "halfnormal":
        raise InputError(f"tau_prior must be 'halfnormal'; got {tau_prior!r}")
    if not (isinstance(tau_scale, (int, float)) and tau_scale > 0):
        raise InputError(f"tau_scale must be a positive number; got {tau_scale!r}")
    if not (0 < level < 1):
        raise InputError(f"level must be in (0, 1); got {level!r}")
    tau, dens, mu_hat, se_mu = _tau_posterior(y, v, float(tau_scale))
    w = _trapezoid_weights(tau) * dens
    w = w / w.sum()
    cdf_tau = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(tau))])
    cdf_tau /= cdf_tau[-1]
    a = (1 - level) / 2
    probs = (a, 0.5, 1 - a)
    tau_q = [float(np.interp(p, cdf_tau, tau)) for p in probs]
    mu_q = [_mixture_quantile(p, mu_hat, se_mu, w) for p in probs]
    sd_pred = np.sqrt(se_mu ** 2 + tau ** 2)
    pred_q = [_mixture_quantile(p, mu_hat, sd_pred, w) for p in probs]
    mu_mean = float(np.sum(w * mu_hat))
    p_mu_pos = float(np.sum(w * special.ndtr(mu_hat / se_mu)))
    return BayesResult(k=len(y), tau_scale=float(tau_scale), level=float(level), measure=measure,
                       mu_median=mu_q[1], mu_lb=mu_q[0], mu_ub=mu_q[2], mu_mean=mu_mean,
                       tau_median=tau_q[1], tau_lb=tau_q[0], tau_ub=tau_q[2],
                       pred_median=pred_q[1], pred_lb=pred_q[0], pred_ub=pred_q[2], p_mu_positive=p_mu_pos,
                       slab=None if slab is None else list(slab),
                       _grid=(tau, w, mu_hat, se_mu))


@dataclass
class BayesResult:
    """Posterior summaries (medians and equal-tailed credible intervals) of mu, tau and theta_new."""

    k: int
    tau_scale: float
    level: float
    measure: str | None
    mu_median: float
    mu_lb: float
    mu_ub: float
    mu_mean: float
    tau_median: float
    tau_lb: float
    tau_ub: float
    pred_median: float
    pred_lb: float
    pred_ub: float
    p_mu_positive: float
    slab: list | None = None
    _grid: tuple = field(default=(), repr=False)

    def prob_mu_below(self, value: float) -> float:
        """Posterior probability that mu < value."""
        tau, w, mu_hat, se_mu = self._grid
        return float(np.sum(w * special.ndtr((value - mu_hat) / se_mu)))

    def transformed(self, transf: str | None = None, ni=None) -> dict:
        """Medians and limits on the natural scale (ilogit, exp, ...; ipft_hm with the studies' ``ni``);
        tau stays on the model scale."""
        f = (lambda x: float(transform(x, transf, ni=ni))) if transf else float  # noqa: E731
        return {"transform": transf, "estimate": f(self.mu_median), "ci_lb": f(self.mu_lb), "ci_ub": f(self.mu_ub),
                "pi_lb": f(self.pred_lb), "pi_ub": f(self.pred_ub), "tau": self.tau_median,
                "tau_lb": self.tau_lb, "tau_ub": self.tau_ub}

    def summary_frame(self) -> pd.DataFrame:
        lv = f"{round(self.level * 100):g}%"
        return pd.DataFrame({"median": [self.mu_median, self.tau_median, self.pred_median],
                             f"{lv} lower": [self.mu_lb, self.tau_lb, self.pred_lb],
                             f"{lv} upper": [self.mu_ub, self.tau_ub, self.pred_ub]},
                            index=pd.Index(["mu", "tau", "theta_new"], name="parameter"))


# ---- helpers -------------------------------------------------------------------------------------

def _tau_posterior(y, v, scale):
    """Grid of tau on [0, upper] with the unnormalised marginal posterior density and mu | tau moments."""
    # the half-normal prior beyond 10 scales has mass < 1e-22; the likelihood in tau is bounded, so
    # this upper limit loses nothing that matters at double precision.
    upper = 10.0 * scale
    tau = np.linspace(0.0, upper, GRID)
    T = tau[:, None] ** 2 + v[None, :]
    W = 1.0 / T
    sw = W.sum(axis=1)
    mu_hat = (W * y[None, :]).sum(axis=1) / sw
    Q = (W * (y[None, :] - mu_hat[:, None]) ** 2).sum(axis=1)
    logpost = (-0.5 * (tau / scale) ** 2            # half-normal prior (constant dropped)
               - 0.5 * np.log(T).sum(axis=1) - 0.5 * np.log(sw) - 0.5 * Q)
    logpost -= logpost.max()
    dens = np.exp(logpost)
    return tau, dens, mu_hat, 1.0 / np.sqrt(sw)


def _trapezoid_weights(x):
    d = np.diff(x)
    w = np.zeros_like(x)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w


def _mixture_quantile(p, m, s, w):
    """Quantile of the normal mixture sum_j w_j N(m_j, s_j^2) by Brent's method."""
    lo = float(np.min(m - 12 * s))
    hi = float(np.max(m + 12 * s))

    def f(x):
        return float(np.sum(w * special.ndtr((x - m) / s))) - p

    return float(optimize.brentq(f, lo, hi, xtol=1e-12, rtol=1e-12, maxiter=500))

