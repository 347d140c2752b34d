"""The GLMM implementation before issue 12 (Nelder-Mead from three starts on a numerically differentiated
AGQ likelihood), kept verbatim for the benchmark only: ``bench_glmm.py`` times it against the current
``ivighelpers.models.rma_glmm``. Not imported by the package.
"""
import math

import numpy as np
from scipy import optimize, special

from ivighelpers.effects import escalc


def fit_previous(x, n, nAGQ):
    """(mu, tau2, se) exactly as the previous ``_rma_glmm_fixed`` computed them."""
    x = np.asarray(x, dtype=float)
    n = np.asarray(n, dtype=float)
    escalc("PLO", xi=x, ni=n)
    nodes, weights = np.polynomial.hermite.hermgauss(int(nAGQ))
    lbin = special.gammaln(n + 1) - special.gammaln(x + 1) - special.gammaln(n - x + 1)

    def negll(theta):
        mu, log_sigma = theta
        return -_agq_loglik(mu, math.exp(log_sigma), x, n, lbin, nodes, weights)

    es = escalc("PLO", xi=x, ni=n)
    p0 = min(max(x.sum() / n.sum(), 1e-6), 1 - 1e-6)
    mu0 = math.log(p0 / (1 - p0))
    starts = [(mu0, math.log(0.5)), (mu0, math.log(0.1)), (float(es["yi"].mean()), math.log(1.0))]
    best = None
    for s in starts:
        r = optimize.minimize(negll, np.array(s), method="Nelder-Mead",
                              options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
        if best is None or r.fun < best.fun:
            best = r
    mu, log_sigma = best.x
    sigma = math.exp(log_sigma)
    H = _num_hessian(lambda t: -_agq_loglik(t[0], max(t[1], 1e-12), x, n, lbin, nodes, weights),
                     np.array([mu, sigma]))
    se = math.sqrt(np.linalg.inv(H)[0, 0]) if sigma >= 1e-4 else float("nan")
    return float(mu), float(sigma ** 2), se


def _agq_loglik(mu, sigma, x, n, lbin, nodes, weights):
    """Marginal log-likelihood with adaptive Gauss-Hermite quadrature per study (Pinheiro & Bates 1995)."""
    # conditional mode of z (u = sigma z): Newton steps with step halving on the concave objective
    def obj(zv):
        e = mu + sigma * zv
        return x * e - n * np.logaddexp(0, e) - 0.5 * zv ** 2

    z = np.zeros_like(x)
    cur = obj(z)
    for _ in range(100):
        eta = mu + sigma * z
        p = special.expit(eta)
        g = sigma * (x - n * p) - z
        h = sigma ** 2 * n * p * (1 - p) + 1
        step = g / h
        for _ in range(60):
            new = obj(z + step)
            bad = new < cur - 1e-12
            if not bad.any():
                break
            step = np.where(bad, step / 2, step)
        z = z + step
        cur = obj(z)
        if np.max(np.abs(step)) < 1e-12:
            break
    eta = mu + sigma * z
    p = special.expit(eta)
    s = 1 / np.sqrt(sigma ** 2 * n * p * (1 - p) + 1)
    zz = z[:, None] + math.sqrt(2) * s[:, None] * nodes[None, :]
    eta = mu + sigma * zz
    logf = (lbin[:, None] + x[:, None] * eta - n[:, None] * np.logaddexp(0, eta)
            - 0.5 * zz ** 2 - 0.5 * math.log(2 * math.pi))
    terms = logf + nodes[None, :] ** 2 + np.log(weights)[None, :]
    m = terms.max(axis=1)
    li = m + np.log(np.exp(terms - m[:, None]).sum(axis=1)) + np.log(math.sqrt(2) * s)
    return float(li.sum())


def _num_hessian(f, t, h=1e-4):
    t = np.asarray(t, dtype=float)
    d = len(t)
    H = np.empty((d, d))
    steps = h * np.maximum(np.abs(t), 1e-2)
    for i in range(d):
        for j in range(i, d):
            ei = np.zeros(d)
            ej = np.zeros(d)
            ei[i] = steps[i]
            ej[j] = steps[j]
            val = (f(t + ei + ej) - f(t + ei - ej) - f(t - ei + ej) + f(t - ei - ej)) / (4 * steps[i] * steps[j])
            H[i, j] = H[j, i] = val
    return H
