"""Synthesis without meta-analysis (SWiM; Campbell et al. 2020, BMJ 368:l6890) and answers where SDs
are missing (Cochrane Handbook ch. 6.5.2 and 12.2).

- ``vote_count``: vote counting on the direction of effect (Handbook 12.2.2.5): the number of studies
  whose effect points one way, a two-sided sign test (exact binomial, H0 p = 0.5) and the Wilson CI
  of the proportion of studies favouring that direction. Studies with no change do not vote.
- ``stouffer``: combined one-sided p-value, Z = sum w_i z_i / sqrt(sum w_i^2), weights sqrt(n_i)
  (Stouffer 1949; Zaykin 2011). It says whether there is an effect in at least one study, not how large.
- ``romc_grid``: ratio of means for paired pre-post data (metafor's ROMC, Lajeunesse 2011) when SDs are
  missing: SD imputed as CV x mean at both times and the pre-post correlation r imputed; pooled by
  ``rma`` over a grid of (CV, r), so the reader sees how much the interval depends on the assumption.
  With SD = CV m at both times, vi = 2 CV^2 (1 - r) / n.
- ``ipd_summary``: exact n, means, SDs, mean change, SD of the change and pre-post correlation from
  per-patient values (individual patient data).
- ``effect_direction``: the table behind an effect-direction plot (studies x outcomes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from .effects import escalc, wilson_ci
from .errors import InputError
from .meta import rma
from .text import p_text


@dataclass
class VoteCount:
    """Result of ``vote_count``: counts by direction, sign-test p and the CI of the proportion."""

    direction: str
    favouring: int
    against: int
    no_change: int
    proportion: float
    ci_lb: float
    ci_ub: float
    pval: float
    level: float

    @property
    def voting(self) -> int:
        return self.favouring + self.against

    def tally(self) -> str:
        """Every study counted, none dropped: '5 of 6 studies show a fall, 1 no change'."""
        total = self.favouring + self.against + self.no_change
        rest = ([f"{self.against} a {'rise' if self.direction == 'fall' else 'fall'}"] if self.against else []) + \
            ([f"{self.no_change} no change"] if self.no_change else [])
        return (f"{self.favouring} of {total} {'study shows' if total == 1 else 'studies show'} a {self.direction}"
                + (", " + ", ".join(rest) if rest else ""))

    def sentence(self, what: str = "studies") -> str:
        lv = f"{round(self.level * 100):g}%"
        what = what[:-1] if self.voting == 1 and what.endswith("s") and what != "studies" else \
            ("study" if self.voting == 1 and what == "studies" else what)
        txt = (f"{self.favouring} of {self.voting} {what} with a direction showed a {self.direction} "
               f"({100 * self.proportion:.0f}%, {lv} CI {100 * self.ci_lb:.0f}% to {100 * self.ci_ub:.0f}%; "
               f"sign test {p_text(self.pval)})")
        if self.no_change:
            txt += (f"; {self.no_change} {'study' if self.no_change == 1 else 'studies'} showed no change (counted above, "
                    "left out of the sign test, which compares falls with rises)")
        return txt


def vote_count(effects, *, direction: str = "fall", level: float = 0.95) -> VoteCount:
    """Vote counting on the sign of ``effects`` (post minus pre): ``direction`` 'fall' counts negative values
    as favouring, 'rise' positive ones. Exact two-sided sign test (what ``scipy.stats.binomtest`` gives at p = 0.5),
    Wilson score CI (Wilson 1927)."""
    if direction not in ("fall", "rise"):
        raise InputError(f"direction must be 'fall' or 'rise'; got {direction!r}")
    e = np.asarray(effects, dtype=float)
    if e.ndim != 1 or not np.all(np.isfinite(e)):
        raise InputError("effects must be a 1-d list of finite numbers (one per study)")
    fav = int(np.sum(e < 0) if direction == "fall" else np.sum(e > 0))
    ag = int(np.sum(e > 0) if direction == "fall" else np.sum(e < 0))
    nc = int(np.sum(e == 0))
    n = fav + ag
    if n == 0:
        raise InputError("vote_count needs at least one study with a non-zero change")
    lo, hi = wilson_ci(fav, n, level)
    lo, hi = max(0.0, lo), min(1.0, hi)
    return VoteCount(direction=direction, favouring=fav, against=ag, no_change=nc, proportion=fav / n,
                     ci_lb=lo, ci_ub=hi, pval=_sign_test(fav, n), level=level)


@dataclass
class StoufferResult:
    z: float
    pval: float
    k: int
    weights: np.ndarray

    def sentence(self, direction: str = "fall") -> str:
        return (f"Stouffer's combined test (weights sqrt(n), k = {self.k}): z = {self.z:.2f}, one-sided "
                f"{p_text(self.pval)} for a {direction} in at least one study; it says nothing about its size")


def stouffer(pvalues, n, *, one_sided: bool = True) -> StoufferResult:
    """Weighted Stouffer Z of one-sided p-values (each in the hypothesised direction), weights sqrt(n)."""
    p = np.asarray(pvalues, dtype=float)
    w = np.sqrt(np.asarray(n, dtype=float))
    if p.shape != w.shape or p.ndim != 1 or len(p) == 0:
        raise InputError("stouffer needs one p-value and one n per study (equal, non-zero lengths)")
    if not np.all((p > 0) & (p < 1)):
        raise InputError("p-values must lie strictly between 0 and 1")
    if not np.all(w > 0):
        raise InputError("n must be positive for every study")
    z = special.ndtri(1 - p)
    Z = float(np.sum(w * z) / math.sqrt(np.sum(w ** 2)))
    return StoufferResult(z=Z, pval=float(special.ndtr(-Z)), k=len(p), weights=w)


def romc_grid(m_pre, m_post, n, *, cv=(0.5, 0.75, 1.0, 1.25, 1.5), r=(0.3, 0.5, 0.7), method: str = "REML",
              test: str = "z", level: float = 0.95) -> pd.DataFrame:
    """Pooled ratio of means (post/pre) over a grid of imputed CV and pre-post correlation.

    Returns one row per (cv, r): ratio, CI, tau2, I2 on the ratio scale (exp of the pooled log ratio).
    """
    m1, m2, ni = (np.asarray(a, dtype=float) for a in (m_post, m_pre, n))
    if not (m1.shape == m2.shape == ni.shape) or m1.ndim != 1 or len(m1) == 0:
        raise InputError("m_pre, m_post and n need one value per study (equal, non-zero lengths)")
    if not (np.all(m1 > 0) and np.all(m2 > 0)):
        raise InputError("ratio of means needs positive means before and after")
    rows = []
    for c in cv:
        if not c > 0:
            raise InputError(f"cv must be > 0; got {c}")
        for rr in r:
            if not -1 < rr < 1:
                raise InputError(f"r must be in (-1, 1); got {rr}")
            es = escalc("ROMC", m1i=m1, m2i=m2, sd1i=c * m1, sd2i=c * m2, ni=ni, ri=np.full(len(m1), rr))
            fit = rma(es["yi"].to_numpy(), es["vi"].to_numpy(), method=method, test=test, level=level)
            rows.append({"cv": c, "r": rr, "k": fit.k, "ratio": math.exp(fit.estimate),
                         "ci_lb": math.exp(fit.ci_lb), "ci_ub": math.exp(fit.ci_ub),
                         "tau2": fit.tau2, "I2": fit.I2})
    return pd.DataFrame(rows)


def ipd_summary(pre, post) -> dict:
    """Exact summary of paired per-patient values: n, means, SDs (n - 1), mean and SD of change, r."""
    a = np.asarray(pre, dtype=float)
    b = np.asarray(post, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise InputError("pre and post need one value per patient (equal lengths)")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = len(a)
    if n < 2:
        raise InputError(f"ipd_summary needs at least 2 patients with both values; got {n}")
    d = b - a
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    r = float(np.corrcoef(a, b)[0, 1]) if sa > 0 and sb > 0 else float("nan")
    return {"n": n, "mean_pre": float(a.mean()), "sd_pre": float(sa), "mean_post": float(b.mean()),
            "sd_post": float(sb), "mean_change": float(d.mean()), "sd_change": float(d.std(ddof=1)), "r": r}


def effect_direction(df: pd.DataFrame, *, study: str = "study", outcome: str = "outcome",
                     change: str = "change", good: str = "fall") -> pd.DataFrame:
    """Studies x outcomes table of arrows: '▲' rise, '▼' fall, '◆' no change; blank where not reported.

    ``good`` says which direction is benefit (for CK 'fall', for strength 'rise') and adds a column
    'benefit' per cell (True/False) used to colour the plot.
    """
    if good not in ("fall", "rise"):
        raise InputError(f"good must be 'fall' or 'rise'; got {good!r}")
    for c in (study, outcome, change):
        if c not in df.columns:
            raise InputError(f"effect_direction: column {c!r} missing; columns are {list(df.columns)}")
    out = df[[study, outcome, change]].copy()
    out["arrow"] = np.select([out[change] > 0, out[change] < 0], ["▲", "▼"], "◆")
    out["benefit"] = (out[change] < 0) if good == "fall" else (out[change] > 0)
    return out


def _sign_test(k: int, n: int) -> float:
    """Exact two-sided binomial test of k successes in n at p = 0.5: the probability of a split at least as
    uneven, summed in integers (the distribution is symmetric, so both tails are equal)."""
    m = min(k, n - k)
    if 2 * m == n:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, j) for j in range(m + 1)) / 2 ** n)
