"""Post-fit tools for an ``rma`` result, named after metafor's: each refits with the same method,
test and level as the model it is given.

- ``leave_one_out``: the model without each study in turn (metafor ``leave1out``);
- ``influence``: externally studentized residuals, DFFITS, Cook's distance, covariance ratio,
  leave-one-out tau2 and Q, hat values and weights (Viechtbauer & Cheung 2010);
- ``egger``: regression test for funnel-plot asymmetry with the standard error as predictor
  (Egger et al. 1997; metafor ``regtest``), with the limit estimate (the intercept);
- ``rank_test``: Begg & Mazumdar (1994) rank correlation (Kendall's tau);
- ``trimfill``: Duval & Tweedie (2000) trim-and-fill with the L0 estimator;
- ``cumulative``: cumulative meta-analysis in a given order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from .errors import InputError
from .meta import RMAResult, _fit, _fit_batch, _ones, rma


def leave_one_out(res: RMAResult) -> pd.DataFrame:
    """Refit without each study; columns estimate, se, stat, pval, ci_lb, ci_ub, Q, Q_pval, tau2, I2, H2.

    With k = 2 each row is the other study alone, as metafor 3.8's single-study fit: its estimate and SE
    sqrt(vi) with a z-based test and CI (also under Knapp-Hartung, which has 0 df with one study; metafor
    falls back to z there), Q = 0 (p = 1), tau2 = 0, I2 = 0 and H2 = 1.
    """
    _need_intercept_only(res, "leave_one_out")
    if res.k < 2:
        raise InputError(f"leave_one_out needs at least 2 studies (k = {res.k})")
    if res.k == 2:
        return pd.DataFrame(_single_study_fits(res), index=pd.Index(res.labels, name="study"))
    Y, V = _loo_matrices(res)
    out = _fit_batch(Y, V, res.method, res.test, res.level, res.control)
    out.pop("s2w")
    return pd.DataFrame(out, index=pd.Index(res.labels, name="study"))


def influence(res: RMAResult) -> pd.DataFrame:
    """Case-deletion diagnostics (Viechtbauer & Cheung 2010), as metafor's ``influence``.

    rstudent_i = (y_i - yhat_(i)) / sqrt(s2w_(i) (v_i + tau2_(i)) + var(yhat_(i))): under Knapp-Hartung the
    deleted residual variance is scaled by the Knapp-Hartung factor s2w of the fit without study i (1 under
    z), as metafor's code does (it then equals the mean-shift outlier test). DFFITS, Cook's distance and the
    covariance ratio follow metafor's ``influence.rma.uni``.

    k = 2, as metafor 3.8: each deleted fit is the other study alone (tau2 = 0, z-based with scale factor 1
    under either test), so rstudent = (y_i - y_j) / sqrt(v_i + v_j), DFFITS = (mu - y_j) / sqrt(h_i v_i),
    Cook's distance = (mu - y_j)^2 / var(mu) and the covariance ratio = v_j / var(mu).
    """
    if res.k < 2:
        raise InputError(f"influence needs at least 2 studies (k = {res.k})")
    w = 1 / (res.vi + res.tau2)
    Ainv = np.linalg.inv((res.X.T * w) @ res.X)
    hat = w * np.einsum("ij,jk,ik->i", res.X, Ainv, res.X)
    pred_full = res.X @ res.beta
    out = {k: np.empty(res.k) for k in ("rstudent", "dffits", "cooks_d", "cov_r", "tau2_del", "Q_del")}
    if res.intercept_only:
        if res.k == 2:
            f = _single_study_fits(res)
            f["s2w"] = np.ones(2)
            vdel = f["se"] ** 2
        else:
            Y, V = _loo_matrices(res)
            f = _fit_batch(Y, V, res.method, res.test, res.level, res.control)
            vdel = f["se"] ** 2
        delpred, tau2_del, s2w = f["estimate"], f["tau2"], f["s2w"]
        resid = res.yi - delpred
        resid = np.where(np.abs(resid) < 100 * np.finfo(float).eps, 0.0, resid)
        vb = res.vb[0, 0]
        out.update(rstudent=resid / np.sqrt(s2w * (res.vi + tau2_del) + vdel),
                   dffits=(pred_full - delpred) / np.sqrt(s2w * hat * (tau2_del + res.vi)),
                   cooks_d=(res.estimate - delpred) ** 2 / vb, cov_r=vdel / vb, tau2_del=tau2_del, Q_del=f["Q"])
    else:
        if res.k - 1 <= res.p:
            raise InputError(f"influence with moderators needs more studies than coefficients after deleting one "
                             f"(k = {res.k}, p = {res.p})")
        svb = np.linalg.inv(res.vb)
        det_full = np.linalg.det(res.vb)
        for i in range(res.k):
            f = _refit(res, _without(res.k, i), keep_mods=True)
            xi = res.X[i]
            delpred = xi @ f.beta
            vdel = xi @ f.vb @ xi
            tau2_del = f.tau2 or 0.0
            resid = res.yi[i] - delpred
            if abs(resid) < 100 * np.finfo(float).eps:
                resid = 0.0
            out["rstudent"][i] = resid / np.sqrt(f.s2w * (res.vi[i] + tau2_del) + vdel)
            out["dffits"][i] = (pred_full[i] - delpred) / np.sqrt(f.s2w * hat[i] * (tau2_del + res.vi[i]))
            dfbeta = res.beta - f.beta
            out["cooks_d"][i] = dfbeta @ svb @ dfbeta
            out["cov_r"][i] = np.linalg.det(f.vb) / det_full
            out["tau2_del"][i] = tau2_del
            out["Q_del"][i] = f.QE if f.QE is not None else 0.0
    df = pd.DataFrame(out, index=pd.Index(res.labels, name="study"))
    df["hat"] = hat
    df["weight"] = 100 * w / w.sum()
    return df


@dataclass
class EggerResult:
    stat: float
    pval: float
    df: int | None
    limit_estimate: float
    limit_ci_lb: float
    limit_ci_ub: float
    fit: RMAResult


def egger(res: RMAResult) -> EggerResult:
    """Regression test for funnel asymmetry: yi = b0 + b1 sei (same method and test as ``res``)."""
    _need_intercept_only(res, "egger")
    if res.k < 3:
        raise InputError(f"egger needs at least 3 studies (k = {res.k})")
    X = np.column_stack([np.ones(res.k), np.sqrt(res.vi)])
    f = _fit(res.yi, res.vi, X, ["intrcpt", "sei"], res.method, res.test, res.level, res.control)
    c = f.coefficients
    return EggerResult(stat=float(c.loc["sei", "stat"]), pval=float(c.loc["sei", "pval"]), df=f.df,
                       limit_estimate=float(c.loc["intrcpt", "estimate"]),
                       limit_ci_lb=float(c.loc["intrcpt", "ci_lb"]), limit_ci_ub=float(c.loc["intrcpt", "ci_ub"]), fit=f)


@dataclass
class RankTestResult:
    tau: float
    pval: float
    exact: bool


def rank_test(res: RMAResult) -> RankTestResult:
    """Begg & Mazumdar: Kendall's tau between (yi - b_FE)/sqrt(vi - v_b) and vi.

    The p-value is exact when k < 50 and there are no ties, else normal-approximate, as R's
    ``cor.test(method = "kendall")``.
    """
    _need_intercept_only(res, "rank_test")
    if res.k < 3:
        raise InputError(f"rank_test needs at least 3 studies (k = {res.k})")
    fe = rma(res.yi, res.vi, method="FE")
    vstar = res.vi - fe.se ** 2
    ystar = (res.yi - fe.estimate) / np.sqrt(vstar)
    ties = len(np.unique(ystar)) < res.k or len(np.unique(res.vi)) < res.k
    exact = res.k < 50 and not ties
    from scipy import stats
    r = stats.kendalltau(ystar, res.vi, method="exact" if exact else "asymptotic")
    return RankTestResult(tau=float(r.statistic), pval=float(r.pvalue), exact=exact)


@dataclass
class TrimFillResult:
    k0: int
    side: str
    se_k0: float
    fit: RMAResult
    filled_yi: np.ndarray
    filled_vi: np.ndarray


def trimfill(res: RMAResult, side: str | None = None, maxiter: int = 100) -> TrimFillResult:
    """Trim-and-fill (Duval & Tweedie 2000), L0 estimator; side estimated from the Egger slope."""
    _need_intercept_only(res, "trimfill")
    if res.k < 3:
        raise InputError(f"trimfill needs at least 3 studies (k = {res.k})")
    if side is None:
        X = np.column_stack([np.ones(res.k), np.sqrt(res.vi)])
        slope = _fit(res.yi, res.vi, X, ["intrcpt", "sei"], res.method, res.test, res.level, res.control).beta[1]
        side = "right" if slope < 0 else "left"
    if side not in ("left", "right"):
        raise InputError(f"side={side!r} is not allowed; allowed: 'left', 'right' or None (estimated)")
    yi = -res.yi if side == "right" else res.yi.copy()
    order = np.argsort(yi, kind="stable")
    yi, vi = yi[order], res.vi[order]
    k = res.k
    k0, k0_prev, it, se_k0 = 0, -1, 0, 0.0
    b = 0.0
    while k0 != k0_prev:
        k0_prev = k0
        it += 1
        if it > maxiter:
            raise InputError("trimfill did not converge")
        f = _fit(yi[:k - k0], vi[:k - k0], _ones(k - k0), ["intrcpt"], res.method, res.test, res.level, res.control)
        b = f.estimate
        yc = yi - b
        from scipy import stats
        ranks = stats.rankdata(np.abs(yc), method="ordinal")
        signed = np.sign(yc) * ranks
        sr = signed[signed > 0].sum()
        k0f = (4 * sr - k * (k + 1)) / (2 * k - 1)
        var_sr = (k * (k + 1) * (2 * k + 1) + 10 * k0f ** 3 + 27 * k0f ** 2 + 17 * k0f - 18 * k * k0f ** 2
                  - 18 * k * k0f + 6 * k ** 2 * k0f) / 24
        se_k0 = max(0.0, 2 * np.sqrt(max(var_sr, 0.0)) / (2 * k - 1))
        k0 = max(0, int(_round_half_even(k0f)))
    fill_y = np.array([])
    fill_v = np.array([])
    if k0 > 0:
        yc = yi - b
        mirrored = -(yc[k - k0:] - b) if side == "right" else (yc[k - k0:] - b)
        fill_y, fill_v = -mirrored, vi[k - k0:]
    all_y = np.concatenate([res.yi, fill_y])
    all_v = np.concatenate([res.vi, fill_v])
    slab = list(res.labels) + [f"Filled {j + 1}" for j in range(k0)]
    fit = rma(all_y, all_v, method=res.method, test=res.test, level=res.level, slab=slab, measure=res.measure,
              ni=None if res.ni is None or k0 else res.ni)
    return TrimFillResult(k0=k0, side=side, se_k0=float(se_k0), fit=fit, filled_yi=fill_y, filled_vi=fill_v)


def cumulative(res: RMAResult, order=None) -> pd.DataFrame:
    """Cumulative meta-analysis adding studies in ``order`` (0-based indices; default as given).

    With one study the row reports that study with tau2 = 0 and I2 = 0, as metafor's ``cumul``.
    """
    _need_intercept_only(res, "cumulative")
    order = np.arange(res.k) if order is None else np.asarray(order, dtype=int)
    if sorted(order.tolist()) != list(range(res.k)):
        raise InputError(f"order must be a permutation of 0..{res.k - 1}")
    rows = []
    for j in range(1, res.k + 1):
        idx = order[:j]
        f = _refit(res, idx)
        rows.append({"study": res.labels[idx[-1]], "k": j, "estimate": f.estimate, "se": f.se,
                     "ci_lb": f.ci_lb, "ci_ub": f.ci_ub, "pval": f.pval,
                     "tau2": _nz(f.tau2), "I2": _nz(f.I2)})
    return pd.DataFrame(rows).set_index("study")


# ---------------------------------------------------------------------------------------------

def _refit(res: RMAResult, idx, keep_mods=False) -> RMAResult:
    keep_mods = keep_mods and not res.intercept_only
    X = res.X[idx] if keep_mods else _ones(len(idx))
    names = res.coef_names if keep_mods else ["intrcpt"]
    labels = res.labels
    return _fit(res.yi[idx], res.vi[idx], X, names, res.method, res.test, res.level, res.control,
                measure=res.measure, slab=[labels[i] for i in idx])


def _single_study_fits(res) -> dict:
    """k = 2: the fit of each study alone (row i = the other study), as metafor 3.8's rma.uni at k = 1
    (tau2 = 0 and a z-based test whatever the test asked for)."""
    y, se = res.yi[::-1].astype(float), np.sqrt(res.vi[::-1].astype(float))
    z = special.ndtri(1 - (1 - res.level) / 2)
    stat = y / se
    return {"estimate": y, "se": se, "stat": stat, "pval": 2 * special.ndtr(-np.abs(stat)),
            "ci_lb": y - z * se, "ci_ub": y + z * se, "Q": np.zeros(2), "Q_pval": np.ones(2),
            "tau2": np.zeros(2), "I2": np.zeros(2), "H2": np.ones(2)}


def _loo_matrices(res):
    """Row i holds the data without study i (k x (k-1)); only for the case-deletion tools."""
    k = res.k
    keep = ~np.eye(k, dtype=bool)
    return res.yi[None, :].repeat(k, 0)[keep].reshape(k, k - 1), res.vi[None, :].repeat(k, 0)[keep].reshape(k, k - 1)


def _without(k, i):
    return np.concatenate([np.arange(i), np.arange(i + 1, k)])


def _nz(x):
    return 0.0 if x is None else x


def _round_half_even(x):
    """R's round() (IEC 60559: halves to even)."""
    return float(np.round(x))


def _need_intercept_only(res, what):
    if not res.intercept_only:
        raise InputError(f"{what} is defined here for intercept-only models; refit without mods")
