"""Models beyond the normal-normal ``rma``: Mantel-Haenszel pooling and the binomial GLMM.

- ``rma_mh``: Mantel-Haenszel common-effect log OR (variance of Robins, Breslow & Greenland 1986)
  and log RR (variance of Greenland & Robins 1985), computed from the raw 2x2 counts (no
  continuity correction, so zero cells need no 0.5); Cochran's Q about the MH estimate uses the
  ``escalc`` effect sizes, as metafor's ``rma.mh``.
- ``rma_glmm``: random-effects logistic model for single proportions, x_i ~ Bin(n_i, p_i),
  logit(p_i) = mu + u_i, u_i ~ N(0, tau2) (Stijnen, Hamza & Ozdemir 2010), fitted by maximum
  likelihood with adaptive Gauss-Hermite quadrature. ``nAGQ="auto"`` (default) raises the number of
  nodes (7, 11, 15, 21, 31, 41, 61, 81, 101, 151, 201) until the estimate and tau2 change by less than 1e-7
  between two successive rules, and records how many nodes were used: 7 nodes (metafor's call of lme4::glmer) are
  not enough for flat likelihoods. ``nAGQ=7`` reproduces metafor. Uses the exact binomial likelihood:
  no continuity correction, 0/n and n/n studies enter as they are. Standard errors from the observed
  information.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import special

from .effects import _as_array, _check_lengths, check_proportions, escalc, transform
from .errors import ConvergenceWarning, InputError
from .meta import _crit, _level


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
    stable: bool = True          # False: the adaptive rule reached its last node count without settling


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


AUTO_NODES = (7, 11, 15, 21, 31, 41, 61, 81, 101, 151, 201)
AUTO_TOL = 1e-7
MAX_NODES = 300   # numpy's Gauss-Hermite weights overflow from about 380 nodes


def rma_glmm(*, xi, ni, level: float = 0.95, nAGQ="auto") -> GLMMResult:
    """Random-effects logistic model for proportions by ML (adaptive Gauss-Hermite quadrature).

    ``nAGQ="auto"``: refit with 7, 11, 15, ... 201 nodes, each fit starting from the previous one, until mu
    and tau2 change by < 1e-7 between two successive rules; the result carries the rule used (``nAGQ``) and
    the path (``nAGQ_path``). An integer fixes the rule (7 = metafor's call of ``lme4::glmer``).

    The likelihood is maximised by Newton's method on (mu, tau) with the analytic gradient of the AGQ
    approximation (conditional modes and curvatures differentiated implicitly) and a Hessian from
    differences of that gradient, starting from the DerSimonian-Laird fit of the logits; the SE of mu is
    from the inverse of that Hessian (observed information), as lme4's.
    """
    level = _level(level)
    x, n = _counts(xi, ni)
    k = len(x)
    if isinstance(nAGQ, str):
        if nAGQ.lower() != "auto":
            raise InputError(f"nAGQ must be 'auto' or a positive integer; got {nAGQ!r}")
        rules = AUTO_NODES
    elif isinstance(nAGQ, bool) or not isinstance(nAGQ, (int, np.integer, float)) or int(nAGQ) != nAGQ \
            or not 1 <= int(nAGQ) <= MAX_NODES:
        raise InputError(f"nAGQ must be 'auto' or a positive integer up to {MAX_NODES}; got {nAGQ!r}")
    else:
        rules = (int(nAGQ),)
    if k < 2:
        raise InputError(f"rma_glmm needs at least 2 studies (k = {k})")
    if np.all(x == 0) or np.all(x == n):
        which = "no events" if np.all(x == 0) else "events in every patient"
        raise InputError(f"rma_glmm: all {k} studies have {which}; the maximum-likelihood logit is infinite "
                         f"(total {int(x.sum())}/{int(n.sum())}: report the exact binomial interval instead)")
    if np.all((x == 0) | (x == n)):
        raise InputError(f"rma_glmm: every one of the {k} studies has 0 or n events (some each way); the likelihood "
                         "keeps rising with tau2, so there is no finite maximum-likelihood estimate")
    yi, vi = _logits(x, n)
    theta, B = _dl_start(yi, vi)
    z = np.zeros(k)
    path, prev, fit, stable = [], None, None, len(rules) == 1
    for q in rules:
        fit = _AGQ(x, n, q).maximise(theta, z, B)      # each rule starts where the previous one ended
        path.append(q)
        theta, z, B = fit["theta"], fit["z"], fit["B"]
        if prev is not None and abs(theta[0] - prev[0]) < AUTO_TOL and abs(theta[1] ** 2 - prev[1] ** 2) < AUTO_TOL:
            stable = True
            break
        prev = theta
    notes = list(fit["notes"])
    if not stable:
        notes.append(f"estimate or tau2 still changed by >= {AUTO_TOL:g} between {rules[-2]} and {rules[-1]} "
                     "quadrature nodes")
        warnings.warn(f"rma_glmm: quadrature not stable at {rules[-1]} nodes", ConvergenceWarning, stacklevel=2)
    res = _glmm_result(x, n, yi, vi, fit, level, path[-1], notes)
    res.nAGQ_path = tuple(path)
    res.stable = stable
    return res


# ---------------------------------------------------------------------------------------------
# GLMM numerics

class _AGQ:
    """Adaptive Gauss-Hermite approximation (Pinheiro & Bates 1995; lme4's nAGQ > 1) of the binomial-normal
    log-likelihood, L = sum_i log int Bin(x_i | n_i, expit(mu + tau z)) phi(z) dz, with its gradient.

    Per study the q nodes are centred at the conditional mode z_i of the integrand and scaled by
    s_i = (1 + tau^2 n_i p_i (1 - p_i))^(-1/2), the curvature there. The gradient is the total derivative:
    the partial derivatives at fixed nodes plus those through z_i and s_i (implicit differentiation of the
    mode equation tau (x_i - n_i p_i) = z_i). Everything is vectorised over studies and nodes.
    """

    def __init__(self, x, n, q):
        self.x, self.n, self.q = x, n, q
        t, logw = _hermite(q)
        self.t = t
        self.st = math.sqrt(2) * t
        self.logw = logw
        self.ones = np.ones(q)
        self.const = float(np.sum(special.gammaln(n + 1) - special.gammaln(x + 1) - special.gammaln(n - x + 1))) \
            + len(x) * (0.5 * math.log(2) - 0.5 * math.log(2 * math.pi))

    def modes(self, mu, tau, z):
        """Conditional modes by Newton's method from ``z`` (step halving where |F| would rise). F = tau (x - n p) - z
        has slope -(1 + tau^2 n p (1 - p)) <= -1, so Newton converges quadratically: a step below 1e-8 leaves
        an error of order 1e-16 and ends the loop."""
        x, n = self.x, self.n
        p = special.expit(mu + tau * z)
        F = tau * (x - n * p) - z
        for _ in range(100):
            step = F / (tau * tau * n * p * (1 - p) + 1)
            zn = z + step
            pn = special.expit(mu + tau * zn)
            Fn = tau * (x - n * pn) - zn
            worse = np.abs(Fn) > np.abs(F) + 1e-12
            for _ in range(40):
                if not worse.any():
                    break
                step = np.where(worse, step / 2, step)
                zn = z + step
                pn = special.expit(mu + tau * zn)
                Fn = tau * (x - n * pn) - zn
                worse = np.abs(Fn) > np.abs(F) + 1e-12
            z, p, F = zn, pn, Fn
            if np.abs(step).max() < 1e-8:
                break
        return z, p

    def value_grad(self, mu, tau, z0):
        """(L, dL/dmu, dL/dtau, modes)."""
        x, n, t, st = self.x, self.n, self.t, self.st
        z, p = self.modes(mu, tau, z0)
        nv = n * p * (1 - p)
        h = tau * tau * nv + 1
        s = 1 / np.sqrt(h)
        Z = z[:, None] + s[:, None] * st[None, :]
        E = mu + tau * Z
        lse = np.logaddexp(0, E)
        P = np.exp(E - lse)                            # expit(E)
        la = self.logw + x[:, None] * E - n[:, None] * lse - 0.5 * Z * Z
        m = la.max(axis=1)
        a = np.exp(la - m[:, None])
        one = self.ones
        S = a @ one
        L = self.const + float(np.log(s).sum() + m.sum() + np.log(S).sum())
        w = a / S[:, None]
        wr = w * (x[:, None] - n[:, None] * P)
        wZ = w * Z
        dmu = wr @ one                                 # partial derivatives at fixed nodes
        dtau = (wr * Z) @ one
        dL_dz = tau * dmu - wZ @ one                   # sum over nodes of w * d log f / dZ
        dL_ds = 1 / s + (tau * wr - wZ) @ st
        dz_dmu = -tau * nv / h                         # implicit differentiation of the mode equation
        dz_dtau = ((x - n * p) - tau * nv * z) / h
        ndv = nv * (1 - 2 * p)                         # n d[p(1-p)]/d eta
        dh_dmu = tau * tau * ndv * (1 + tau * dz_dmu)
        dh_dtau = 2 * tau * nv + tau * tau * ndv * (z + tau * dz_dtau)
        s3 = -0.5 * s ** 3
        gmu = float((dmu + dL_dz * dz_dmu + dL_ds * s3 * dh_dmu).sum())
        gtau = float((dtau + dL_dz * dz_dtau + dL_ds * s3 * dh_dtau).sum())
        return L, gmu, gtau, z

    def hessian(self, theta, z, central=False):
        """Hessian of L from differences of the analytic gradient (symmetrised)."""
        H = np.empty((2, 2))
        base = None if central else np.array(self.value_grad(theta[0], theta[1], z)[1:3])
        for j in range(2):
            hj = 1e-5 * max(abs(theta[j]), 0.1)
            e = np.zeros(2)
            e[j] = hj
            up = np.array(self.value_grad(*(theta + e), z)[1:3])
            if central:
                dn = np.array(self.value_grad(*(theta - e), z)[1:3])
                H[:, j] = (up - dn) / (2 * hj)
            else:
                H[:, j] = (up - base) / hj
        return (H + H.T) / 2

    def maximise(self, theta, z, B):
        """Quasi-Newton ascent on (mu, tau) from the inverse curvature ``B`` (BFGS updates, step halving).
        tau's sign is immaterial (L is even in tau), so a step through 0 is reflected."""
        theta = np.array([float(theta[0]), abs(float(theta[1]))])
        L, gmu, gtau, z = self.value_grad(theta[0], theta[1], z)
        g = np.array([gmu, gtau])
        notes, converged = [], False
        for _ in range(200):
            step = B @ g
            lam = 1.0
            for _ in range(60):
                cand = theta + lam * step
                cand[1] = abs(cand[1])
                Lc, gm, gt, zc = self.value_grad(cand[0], cand[1], z)
                if Lc >= L - 1e-12 * max(1.0, abs(L)):
                    break
                lam /= 2
            else:
                break
            gc = np.array([gm, gt])
            sv, yv = cand - theta, g - gc              # for the minimisation of -L
            moved = np.max(np.abs(sv))
            theta, L, z = cand, Lc, zc
            if moved < 1e-10 * (1 + np.max(np.abs(theta))) or np.max(np.abs(gc)) < 1e-9:
                g = gc
                converged = True
                break
            sy = sv @ yv
            if sy > 1e-300:
                rho = 1 / sy
                V = np.eye(2) - rho * np.outer(sv, yv)
                B = V @ B @ V.T + rho * np.outer(sv, sv)
            else:
                B = _inverse_curvature(self.hessian(theta, z))
            g = gc
        if not converged:
            notes.append("the quasi-Newton iterations for the GLMM did not meet the convergence criterion; the last "
                         "iterate is reported")
            warnings.warn("rma_glmm: quasi-Newton iterations did not converge", ConvergenceWarning, stacklevel=3)
        return {"theta": theta, "z": z, "B": B, "loglik": L, "converged": converged, "notes": notes, "agq": self}


def _inverse_curvature(H):
    """Inverse of -H, shifted to be positive definite where -H is not (Levenberg)."""
    A = -H
    ev = np.linalg.eigvalsh(A)
    if ev[0] <= 1e-12 * max(1.0, abs(ev[-1])):
        A = A + (abs(ev[0]) + 1e-6 * max(1.0, abs(ev[-1]))) * np.eye(2)
    return np.linalg.inv(A)


@lru_cache(maxsize=64)
def _hermite(q):
    """Gauss-Hermite nodes t and log(weight) + t^2 (so that exp(.) times f(z) integrates against N(0, 1))."""
    t, w = np.polynomial.hermite.hermgauss(int(q))
    with np.errstate(divide="ignore"):
        logw = np.log(w) + t ** 2
    t.setflags(write=False)
    logw.setflags(write=False)
    return t, logw


def _counts(xi, ni):
    """Validated event counts and sample sizes (the messages of ``escalc``)."""
    x = _as_array("xi", xi, None)
    n = _as_array("ni", ni, None)
    _check_lengths({"xi": x, "ni": n})
    check_proportions(x, n)
    return x, n


def _logits(x, n):
    """escalc('PLO') with metafor's default correction (0.5 to xi and ni - xi where xi is 0 or ni)."""
    zero = (x == 0) | (x == n)
    xa = np.where(zero, x + 0.5, x)
    ma = np.where(zero, n - x + 0.5, n - x)
    return np.log(xa / ma), 1 / xa + 1 / ma


def _dl_start(yi, vi):
    """Start: (mu, tau) from the DerSimonian-Laird fit of the logits (tau at least 0.1, off the boundary) and
    the inverse curvature of the normal-normal likelihood there: var(mu) = 1 / sum w, var(tau) =
    var(tau2) / (4 tau2) with var(tau2) = 2 / sum w^2, w = 1 / (vi + tau2)."""
    w = 1 / vi
    sw = w.sum()
    mu_fe = np.sum(w * yi) / sw
    Q = np.sum(w * (yi - mu_fe) ** 2)
    tau2 = max(0.0, (Q - (len(yi) - 1)) / (sw - np.sum(w ** 2) / sw))
    tau = max(math.sqrt(tau2), 0.1)
    ws = 1 / (vi + tau * tau)
    B = np.diag([1 / ws.sum(), 1 / (2 * tau * tau * np.sum(ws ** 2))])
    return np.array([np.sum(ws * yi) / ws.sum(), tau]), B


def _glmm_result(x, n, yi, vi, fit, level, q, notes) -> GLMMResult:
    k = len(x)
    mu, tau = float(fit["theta"][0]), float(fit["theta"][1])
    if tau < 1e-4:
        notes.append("tau2 is estimated on the boundary (0); the SE of mu is taken from the FE logistic model.")
        se = math.sqrt(1 / np.sum(n * special.expit(mu) * (1 - special.expit(mu))))
    else:
        H = fit["agq"].hessian(fit["theta"], fit["z"], central=True)
        try:
            cov = np.linalg.inv(-H)
            se = math.sqrt(cov[0, 0]) if cov[0, 0] > 0 else float("nan")
        except np.linalg.LinAlgError:
            se = float("nan")
        if not math.isfinite(se):
            se = math.sqrt(1 / np.sum(n * special.expit(mu) * (1 - special.expit(mu))))
            notes.append("the observed information is singular at the optimum; the SE of mu is taken from the "
                         "FE logistic model (too small if tau2 > 0)")
            warnings.warn("rma_glmm: singular information matrix; SE from the FE logistic model", ConvergenceWarning,
                          stacklevel=3)
    tau2 = tau * tau
    # I2 from the typical within-study variance of the escalc logits (as metafor)
    w = 1 / vi
    vi_avg = (k - 1) / (w.sum() - np.sum(w ** 2) / w.sum())
    I2 = 100 * tau2 / (vi_avg + tau2)
    # heterogeneity: Wald test of the saturated logistic model (studies with 0 or n events have an
    # infinite-variance logit and add nothing), and the LRT of the FE logistic vs the saturated model
    inner = (x > 0) & (x < n)
    if inner.sum() >= 2:
        xi, mi = x[inner], n[inner] - x[inner]
        y_in, w_in = np.log(xi / mi), 1 / (1 / xi + 1 / mi)
        Qw = float(np.sum(w_in * (y_in - np.sum(w_in * y_in) / w_in.sum()) ** 2))
    else:
        Qw = 0.0
    p_fe = x.sum() / n.sum()
    ll_fe = float(np.sum(special.xlogy(x, p_fe) + special.xlogy(n - x, 1 - p_fe)))
    ph = x / n
    ll_sat = float(np.sum(special.xlogy(x, ph) + special.xlogy(n - x, 1 - ph)))
    lrt = 2 * (ll_sat - ll_fe)
    return GLMMResult(k=k, estimate=mu, se=float(se), tau2=float(tau2), level=level, I2=float(I2),
                      QE_wald=Qw, QE_wald_pval=float(special.chdtrc(k - 1, Qw)), QE_lrt=float(lrt),
                      QE_lrt_pval=float(special.chdtrc(k - 1, lrt)), loglik=float(fit["loglik"]), nAGQ=int(q),
                      converged=bool(fit["converged"]), notes=notes)
