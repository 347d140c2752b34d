"""Meta-analytic models: random/fixed-effects models and meta-regression (metafor's ``rma``).

``rma(yi, vi, method=..., test=..., level=..., mods=...)`` fits the normal-normal model
yi = x_i'b + u_i + e_i, u_i ~ N(0, tau2), e_i ~ N(0, vi) (Viechtbauer 2005; 2010). tau2 estimators:

- FE: tau2 = 0 (common effect);
- DL: DerSimonian & Laird 1986 (method of moments, FE weights);
- HE: Hedges 1983 (unweighted moments); HS: Hunter & Schmidt 2004;
- SJ: Sidik & Jonkman 2005 (one step from tau2_0 = var(yi)(k-1)/k);
- ML, REML: (restricted) maximum likelihood by Fisher scoring from the HE value (Viechtbauer 2005);
- EB: empirical Bayes (Morris 1983); PM: Paule & Mandel 1982 (generalised Q = k - p).

Tests: ``z`` (normal) or ``knha`` (Knapp & Hartung 2003: vcov scaled by the weighted residual
variance, t on k - p df). Confidence limits for tau2, I2 and H2 use the Q-profile method
(Viechtbauer 2007). Iterative estimators stop at a change below 1e-5, as metafor does; the
roots of Q-profile and PM use R's ``uniroot`` algorithm (see ``_roots``) so that results match.

All computations are O(k p^2) in memory and time: no k-by-k matrix is ever formed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import special

from ._roots import R_UNIROOT_TOL, zeroin
from .effects import transform
from .errors import ConvergenceWarning, InputError, MissingValueWarning

METHODS = ("FE", "DL", "REML", "ML", "PM", "HS", "SJ", "HE", "EB")
TESTS = ("z", "knha")
_DEFAULT_CONTROL = {"threshold": 1e-5, "maxiter": 100, "tau2_max": 100.0, "pm_tol": R_UNIROOT_TOL}


def rma(yi, vi=None, *, method: str = "REML", test: str = "z", level: float = 0.95, mods=None,
        slab=None, data: pd.DataFrame | None = None, measure: str | None = None, ni=None,
        control: dict | None = None) -> "RMAResult":
    """Fit a fixed- or random-effects model, optionally with moderators (metafor ``rma.uni``).

    ``yi``/``vi`` are effect sizes and sampling variances (arrays, or column names of ``data``; an
    ``escalc`` DataFrame can be passed as ``data`` with the defaults ``yi="yi", vi="vi"``). ``mods``
    may be an array, a DataFrame or a dict of named columns; non-numeric columns are dummy-coded
    against their first (sorted) level, as R's factors are. ``measure`` and ``ni`` are kept for
    back-transformation (``ni`` is needed for the Freeman-Tukey inverse).
    """
    if isinstance(yi, pd.DataFrame) and data is None:
        data, yi, vi = yi, "yi", ("vi" if vi is None else vi)
    if data is not None:
        measure = measure or data.attrs.get("measure")
        if ni is None and "ni" in data.attrs:
            ni = data.attrs["ni"]
        if slab is None and data.index.name == "study":
            slab = list(data.index)
    if vi is None:
        raise InputError("vi is required (sampling variances), unless yi is an escalc DataFrame")
    y = _vector("yi", yi, data, allow_nan=True)
    v = _vector("vi", vi, data, allow_nan=True)
    if len(y) != len(v):
        raise InputError(f"yi and vi have different lengths ({len(y)} and {len(v)}); need one value per study")
    if len(y) == 0:
        raise InputError("yi is empty: no studies to pool")
    missing = np.isnan(y) | np.isnan(v)
    if missing.any():
        if isinstance(mods, str) and data is not None and mods in data.columns:
            mods = data[[mods]].reset_index(drop=True)
        y, v, slab, ni, mods = _omit_missing(missing, y, v, slab, ni, mods)
    bad = np.nonzero(~(v > 0))[0]
    if bad.size:
        raise InputError(f"vi (sampling variance) must be > 0; got {v[bad[0]]:g} at position {bad[0]}")
    method = _choice("method", method, METHODS)
    test = _choice("test", {"hksj": "knha", "t": "knha"}.get(str(test).lower(), test), TESTS)
    level = _level(level)
    ctrl = dict(_DEFAULT_CONTROL)
    if control:
        unknown = set(control) - set(ctrl)
        if unknown:
            raise InputError(f"unknown control option(s) {sorted(unknown)}; allowed: {', '.join(ctrl)}")
        ctrl.update(control)
    X, names = _design(mods, len(y), data)
    if ni is not None:
        ni = np.asarray(ni, dtype=float)
        if len(ni) != len(y):
            raise InputError(f"ni has length {len(ni)} but yi has length {len(y)}")
    if slab is not None and len(slab) != len(y):
        raise InputError(f"slab has length {len(slab)} but yi has length {len(y)}")
    return _fit(y, v, X, names, method, test, level, ctrl, measure=measure, ni=ni,
                slab=None if slab is None else list(slab))


@dataclass
class RMAResult:
    """Result of ``rma``: attribute names follow the metafor reference fixtures.

    ``estimate, se, stat, pval, ci_lb, ci_ub`` refer to the intercept of an intercept-only model
    (for meta-regression see ``coefficients``). ``tau2_ci``, ``I2_ci`` and ``H2_ci`` (Q-profile) are
    computed on first access.
    """

    k: int
    p: int
    method: str
    test: str
    level: float
    yi: np.ndarray
    vi: np.ndarray
    X: np.ndarray
    coef_names: list
    beta: np.ndarray
    vb: np.ndarray
    tau2: float | None
    se_tau2: float | None
    I2: float | None
    H2: float | None
    QE: float | None
    QE_pval: float | None
    QM: float | None
    QM_df: int
    QM_pval: float | None
    R2: float | None
    df: int | None
    s2w: float
    slab: list | None
    measure: str | None = None
    ni: np.ndarray | None = None
    notes: list = field(default_factory=list)
    control: dict = field(default_factory=lambda: dict(_DEFAULT_CONTROL))
    tau2_iterations: int = 0

    @property
    def labels(self) -> list:
        """Study labels: ``slab`` when given, else 'Study 1', 'Study 2', ..."""
        return self.slab if self.slab is not None else [f"Study {i + 1}" for i in range(self.k)]

    # ---- intercept-only summary -------------------------------------------------------------
    @property
    def intercept_only(self) -> bool:
        return self.p == 1 and self.X.strides[0] == 0

    @property
    def estimate(self) -> float:
        return float(self.beta[0])

    @property
    def se(self) -> float:
        return float(math.sqrt(self.vb[0, 0]))

    @property
    def stat(self) -> float:
        return self.estimate / self.se

    @property
    def pval(self) -> float:
        return _pvalue(self.stat, self.df)

    @property
    def crit(self) -> float:
        return _crit(self.level, self.df)

    @property
    def ci_lb(self) -> float:
        return self.estimate - self.crit * self.se

    @property
    def ci_ub(self) -> float:
        return self.estimate + self.crit * self.se

    @property
    def pi_lb(self) -> float | None:
        pi = self._pi()
        return None if pi is None else pi[0]

    @property
    def pi_ub(self) -> float | None:
        pi = self._pi()
        return None if pi is None else pi[1]

    def _pi(self):
        """Prediction interval b +- crit sqrt(tau2 + se^2); t on k - p df under knha (Riley 2011)."""
        if self.method == "FE" or self.tau2 is None or not self.intercept_only:
            return None
        half = _crit(self.level, self.k - self.p if self.test == "knha" else None) * math.sqrt(self.tau2 + self.se ** 2)
        return self.estimate - half, self.estimate + half

    def prediction_interval(self, *, df: str = "k-2") -> tuple[float, float] | None:
        """Prediction interval b +- t_{k-2} sqrt(tau2 + se^2) (Higgins, Thompson & Spiegelhalter 2009;
        IntHout et al. 2016, BMJ Open 6:e010247); None below k = 3, for FE and for meta-regression.

        ``df="k-2"`` is the recommended small-k interval used by the review; ``pi_lb``/``pi_ub`` keep
        metafor's (z, or t on k - p df under knha) for parity.
        """
        if df != "k-2":
            raise InputError(f"prediction_interval: df must be 'k-2'; got {df!r}")
        if self.method == "FE" or self.tau2 is None or not self.intercept_only or self.k < 3:
            return None
        half = _crit(self.level, self.k - 2) * math.sqrt(self.tau2 + self.se ** 2)
        return self.estimate - half, self.estimate + half

    # metafor's names for the heterogeneity test
    @property
    def Q(self):
        return self.QE

    @property
    def Q_df(self):
        return self.k - self.p

    @property
    def Q_pval(self):
        return self.QE_pval

    # ---- Q-profile confidence intervals (Viechtbauer 2007) ---------------------------------
    @cached_property
    def _qprofile(self):
        if self.method == "FE" or self.tau2 is None or self.k - self.p < 1:
            return None
        # metafor's confint searches [0, max(100, 10 tau2)]
        return _qprofile_ci(self.yi, self.vi, self.X, self.level, max(self.control["tau2_max"], 10 * self.tau2))

    @property
    def tau2_ci(self):
        return None if self._qprofile is None else list(self._qprofile)

    @property
    def I2_ci(self):
        if self._qprofile is None:
            return None
        s2 = self.typical_vi
        return [100 * t / (s2 + t) for t in self._qprofile]

    @property
    def H2_ci(self):
        if self._qprofile is None:
            return None
        s2 = self.typical_vi
        return [t / s2 + 1 for t in self._qprofile]

    @cached_property
    def typical_vi(self) -> float:
        """'Typical' within-study variance (k - p) / tr(P) with FE weights (Higgins & Thompson 2002)."""
        st = _pstats(self.yi, self.X, 1 / self.vi)
        return (self.k - self.p) / st["trP"]

    # ---- weights, coefficients, views ------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        """Percentage weight of each study, 100 w_i / sum(w)."""
        w = 1 / (self.vi + (self.tau2 or 0.0))
        return 100 * w / w.sum()

    @property
    def coefficients(self) -> pd.DataFrame:
        se = np.sqrt(np.diag(self.vb))
        stat = self.beta / se
        crit = self.crit
        return pd.DataFrame({"estimate": self.beta, "se": se, "stat": stat,
                             "pval": [_pvalue(s, self.df) for s in stat],
                             "ci_lb": self.beta - crit * se, "ci_ub": self.beta + crit * se},
                            index=pd.Index(self.coef_names, name="coefficient"))

    def transformed(self, transf: str | None = None, ni=None) -> dict:
        """Back-transformed summary (estimate, CI, PI) with ``transf`` in ilogit, exp, iarcsin, ipft_hm.

        Defaults to the natural inverse of ``measure``; ``ipft_hm`` uses the harmonic mean of ``ni``
        (Miller 1978), taken from the fit when not given.
        """
        from .effects import MEASURE_TRANSFORM
        if transf is None:
            transf = MEASURE_TRANSFORM.get(self.measure or "", "none")
        ni = self.ni if ni is None else ni
        f = lambda x: None if x is None else float(transform(x, transf, ni=ni))  # noqa: E731
        return {"transform": transf, "estimate": f(self.estimate), "ci_lb": f(self.ci_lb),
                "ci_ub": f(self.ci_ub), "pi_lb": f(self.pi_lb), "pi_ub": f(self.pi_ub)}

    def summary_frame(self) -> pd.DataFrame:
        """One-row-per-quantity view (estimate, CI, PI, heterogeneity) as a DataFrame."""
        rows = {"k": self.k, "estimate": self.estimate, "se": self.se, "stat": self.stat,
                "pval": self.pval, "ci_lb": self.ci_lb, "ci_ub": self.ci_ub, "pi_lb": self.pi_lb,
                "pi_ub": self.pi_ub, "tau2": self.tau2, "se_tau2": self.se_tau2, "I2": self.I2,
                "H2": self.H2, "Q": self.Q, "Q_df": self.Q_df, "Q_pval": self.Q_pval}
        ci = self.tau2_ci
        if ci is not None:
            rows.update({"tau2_ci_lb": ci[0], "tau2_ci_ub": ci[1], "I2_ci_lb": self.I2_ci[0],
                         "I2_ci_ub": self.I2_ci[1]})
        return pd.DataFrame({"value": pd.Series(rows, dtype=object)})

    def one_line(self, transf: str | None = None, digits: int = 2) -> str:
        """E.g. 'REML, k = 12: 0.81 (95% CI 0.70 to 0.89; PI 0.44 to 0.96), tau2 = 0.59, I2 = 68%'."""
        t = self.transformed(transf) if (transf or self.measure) else None
        est, lo, hi = (t["estimate"], t["ci_lb"], t["ci_ub"]) if t else (self.estimate, self.ci_lb, self.ci_ub)
        fmt = f"{{:.{digits}f}}"
        s = f"{self.method}, k = {self.k}: {fmt.format(est)} ({round(self.level * 100):g}% CI {fmt.format(lo)} to {fmt.format(hi)}"
        if self.pi_lb is not None:
            plo, phi = (t["pi_lb"], t["pi_ub"]) if t else (self.pi_lb, self.pi_ub)
            s += f"; PI {fmt.format(plo)} to {fmt.format(phi)}"
        s += ")"
        if self.tau2 is not None and self.k > 1:
            s += f", tau2 = {self.tau2:.3g}, I2 = {self.I2:.0f}%"
        return s

    def __repr__(self):  # pragma: no cover - cosmetic
        return f"<RMAResult {self.one_line()}>"


# ---------------------------------------------------------------------------------------------
# subgroups

@dataclass
class SubgroupResult:
    """Separate model per level of a categorical moderator plus the test for subgroup differences."""

    fits: dict
    Q_between: float
    Q_between_df: int
    Q_between_pval: float
    skipped: dict

    @property
    def testable(self) -> bool:
        """Whether the test for subgroup differences says anything about subgroups: every level needs at least
        2 studies; with one study a level is that study, and Q between is a test of studies (Handbook 10.11;
        ICEMAN, Schandelmaier 2020)."""
        return len(self.fits) >= 2 and all(f.k >= 2 for f in self.fits.values())

    def summary_frame(self) -> pd.DataFrame:
        rows = []
        for level, f in self.fits.items():
            rows.append({"subgroup": level, "k": f.k, "estimate": f.estimate, "se": f.se,
                         "ci_lb": f.ci_lb, "ci_ub": f.ci_ub, "pi_lb": f.pi_lb, "pi_ub": f.pi_ub,
                         "tau2": f.tau2, "I2": f.I2})
        return pd.DataFrame(rows).set_index("subgroup") if rows else pd.DataFrame()


def rma_subgroups(yi, vi, groups, *, method="REML", test="z", level=0.95, slab=None, measure=None,
                  ni=None) -> SubgroupResult:
    """Fit a separate random-effects model (own tau2) in each subgroup; Q_between is the FE Q test
    across the subgroup estimates with their squared standard errors (Borenstein 2009, ch. 19)."""
    y = _vector("yi", yi, None)
    v = _vector("vi", vi, None)
    g = np.asarray(groups, dtype=object)
    if len(g) != len(y):
        raise InputError(f"groups has length {len(g)} but yi has length {len(y)}")
    fits, skipped = {}, {}
    for level_ in sorted(set(g.tolist()), key=str):
        idx = np.nonzero(g == level_)[0]
        sub_ni = None if ni is None else np.asarray(ni)[idx]
        sub_slab = None if slab is None else [slab[i] for i in idx]
        fits[level_] = rma(y[idx], v[idx], method=method, test=test, level=level, slab=sub_slab,
                           measure=measure, ni=sub_ni)
    est = np.array([f.estimate for f in fits.values()])
    var = np.array([f.se ** 2 for f in fits.values()])
    if len(fits) < 2:
        return SubgroupResult(fits, float("nan"), 0, float("nan"), skipped)
    w = 1 / var
    b = np.sum(w * est) / w.sum()
    q = float(np.sum(w * (est - b) ** 2))
    dfb = len(fits) - 1
    return SubgroupResult(fits, q, dfb, float(special.chdtrc(dfb, q)), skipped)


# ---------------------------------------------------------------------------------------------
# fitting

def _fit(y, v, X, names, method, test, level, ctrl, measure=None, ni=None, slab=None) -> RMAResult:
    k, p = X.shape
    notes = []
    if k == 1:
        # a single study: no pooling, no heterogeneity
        notes.append("k = 1: the single study is reported as it is; no pooling and no heterogeneity statistics.")
        return RMAResult(k=1, p=1, method=method, test="z", level=level, yi=y, vi=v, X=X[:, :1],
                         coef_names=names[:1], beta=y.copy(), vb=v.reshape(1, 1).copy(), tau2=None,
                         se_tau2=None, I2=None, H2=None, QE=None, QE_pval=None, QM=None, QM_df=1,
                         QM_pval=None, R2=None, df=None, s2w=1.0, slab=slab, measure=measure, ni=ni,
                         notes=notes, control=ctrl)
    if p > k or (method != "FE" and p + 1 > k):
        raise InputError(f"too few studies (k = {k}) for {p} coefficient(s) and method {method}")
    if method != "FE" and k - p < 1:
        raise InputError(f"method {method} needs k > p")
    tau2, se_tau2, iters = _tau2(y, v, X, method, ctrl, notes)
    w = 1 / (v + tau2)
    st = _pstats(y, X, w)
    b, vb = st["b"], st["Ainv"]
    s2w = 1.0
    df = None
    if test == "knha":
        rss = st["YPY"]
        s2w = 1.0 if rss <= np.finfo(float).eps else rss / (k - p)
        vb = s2w * vb
        df = k - p
    btt = np.arange(1, p) if p > 1 else np.arange(p)
    m = len(btt)
    if p == 1:
        QM = float(b[0] ** 2 / vb[0, 0])
    else:
        bsub = b[btt]
        QM = float(bsub @ np.linalg.solve(vb[np.ix_(btt, btt)], bsub))
    if test == "knha":
        QM = QM / m
        QM_pval = float(special.fdtrc(m, k - p, QM))
    else:
        QM_pval = float(special.chdtrc(m, QM))
    # heterogeneity (FE weights)
    fe = _pstats(y, X, 1 / v)
    QE = max(0.0, fe["YPY"])
    QE_pval = float(special.chdtrc(k - p, QE)) if k - p >= 1 else 1.0
    if method == "FE":
        I2 = max(0.0, 100 * (QE - (k - p)) / QE) if QE > 0 else 0.0
        H2 = QE / (k - p) if k - p > 0 else None
    else:
        vi_avg = (k - p) / fe["trP"]
        I2 = 100 * tau2 / (vi_avg + tau2)
        H2 = tau2 / vi_avg + 1
    R2 = None
    if p > 1 and method != "FE" and np.all(X[:, 0] == 1):
        t_re, _, _ = _tau2(y, v, _ones(k), method, ctrl, [])
        R2 = None if t_re == 0 else max(0.0, 100 * (t_re - tau2) / t_re)
    return RMAResult(k=k, p=p, method=method, test=test, level=level, yi=y, vi=v, X=X, coef_names=names,
                     beta=b, vb=vb, tau2=float(tau2), se_tau2=se_tau2, I2=float(I2), H2=H2, QE=float(QE),
                     QE_pval=QE_pval, QM=QM, QM_df=m, QM_pval=QM_pval, R2=R2, df=df, s2w=s2w, slab=slab,
                     measure=measure, ni=ni, notes=notes, control=ctrl, tau2_iterations=iters)


def _tau2(y, v, X, method, ctrl, notes):
    """Estimate tau2 and its standard error (formulas of metafor 3.8, rma.uni)."""
    k, p = X.shape
    if method == "FE":
        return 0.0, None, 0
    thr, maxiter = ctrl["threshold"], ctrl["maxiter"]
    if method == "HS":
        w = 1 / v
        st = _pstats(y, X, w, second=True)
        tau2 = max(0.0, (st["YPY"] - k) / st["sw"])
        se = math.sqrt(1 / st["sw"] ** 2 * (2 * (k - p) + 4 * tau2 * st["trP"] + 2 * tau2 ** 2 * st["trPP"]))
        return tau2, se, 0
    if method == "DL":
        w = 1 / v
        st = _pstats(y, X, w, second=True)
        tau2 = max(0.0, (st["YPY"] - (k - p)) / st["trP"])
        se = math.sqrt(1 / st["trP"] ** 2 * (2 * (k - p) + 4 * tau2 * st["trP"] + 2 * tau2 ** 2 * st["trPP"]))
        return tau2, se, 0
    if method == "SJ":
        tau0 = float(np.var(y))  # var(yi) * (k - 1) / k
        if tau0 <= 0:
            notes.append("SJ: all yi are equal, so tau2 = 0.")
            return 0.0, None, 0
        w = 1 / (v + tau0)
        st = _pstats(y, X, w, second=True, v=v)
        tau2 = max(0.0, tau0 * st["YPY"] / (k - p))
        se = math.sqrt(tau0 ** 2 / (k - p) ** 2 * (2 * st["trPVPV"] + 4 * tau2 * st["trPVP"] + 2 * tau2 ** 2 * st["trPP"]))
        return tau2, se, 0
    if method == "PM":
        return _tau2_pm(y, v, X, ctrl, notes)
    # HE, and the starting value of ML / REML / EB
    if X.strides[0] == 0 and method != "HE":
        r = y - y.mean()
        he = {"tau2": (float(np.dot(r, r)) - float(v.sum()) * (1 - 1 / k)) / (k - 1)}
    else:
        he = _he(y, v, X)
    if method == "HE":
        tau2 = max(0.0, he["tau2"])
        se = math.sqrt(1 / (k - p) ** 2 * (2 * he["trPVPV"] + 4 * tau2 * he["trPV"] + 2 * tau2 ** 2 * (k - p)))
        return tau2, se, 0
    tau2 = max(0.0, he["tau2"])
    change, it = thr + 1, 0
    st = None
    if X.strides[0] == 0:  # intercept only: the same Fisher steps with scalar sums (speed)
        tau2, it, ok = _fisher_intercept_only(y, v, tau2, method, thr, maxiter)
        change = 0.0 if ok else math.inf
        if not ok:
            return _fallback(y, v, X, method, ctrl, notes, it)
    while change > thr:
        it += 1
        old = tau2
        w = 1 / (v + tau2)
        st = _pstats(y, X, w, second=True, v=v if method == "EB" else None)
        if method == "ML":
            adj = (st["YPPY"] - st["sw"]) / st["sw2"]
        elif method == "REML":
            adj = (st["YPPY"] - st["trP"]) / st["trPP"]
        else:  # EB
            adj = (st["YPY"] * k / (k - p) - k) / st["sw"]
        while tau2 + adj < 0:
            adj /= 2
        tau2 = tau2 + adj
        change = abs(old - tau2)
        if not math.isfinite(tau2) or it > maxiter:
            return _fallback(y, v, X, method, ctrl, notes, it)
    tau2 = max(0.0, tau2)
    if method in ("ML", "REML") and tau2 > 0 and _loglik(y, v, X, 0.0, method) > _loglik(y, v, X, tau2, method):
        # metafor's ll0check: Fisher scoring can stop at a local maximum while tau2 = 0 is higher
        notes.append(f"{method}: the likelihood is higher at tau2 = 0 than at the Fisher-scoring "
                     f"solution ({tau2:.4g}); tau2 = 0 is used.")
        tau2 = 0.0
    st = _pstats(y, X, 1 / (v + tau2), second=True, v=v if method == "EB" else None)
    if method == "ML":
        se = math.sqrt(2 / st["sw2"])
    elif method == "REML":
        se = math.sqrt(2 / st["trPP"])
    else:
        se = _se_eb_pm(st, k, p, tau2)
    return tau2, se, it


def _loglik(y, v, X, tau2, method):
    """Log-likelihood (ML) or restricted log-likelihood (REML) up to a constant."""
    st = _pstats(y, X, 1 / (v + tau2))
    ll = -0.5 * (float(np.sum(np.log(v + tau2))) + st["YPY"])
    if method == "REML":
        A = st["A"]
        ll -= 0.5 * (math.log(A[0, 0]) if A.shape == (1, 1) else np.linalg.slogdet(A)[1])
    return ll


def _fisher_intercept_only(y, v, tau2, method, thr, maxiter):
    """Fisher scoring for ML / REML / EB when X is a column of ones (same updates as the general loop)."""
    k = len(y)
    one = np.ones(k)
    dot = np.dot
    it = 0
    while True:
        it += 1
        w = 1.0 / (v + tau2)
        sw = dot(w, one)
        r = y - dot(w, y) / sw
        wr = w * r
        if method == "EB":
            adj = (dot(wr, r) * k / (k - 1) - k) / sw
        else:
            ww = w * w
            sw2 = dot(ww, one)
            if method == "ML":
                adj = (dot(wr, wr) - sw) / sw2
            else:
                adj = (dot(wr, wr) - (sw - sw2 / sw)) / (sw2 - 2 * dot(ww, w) / sw + (sw2 / sw) ** 2)
        while tau2 + adj < 0:
            adj /= 2
        new = float(tau2 + adj)
        if not math.isfinite(new) or it > maxiter:
            return tau2, it, False
        change = abs(new - tau2)
        tau2 = new
        if change <= thr:
            return tau2, it, True


def _tau2_pm(y, v, X, ctrl, notes):
    """Paule-Mandel: root of Y'P(tau2)Y = k - p (uniroot on [0, tau2_max], tol 1e-5, as metafor)."""
    k, p = X.shape
    target = k - p
    f = lambda t: _pstats(y, X, 1 / (v + t))["YPY"] - target  # noqa: E731
    f0 = f(0.0)
    if f0 < 0:
        tau2 = 0.0
    else:
        upper = ctrl["tau2_max"]
        fu = f(upper)
        while fu > 0 and upper < 1e12:  # extendInt = "upX"
            upper *= 10
            fu = f(upper)
        # metafor 3.8 calls uniroot with its default tolerance here (eps^0.25), so do we
        tau2, _, ok = zeroin(f, 0.0, upper, tol=ctrl["pm_tol"], maxiter=ctrl["maxiter"], f_lower=f0, f_upper=fu)
        if not ok:
            return _fallback(y, v, X, "PM", ctrl, notes, ctrl["maxiter"])
    st = _pstats(y, X, 1 / (v + tau2), second=True, v=v)
    return tau2, _se_eb_pm(st, k, p, tau2), 0


def _se_eb_pm(st, k, p, tau2):
    return math.sqrt((k / (k - p)) ** 2 / st["sw"] ** 2
                     * (2 * st["trPVPV"] + 4 * tau2 * st["trPVP"] + 2 * tau2 ** 2 * st["trPP"]))


def _fallback(y, v, X, method, ctrl, notes, it):
    """Non-convergence: maximise the (restricted) likelihood directly; if that fails, use DL. Always warns."""
    from scipy.optimize import minimize_scalar
    if method in ("REML", "ML"):
        reml = method == "REML"

        def negll(t):
            w = 1 / (v + t)
            st = _pstats(y, X, w)
            val = np.sum(np.log(v + t)) + st["YPY"]
            if reml:
                val += np.linalg.slogdet(st["A"])[1]
            return 0.5 * val

        upper = max(ctrl["tau2_max"], 10 * float(np.var(y)) + 1)
        res = minimize_scalar(negll, bounds=(0.0, upper), method="bounded", options={"xatol": 1e-10})
        if res.success and math.isfinite(res.x):
            tau2 = float(res.x)
            st = _pstats(y, X, 1 / (v + tau2), second=True)
            se = math.sqrt(2 / (st["trPP"] if reml else st["sw2"]))
            msg = (f"{method}: Fisher scoring did not converge in {ctrl['maxiter']} iterations; "
                   f"tau2 taken from bounded direct maximisation of the {method} likelihood instead.")
            warnings.warn(msg, ConvergenceWarning, stacklevel=4)
            notes.append(msg)
            return tau2, se, it
    msg = f"{method}: the iterative estimator did not converge; fell back to the DL estimator of tau2."
    warnings.warn(msg, ConvergenceWarning, stacklevel=4)
    notes.append(msg)
    return _tau2(y, v, X, "DL", ctrl, notes)


def _he(y, v, X):
    """Hedges (1983) moment estimator with unweighted residuals: (RSS - tr(P V)) / (k - p)."""
    k, p = X.shape
    st = _pstats(y, X, np.ones(k), second=True, v=v)  # W = I
    trPV = st["trPV"]
    return {"tau2": (st["YPY"] - trPV) / (k - p), "trPV": trPV, "trPVPV": st["trPVPV"]}


def _pstats(y, X, w, second=False, v=None):
    """Quantities of P = W - W X (X'WX)^-1 X'W without forming P (O(k p^2)).

    Returns b, A = X'WX, Ainv, sw = sum(w), YPY = sum(w r^2), YPPY = sum((w r)^2), trP and, with
    ``second``, sw2 = sum(w^2), trPP = sum(P*P); with ``v`` also trPV, trPVP = sum(PV*P) and
    trPVPV = sum(PV * t(PV)).
    """
    k, p = X.shape
    if p == 1 and X.strides[0] == 0:  # intercept only (see _ones): scalar formulas
        sw = float(w.sum())
        b0 = float(np.dot(w, y)) / sw
        r = y - b0
        wr = w * r
        sw2 = float(np.dot(w, w))
        out = {"b": np.array([b0]), "A": np.array([[sw]]), "Ainv": np.array([[1 / sw]]), "sw": sw,
               "YPY": float(np.dot(wr, r)), "YPPY": float(np.dot(wr, wr)), "trP": sw - sw2 / sw}
        if second:
            ww = w * w
            sw3 = float(np.dot(ww, w))
            out["sw2"] = sw2
            out["trPP"] = sw2 - 2 * sw3 / sw + (sw2 / sw) ** 2
            if v is not None:
                q = 1 / sw
                vww = float(np.dot(v, ww))
                out["trPV"] = float(np.dot(v, w)) - vww * q
                out["trPVP"] = vww - 2 * float(np.dot(v, ww * w)) * q + vww * q * sw2 * q
                vv = v * v
                out["trPVPV"] = float(np.dot(vv, ww)) - 2 * float(np.dot(vv, ww * w)) * q + (q * vww) ** 2
        return out
    XtW = X.T * w
    A = XtW @ X
    Ainv = np.linalg.inv(A)
    b = Ainv @ (XtW @ y)
    r = y - X @ b
    wr = w * r
    qd = np.einsum("ij,jk,ik->i", X, Ainv, X)  # x_i' Ainv x_i
    C = (X.T * w ** 2) @ X
    out = {"b": b, "A": A, "Ainv": Ainv, "sw": w.sum(), "YPY": float(np.dot(wr, r)),
           "YPPY": float(np.dot(wr, wr)), "trP": float(w.sum() - np.trace(Ainv @ C))}
    if second:
        AC = Ainv @ C
        sw2 = float(np.dot(w, w))
        out["sw2"] = sw2
        out["trPP"] = float(sw2 - 2 * np.dot(w ** 3, qd) + np.trace(AC @ AC))
        if v is not None:
            G = Ainv @ C @ Ainv
            xGx = np.einsum("ij,jk,ik->i", X, G, X)
            diagPP = w ** 2 - 2 * w ** 3 * qd + w ** 2 * xGx
            D = (X.T * (v * w ** 2)) @ X
            AD = Ainv @ D
            out["trPV"] = float(np.dot(v, w) - np.dot(v, w * w * qd))
            out["trPVP"] = float(np.dot(v, diagPP))
            out["trPVPV"] = float(np.dot(v * v, w * w) - 2 * np.dot(v * v, w ** 3 * qd) + np.trace(AD @ AD))
    return out


def _qprofile_ci(y, v, X, level, tau2_max):
    """Q-profile limits for tau2 (Viechtbauer 2007): Q(tau2) equal to chi2 quantiles on k - p df.

    Roots by R's uniroot algorithm with its default tolerance on [0, tau2_max], as metafor's
    ``confint``; a limit beyond tau2_max is reported as tau2_max.
    """
    k, p = X.shape
    df = k - p
    alpha = 1 - level
    crit_u = float(special.chdtri(df, alpha / 2))       # upper quantile
    crit_l = float(special.chdtri(df, 1 - alpha / 2))   # lower quantile
    q = lambda t: _pstats(y, X, 1 / (v + t))["YPY"]  # noqa: E731
    q0, qmax = q(0.0), q(tau2_max)
    if q0 < crit_l:
        return 0.0, 0.0
    if q0 < crit_u:
        lb = 0.0
    elif qmax > crit_u:
        lb = tau2_max
    else:
        lb = zeroin(lambda t: q(t) - crit_u, 0.0, tau2_max, tol=R_UNIROOT_TOL,
                    f_lower=q0 - crit_u, f_upper=qmax - crit_u)[0]
    if qmax > crit_l:
        ub = tau2_max
    else:
        ub = zeroin(lambda t: q(t) - crit_l, 0.0, tau2_max, tol=R_UNIROOT_TOL,
                    f_lower=q0 - crit_l, f_upper=qmax - crit_l)[0]
    return lb, ub


# ---------------------------------------------------------------------------------------------
# small helpers

def _crit(level, df):
    a = (1 - level) / 2
    if df is None:
        return float(-special.ndtri(a))
    return float(special.stdtrit(df, 1 - a))


def _pvalue(stat, df):
    if df is None:
        return float(2 * special.ndtr(-abs(stat)))
    return float(2 * special.stdtr(df, -abs(stat)))


def _level(level):
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise InputError(f"level must be a number in (0, 1), e.g. 0.95; got {level!r}") from None
    if not (0 < lv < 1):
        raise InputError(f"level must lie in (0, 1), e.g. 0.95; got {level!r}")
    return lv


def _choice(name, value, allowed):
    if not isinstance(value, str) or value.upper() not in {a.upper() for a in allowed}:
        raise InputError(f"{name}={value!r} is not supported; allowed: {', '.join(allowed)}")
    return next(a for a in allowed if a.upper() == value.upper())


def _omit_missing(missing, y, v, slab, ni, mods):
    """Leave out studies whose yi or vi is missing (NaN), with a warning naming them (metafor: 'Studies with
    NAs omitted from model fitting'); every per-study argument is subset alike."""
    idx = np.nonzero(missing)[0]
    names = [str(slab[i]) for i in idx] if slab is not None else [f"position {i}" for i in idx]
    if missing.all():
        raise InputError(f"yi/vi are missing for every study ({', '.join(names)}): no studies to pool")
    warnings.warn(f"rma: {len(idx)} {'study' if len(idx) == 1 else 'studies'} with a missing yi or vi left out of "
                  f"the model: {', '.join(names)}", MissingValueWarning, stacklevel=3)
    keep = ~missing
    if slab is not None:
        if len(slab) != len(missing):
            raise InputError(f"slab has length {len(slab)} but yi has length {len(missing)}")
        slab = [s for s, k in zip(slab, keep) if k]
    if ni is not None:
        ni = np.asarray(ni, dtype=float)
        if len(ni) != len(missing):
            raise InputError(f"ni has length {len(ni)} but yi has length {len(missing)}")
        ni = ni[keep]
    if isinstance(mods, dict):
        mods = {k: np.asarray(c)[keep] for k, c in mods.items()}
    elif isinstance(mods, (pd.DataFrame, pd.Series)):
        mods = mods[keep].reset_index(drop=True)
    elif mods is not None and not isinstance(mods, str):
        mods = np.asarray(mods)[keep]
    return y[keep], v[keep], slab, ni, mods


def _vector(name, value, data, allow_nan=False):
    if isinstance(value, str):
        if data is None or value not in data.columns:
            raise InputError(f"{name}={value!r} names no column of data")
        value = data[value]
    try:
        a = np.atleast_1d(np.asarray(value, dtype=float)).copy()
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric; got {value!r}") from None
    if a.ndim != 1:
        raise InputError(f"{name} must be one-dimensional; got shape {a.shape}")
    bad = np.nonzero((np.isinf(a)) | (np.isnan(a) & (not allow_nan)))[0]
    if bad.size:
        raise InputError(f"{name} has a missing or non-finite value at position {bad[0]}; "
                         "remove the study or supply the value")
    return a


def _ones(k):
    """Intercept-only design: a read-only k x 1 view of a single 1.0 (zero row stride marks it)."""
    return np.broadcast_to(_ONE, (k, 1))


_ONE = np.ones((1, 1))


def _design(mods, k, data):
    """Model matrix with an intercept; categorical moderators dummy-coded (first sorted level = reference)."""
    if mods is None:
        return _ones(k), ["intrcpt"]
    if isinstance(mods, str):
        if data is None or mods not in data.columns:
            raise InputError(f"mods={mods!r} names no column of data")
        mods = data[[mods]]
    if isinstance(mods, dict):
        mods = pd.DataFrame(mods)
    if isinstance(mods, pd.Series):
        mods = mods.to_frame(mods.name or "mod")
    if not isinstance(mods, pd.DataFrame):
        arr = np.asarray(mods)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        mods = pd.DataFrame(arr, columns=[f"mod{i + 1}" if arr.shape[1] > 1 else "mods" for i in range(arr.shape[1])])
    if len(mods) != k:
        raise InputError(f"mods has {len(mods)} rows but yi has {k} studies")
    cols, names = [np.ones(k)], ["intrcpt"]
    for name in mods.columns:
        col = mods[name]
        if col.isna().any():
            raise InputError(f"moderator {name!r} has missing values at rows "
                             f"{list(np.nonzero(col.isna().to_numpy())[0])}")
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            cols.append(col.to_numpy(dtype=float))
            names.append(str(name))
        else:
            levels = sorted(set(col.astype(str)))
            if len(levels) < 2:
                raise InputError(f"moderator {name!r} has a single level ({levels[0]!r}); it cannot be estimated")
            for lev in levels[1:]:
                cols.append((col.astype(str) == lev).to_numpy(dtype=float))
                names.append(f"{name}{lev}")
    X = np.column_stack(cols)
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise InputError("the moderators are collinear (model matrix not of full rank); drop a redundant moderator")
    return X, names


# ---------------------------------------------------------------------------------------------
# batched intercept-only fits (leave-one-out, influence): one row per data set, same arithmetic

def _tau2_batch(Y, V, method, ctrl):
    """tau2 for each row of Y/V (intercept-only models), identical to ``_tau2`` row by row.

    Iterative methods freeze a row once its change falls below the threshold, so each row follows
    exactly the path the scalar algorithm takes. PM and rows that fail to converge use ``_tau2``.
    """
    m, k = Y.shape
    p = 1
    if method == "FE":
        return np.zeros(m)
    if method in ("PM",):
        return np.array([_tau2(Y[i], V[i], _ones(k), method, ctrl, [])[0] for i in range(m)])

    def stats(W):
        sw = W.sum(1)
        b = (W * Y).sum(1) / sw
        R = Y - b[:, None]
        WR = W * R
        sw2 = (W * W).sum(1)
        return {"sw": sw, "b": b, "YPY": (WR * R).sum(1), "YPPY": (WR * WR).sum(1), "trP": sw - sw2 / sw,
                "sw2": sw2, "trPP": sw2 - 2 * (W ** 3).sum(1) / sw + (sw2 / sw) ** 2}

    if method == "HS":
        st = stats(1 / V)
        return np.maximum(0.0, (st["YPY"] - k) / st["sw"])
    if method == "DL":
        st = stats(1 / V)
        return np.maximum(0.0, (st["YPY"] - (k - p)) / st["trP"])
    if method == "SJ":
        tau0 = Y.var(axis=1)
        st = stats(1 / (V + tau0[:, None]))
        return np.where(tau0 > 0, np.maximum(0.0, tau0 * st["YPY"] / (k - p)), 0.0)
    # HE start (W = I)
    R = Y - Y.mean(1, keepdims=True)
    he = ((R * R).sum(1) - (V.sum(1) - V.sum(1) / k)) / (k - p)
    if method == "HE":
        return np.maximum(0.0, he)
    tau2 = np.maximum(0.0, he)
    active = np.ones(m, dtype=bool)
    thr, maxiter = ctrl["threshold"], ctrl["maxiter"]
    it = 0
    while active.any():
        it += 1
        if it > maxiter:
            for i in np.nonzero(active)[0]:
                tau2[i] = _tau2(Y[i], V[i], _ones(k), method, ctrl, [])[0]
            return tau2
        idx = np.nonzero(active)[0]
        W = 1 / (V[idx] + tau2[idx, None])
        sw = W.sum(1)
        b = (W * Y[idx]).sum(1) / sw
        R = Y[idx] - b[:, None]
        WR = W * R
        if method == "ML":
            sw2 = (W * W).sum(1)
            adj = ((WR * WR).sum(1) - sw) / sw2
        elif method == "REML":
            sw2 = (W * W).sum(1)
            trP = sw - sw2 / sw
            trPP = sw2 - 2 * (W ** 3).sum(1) / sw + (sw2 / sw) ** 2
            adj = ((WR * WR).sum(1) - trP) / trPP
        else:  # EB
            adj = ((WR * R).sum(1) * k / (k - p) - k) / sw
        old = tau2[idx].copy()
        while np.any(old + adj < 0):
            adj = np.where(old + adj < 0, adj / 2, adj)
        tau2[idx] = old + adj
        bad = ~np.isfinite(tau2[idx])
        if bad.any():
            for i in idx[bad]:
                tau2[i] = _tau2(Y[i], V[i], _ones(k), method, ctrl, [])[0]
        done = (np.abs(old - tau2[idx]) <= thr) | bad
        active[idx[done]] = False
    tau2 = np.maximum(0.0, tau2)
    if method in ("ML", "REML"):
        def ll(t):
            W = 1 / (V + t[:, None])
            sw = W.sum(1)
            R = Y - ((W * Y).sum(1) / sw)[:, None]
            out = -0.5 * (np.log(V + t[:, None]).sum(1) + (W * R * R).sum(1))
            return out - 0.5 * np.log(sw) if method == "REML" else out
        tau2 = np.where((tau2 > 0) & (ll(np.zeros(m)) > ll(tau2)), 0.0, tau2)
    return tau2


def _fit_batch(Y, V, method, test, level, ctrl):
    """Summary of intercept-only fits for each row: dict of arrays (estimate, se, ci, Q, tau2, I2, H2, s2w)."""
    m, k = Y.shape
    tau2 = _tau2_batch(Y, V, method, ctrl)
    W = 1 / (V + tau2[:, None])
    sw = W.sum(1)
    b = (W * Y).sum(1) / sw
    var = 1 / sw
    s2w = np.ones(m)
    df = None
    if test == "knha":
        rss = (W * (Y - b[:, None]) ** 2).sum(1)
        s2w = np.where(rss <= np.finfo(float).eps, 1.0, rss / (k - 1))
        var = var * s2w
        df = k - 1
    se = np.sqrt(var)
    crit = _crit(level, df)
    Wf = 1 / V
    swf = Wf.sum(1)
    bf = (Wf * Y).sum(1) / swf
    Q = np.maximum(0.0, (Wf * (Y - bf[:, None]) ** 2).sum(1))
    trP = swf - (Wf * Wf).sum(1) / swf
    if method == "FE":
        with np.errstate(invalid="ignore", divide="ignore"):
            I2 = np.where(Q > 0, np.maximum(0.0, 100 * (Q - (k - 1)) / Q), 0.0)
        H2 = Q / (k - 1)
    else:
        vi_avg = (k - 1) / trP
        I2 = 100 * tau2 / (vi_avg + tau2)
        H2 = tau2 / vi_avg + 1
    stat = b / se
    pval = 2 * special.ndtr(-np.abs(stat)) if df is None else 2 * special.stdtr(df, -np.abs(stat))
    return {"estimate": b, "se": se, "stat": stat, "pval": pval, "ci_lb": b - crit * se, "ci_ub": b + crit * se,
            "Q": Q, "Q_pval": special.chdtrc(k - 1, Q), "tau2": tau2, "I2": I2, "H2": H2, "s2w": s2w}
