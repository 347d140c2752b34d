"""Models beyond the normal-normal ``rma``: Mantel-Haenszel pooling and the binomial GLMM.

- ``rma_mh``: Mantel-Haenszel common-effect log OR (variance of Robins, Breslow & Greenland 1986)
  and log RR (variance of Greenland & Robins 1985), computed from the raw 2x2 counts (no
  continuity correction, so zero cells need no 0.5); Cochran's Q about the MH estimate uses the
  ``escalc`` effect sizes, as metafor's ``rma.mh``.
- ``rma_glmm``: random-effects logistic model for single proportions, x_i ~ Bin(n_i, p_i),
  logit(p_i) = mu + u_i, u_i ~ N(0, tau2) (Stijnen, Hamza & Ozdemir 2010), fitted by maximum
  likelihood with adaptive Gauss-Hermite quadrature. ``nAGQ="auto"`` (default) raises the number of
  nodes (7, 11, 15, 21, 31, 41, 61, 81, 101, 151) until the estimate and tau2 change by less than 1e-4 between two
  successive rules, and records how many nodes were used: 7 nodes (metafor's call of lme4::glmer) are
  not enough for flat likelihoods. ``nAGQ=7`` reproduces metafor. Uses the exact binomial likelihood:
  no continuity correction, 0/n and n/n studies enter as they are. Standard errors from the observed
  information.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special

from .effects import escalc, transform
from .errors import ConvergenceWarning, InputError
from .meta import _crit, _level, _ones, _pstats


class _WaldSummary:
    """z statistic, p-value and normal-theory CI from ``estimate``, ``se`` and ``level``."""

    @property
    def stat(self):
        return self.estimate / self.se

    @property
    def pval(self):
        return float(2 * special.ndtr(-abs(self.stat)))

    @property
    def ci_lb(self):
        return self.estimate - _crit(self.level, None) * self.se

    @property
    def ci_ub(self):
        return self.estimate + _crit(self.level, None) * self.se


@dataclass
class MHResult(_WaldSummary):
    measure: str
    k: int
    estimate: float
    se: float
    level: float
    Q: float
    Q_pval: float
    I2: float

    def transformed(self):
        return {"transform": "exp", "estimate": math.exp(self.estimate), "ci_lb": math.exp(self.ci_lb),
                "ci_ub": math.exp(self.ci_ub)}


def rma_mh(measure: str, *, ai, ci, bi=None, di=None, n1i=None, n2i=None, level: float = 0.95) -> MHResult:
    """Mantel-Haenszel pooled log odds ratio (``measure="OR"``) or log risk ratio (``"RR"``)."""
    measure = str(measure).upper()
    if measure not in ("OR", "RR"):
        raise InputError(f"measure={measure!r} is not supported by rma_mh; allowed: OR, RR")
    level = _level(level)
    es = escalc(measure, ai=ai, bi=bi, ci=ci, di=di, n1i=n1i, n2i=n2i)
    a = np.asarray(ai, dtype=float)
    c = np.asarray(ci, dtype=float)
    b = np.asarray(bi, dtype=float) if bi is not None else np.asarray(n1i, dtype=float) - a
    d = np.asarray(di, dtype=float) if di is not None else np.asarray(n2i, dtype=float) - c
    n1, n2 = a + b, c + d
    n = n1 + n2
    if measure == "OR":
        R, S = a * d / n, b * c / n
        sR, sS = R.sum(), S.sum()
        if sR == 0 or sS == 0:
            raise InputError("the Mantel-Haenszel OR is not estimable: all studies have zero events in one arm")
        P, Qm = (a + d) / n, (b + c) / n
        est = math.log(sR / sS)
        var = (np.sum(P * R) / (2 * sR ** 2) + np.sum(P * S + Qm * R) / (2 * sR * sS)
               + np.sum(Qm * S) / (2 * sS ** 2))
    else:
        R, S = a * n2 / n, c * n1 / n
        sR, sS = R.sum(), S.sum()
        if sR == 0 or sS == 0:
            raise InputError("the Mantel-Haenszel RR is not estimable: all studies have zero events in one arm")
        est = math.log(sR / sS)
        var = np.sum((n1 * n2 * (a + c) - a * c * n) / n ** 2) / (sR * sS)
    yi, vi = es["yi"].to_numpy(), es["vi"].to_numpy()
    k = len(yi)
    Q = float(np.sum((yi - est) ** 2 / vi))
    Qp = float(special.chdtrc(k - 1, Q)) if k > 1 else 1.0
    I2 = max(0.0, 100 * (Q - (k - 1)) / Q) if Q > 0 else 0.0
    return MHResult(measure, k, est, math.sqrt(var), level, Q, Qp, I2)


@dataclass
class GLMMResult(_WaldSummary):
    k: int
    estimate: float
    se: float
    tau2: float
    level: float
    I2: float
    QE_wald: float
    QE_wald_pval: float
    QE_lrt: float
    QE_lrt_pval: float
    loglik: float
    nAGQ: int
    converged: bool
    notes: list = field(default_factory=list)
    nAGQ_path: tuple = ()


    @property
    def pi_lb(self):
        return self.estimate - _crit(self.level, None) * math.sqrt(self.tau2 + self.se ** 2)

    @property
    def pi_ub(self):
        return self.estimate + _crit(self.level, None) * math.sqrt(self.tau2 + self.se ** 2)

    def transformed(self, transf: str = "ilogit"):
        f = lambda x: float(transform(x, transf))  # noqa: E731
        return {"transform": transf, "estimate": f(self.estimate), "ci_lb": f(self.ci_lb), "ci_ub": f(self.ci_ub),
                "pi_lb": f(self.pi_lb), "pi_ub": f(self.pi_ub)}

    def one_line(self, digits=2):
        t = self.transformed()
        fmt = f"{{:.{digits}f}}"
        return (f"GLMM (ML, {self.nAGQ}-node AGQ), k = {self.k}: {fmt.format(t['estimate'])} "
                f"({round(self.level * 100):g}% CI {fmt.format(t['ci_lb'])} to {fmt.format(t['ci_ub'])}; "
                f"PI {fmt.format(t['pi_lb'])} to {fmt.format(t['pi_ub'])}), tau2 = {self.tau2:.3g}, I2 = {self.I2:.0f}%")


AUTO_NODES = (7, 11, 15, 21, 31, 41, 61, 81, 101, 151)
AUTO_TOL = 1e-4


def rma_glmm(*, xi, ni, level: float = 0.95, nAGQ="auto") -> GLMMResult:
    """Random-effects logistic model for proportions by ML (adaptive Gauss-Hermite quadrature).

    ``nAGQ="auto"``: refit with 7, 11, 15, ... nodes until mu and tau2 change by < 1e-4 between two
    successive rules; the result carries the rule used (``nAGQ``) and the path (``nAGQ_path``).
    An integer fixes the rule (7 = metafor's default).
    """
    level = _level(level)
    x = np.asarray(xi, dtype=float)
    n = np.asarray(ni, dtype=float)
    escalc("PLO", xi=x, ni=n)  # validates counts (events <= n, non-negative, equal lengths)
    if isinstance(nAGQ, str):
        if nAGQ.lower() != "auto":
            raise InputError(f"nAGQ must be 'auto' or a positive integer; got {nAGQ!r}")
        prev = None
        path = []
        for q in AUTO_NODES:
            res = _rma_glmm_fixed(x, n, level, q)
            path.append(q)
            if prev is not None and abs(res.estimate - prev.estimate) < AUTO_TOL and abs(res.tau2 - prev.tau2) < AUTO_TOL:
                break
            prev = res
        else:
            res.notes.append(f"estimate or tau2 still changed by >= {AUTO_TOL:g} between {AUTO_NODES[-2]} and "
                             f"{AUTO_NODES[-1]} quadrature nodes")
            warnings.warn("rma_glmm: quadrature not stable at 151 nodes", ConvergenceWarning, stacklevel=2)
        res.nAGQ_path = tuple(path)
        return res
    if isinstance(nAGQ, bool) or int(nAGQ) != nAGQ or int(nAGQ) < 1:
        raise InputError(f"nAGQ must be 'auto' or a positive integer; got {nAGQ!r}")
    res = _rma_glmm_fixed(x, n, level, int(nAGQ))
    res.nAGQ_path = (int(nAGQ),)
    return res


def _rma_glmm_fixed(x, n, level, nAGQ: int) -> GLMMResult:
    k = len(x)
    if k < 2:
        raise InputError(f"rma_glmm needs at least 2 studies (k = {k})")
    if np.all(x == 0) or np.all(x == n):
        which = "no events" if np.all(x == 0) else "events in every patient"
        raise InputError(f"rma_glmm: all {k} studies have {which}; the maximum-likelihood logit is infinite "
                         f"(total {int(x.sum())}/{int(n.sum())}: report the exact binomial interval instead)")
    nodes, weights = np.polynomial.hermite.hermgauss(int(nAGQ))
    lbin = special.gammaln(n + 1) - special.gammaln(x + 1) - special.gammaln(n - x + 1)

    def negll(theta):
        mu, log_sigma = theta
        return -_agq_loglik(mu, math.exp(log_sigma), x, n, lbin, nodes, weights)

    # start: FE logit of the pooled proportion, tau from the DL fit of the logits
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
    notes = []
    mu, log_sigma = best.x
    sigma = math.exp(log_sigma)
    # refine with a Newton polish on (mu, sigma) via the numerical Hessian
    H = _num_hessian(lambda t: -_agq_loglik(t[0], max(t[1], 1e-12), x, n, lbin, nodes, weights),
                     np.array([mu, sigma]))
    converged = bool(best.success)
    if sigma < 1e-4:
        notes.append("tau2 is estimated on the boundary (0); the SE of mu is taken from the FE logistic model.")
        se = math.sqrt(1 / np.sum(n * special.expit(mu) * (1 - special.expit(mu))))
    else:
        try:
            cov = np.linalg.inv(H)
            se = math.sqrt(cov[0, 0]) if cov[0, 0] > 0 else float("nan")
        except np.linalg.LinAlgError:
            se = float("nan")
        if not math.isfinite(se):
            se = math.sqrt(1 / np.sum(n * special.expit(mu) * (1 - special.expit(mu))))
            notes.append("the observed information is singular at the optimum; the SE of mu is taken from the "
                         "FE logistic model (too small if tau2 > 0)")
            warnings.warn("rma_glmm: singular information matrix; SE from the FE logistic model", ConvergenceWarning,
                          stacklevel=2)
    tau2 = sigma ** 2
    # I2 from the typical within-study variance of the escalc logits (as metafor)
    vi = es["vi"].to_numpy()
    st = _pstats(es["yi"].to_numpy(), _ones(k), 1 / vi)
    vi_avg = (k - 1) / st["trP"]
    I2 = 100 * tau2 / (vi_avg + tau2)
    # heterogeneity: Wald test of the saturated logistic model (studies with 0 or n events have an
    # infinite-variance logit and add nothing), and the LRT of the FE logistic vs the saturated model
    inner = (x > 0) & (x < n)
    if inner.sum() >= 2:
        e_in = escalc("PLO", xi=x[inner], ni=n[inner], to="none")
        Qw = float(_pstats(e_in["yi"].to_numpy(), _ones(int(inner.sum())), 1 / e_in["vi"].to_numpy())["YPY"])
    else:
        Qw = 0.0
    p_fe = x.sum() / n.sum()
    ll_fe = float(np.sum(special.xlogy(x, p_fe) + special.xlogy(n - x, 1 - p_fe)))
    ph = x / n
    ll_sat = float(np.sum(special.xlogy(x, ph) + special.xlogy(n - x, 1 - ph)))
    lrt = 2 * (ll_sat - ll_fe)
    return GLMMResult(k=k, estimate=float(mu), se=float(se), tau2=float(tau2), level=level, I2=float(I2),
                      QE_wald=Qw, QE_wald_pval=float(special.chdtrc(k - 1, Qw)), QE_lrt=float(lrt),
                      QE_lrt_pval=float(special.chdtrc(k - 1, lrt)), loglik=float(-best.fun), nAGQ=int(nAGQ),
                      converged=converged, notes=notes)


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
