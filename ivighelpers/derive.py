"""Derived values, each by a stated method, each flagged so analyses can exclude it.

- ``count_from_percent``: events = round(percent x n / 100), when a paper prints only a percentage;
- ``sd_from_ci``: SD of a (change) mean from its confidence interval, SD = sqrt(n) (ub - lb) / (2 t),
  t the two-sided quantile on n - 1 df (Cochrane Handbook 6.5.2.2);
- ``sd_from_p``: SD of a paired mean change from an exact two-sided p-value, t = t^-1(1 - p/2; n - 1),
  SE = |mean change| / t, SD = SE sqrt(n) (Cochrane Handbook 6.5.2.3);
- ``wan_range`` / ``wan_iqr``: mean and SD from median with range or with quartiles (Wan et al. 2014,
  BMC Med Res Methodol 14:135): mean = (a + 2m + b)/4, SD = (b - a) / (2 Phi^-1((n - 0.375)/(n + 0.25)));
  mean = (q1 + m + q3)/3, SD = (q3 - q1) / (2 Phi^-1((0.75 n - 0.125)/(n + 0.25)));
- ``luo_mean_range`` / ``luo_mean_iqr``: the more accurate means of Luo et al. 2018 (Stat Methods Med Res
  27:1785): w (a + b)/2 + (1 - w) m with w = 4 / (4 + n^0.75); (0.7 + 0.39/n)(q1 + q3)/2 + (0.3 - 0.39/n) m.
  ``derive_outcomes`` uses Luo's mean with Wan's SD (as R's meta ``mean_sd_iqr``, method.mean = "Luo");
- ``sd_from_se``: SD = SE sqrt(n); ``sd_from_t``: SE = |mean change| / |t| (paired t on n - 1 df);
- ``sd_from_p`` with a threshold ('p < 0.05'): the bound is used as if exact, which over-states the SD
  (conservative, Handbook 6.5.2.3), flagged ``sd_from_p_threshold``.

``derive_outcomes`` applies them to a copy of the outcomes table, never to the source file, and records
in ``derived`` which methods filled which columns.
"""

from __future__ import annotations

import math
import re

import pandas as pd
from scipy import special

from .errors import InputError


def count_from_percent(percent: float, n: int) -> int:
    """Events from a printed percentage and its denominator."""
    if n is None or n <= 0 or not (0 <= percent <= 100):
        raise InputError(f"count_from_percent needs 0 <= percent <= 100 and n > 0; got percent={percent}, n={n}")
    return int(math.floor(percent * n / 100 + 0.5))


def sd_from_ci(lb: float, ub: float, n: int, level: float = 0.95) -> float:
    """SD from the CI of a mean (t quantile on n - 1 df)."""
    if n is None or n < 2 or ub < lb or not (0 < level < 1):
        raise InputError(f"sd_from_ci needs n >= 2, lb <= ub and 0 < level < 1; got lb={lb}, ub={ub}, n={n}, level={level}")
    t = special.stdtrit(n - 1, 1 - (1 - level) / 2)
    return math.sqrt(n) * (ub - lb) / (2 * t)


def sd_from_p(mean_change: float, p: float, n: int) -> float:
    """SD of a paired change from its exact two-sided p-value (paired t test on n - 1 df)."""
    if n is None or n < 2 or not (0 < p < 1):
        raise InputError(f"sd_from_p needs n >= 2 and an exact p in (0, 1); got p={p}, n={n}")
    t = special.stdtrit(n - 1, 1 - p / 2)
    return abs(mean_change) / t * math.sqrt(n)


def wan_range(median: float, lo: float, hi: float, n: int) -> tuple[float, float]:
    """(mean, SD) from median, minimum, maximum and n (Wan et al. 2014, scenario S1)."""
    if n is None or n < 2 or not (lo <= median <= hi):
        raise InputError(f"wan_range needs n >= 2 and min <= median <= max; got {lo}, {median}, {hi}, n={n}")
    xi = 2 * special.ndtri((n - 0.375) / (n + 0.25))
    return (lo + 2 * median + hi) / 4, (hi - lo) / xi


def wan_iqr(median: float, q1: float, q3: float, n: int) -> tuple[float, float]:
    """(mean, SD) from median, quartiles and n (Wan et al. 2014, scenario S3)."""
    if n is None or n < 2 or not (q1 <= median <= q3):
        raise InputError(f"wan_iqr needs n >= 2 and q1 <= median <= q3; got {q1}, {median}, {q3}, n={n}")
    eta = 2 * special.ndtri((0.75 * n - 0.125) / (n + 0.25))
    return (q1 + median + q3) / 3, (q3 - q1) / eta


def luo_mean_range(median: float, lo: float, hi: float, n: int) -> float:
    """Mean from median, minimum, maximum and n (Luo et al. 2018, scenario S1)."""
    if n is None or n < 2 or not (lo <= median <= hi):
        raise InputError(f"luo_mean_range needs n >= 2 and min <= median <= max; got {lo}, {median}, {hi}, n={n}")
    w = 4 / (4 + n ** 0.75)
    return w * (lo + hi) / 2 + (1 - w) * median


def luo_mean_iqr(median: float, q1: float, q3: float, n: int) -> float:
    """Mean from median, quartiles and n (Luo et al. 2018, scenario S3, equation 15)."""
    if n is None or n < 2 or not (q1 <= median <= q3):
        raise InputError(f"luo_mean_iqr needs n >= 2 and q1 <= median <= q3; got {q1}, {median}, {q3}, n={n}")
    return (0.7 + 0.39 / n) * (q1 + q3) / 2 + (0.3 - 0.39 / n) * median


def sd_from_se(se: float, n: int) -> float:
    """SD of a mean from its standard error: SD = SE sqrt(n) (Handbook 6.5.2.2)."""
    if n is None or n < 1 or not se >= 0:
        raise InputError(f"sd_from_se needs n >= 1 and SE >= 0; got se={se}, n={n}")
    return se * math.sqrt(n)


def sd_from_t(mean_change: float, t: float, n: int) -> float:
    """SD of a paired change from its t statistic: SE = |mean change| / |t|, SD = SE sqrt(n) (Handbook 6.5.2.3)."""
    if n is None or n < 2 or t == 0:
        raise InputError(f"sd_from_t needs n >= 2 and t != 0; got t={t}, n={n}")
    return abs(mean_change) / abs(t) * math.sqrt(n)


_THRESHOLD_P = re.compile(r"^\s*(?:p\s*)?<\s*(0?\.\d+)\s*$", re.I)


def parse_threshold_p(text: str) -> float | None:
    """The bound of a threshold p-value ('<0.05', 'p < 0.001'); None otherwise."""
    m = _THRESHOLD_P.match(text or "")
    return float(m.group(1)) if m else None


_EXACT_P = re.compile(r"^\s*(?:p\s*=\s*)?(0?\.\d+|1(?:\.0+)?)\s*$", re.I)


def parse_exact_p(text: str) -> float | None:
    """An exact p-value ('0.03', 'p = 0.03'); None for bounds ('<0.05') or anything else."""
    m = _EXACT_P.match(text or "")
    return float(m.group(1)) if m else None


def derive_outcomes(oc: pd.DataFrame) -> pd.DataFrame:
    """Copy of the outcomes with derived values filled in and flagged in ``derived`` (';'-separated)."""
    out = oc.copy()
    flags = [[] for _ in range(len(out))]
    out["events"] = out["events"].astype("Float64")
    for i in range(len(out)):
        r = out.iloc[i]
        n = None if pd.isna(r["n"]) else int(r["n"])
        if pd.isna(r["events"]) and pd.notna(r["percent"]) and n:
            out.iloc[i, out.columns.get_loc("events")] = count_from_percent(float(r["percent"]), n)
            flags[i].append("count_from_percent")
        for t in ("pre", "post"):
            if pd.isna(r[f"mean_{t}"]) and pd.notna(r[f"median_{t}"]) and n and n >= 2:
                if pd.notna(r[f"q1_{t}"]) and pd.notna(r[f"q3_{t}"]):
                    _, sd = wan_iqr(r[f"median_{t}"], r[f"q1_{t}"], r[f"q3_{t}"], n)
                    m = luo_mean_iqr(r[f"median_{t}"], r[f"q1_{t}"], r[f"q3_{t}"], n)
                    method = "luo_mean_wan_sd_iqr"
                elif pd.notna(r[f"min_{t}"]) and pd.notna(r[f"max_{t}"]):
                    _, sd = wan_range(r[f"median_{t}"], r[f"min_{t}"], r[f"max_{t}"], n)
                    m = luo_mean_range(r[f"median_{t}"], r[f"min_{t}"], r[f"max_{t}"], n)
                    method = "luo_mean_wan_sd_range"
                else:
                    continue
                out.iloc[i, out.columns.get_loc(f"mean_{t}")] = m
                if pd.isna(r[f"sd_{t}"]):
                    out.iloc[i, out.columns.get_loc(f"sd_{t}")] = sd
                flags[i].append(f"{method}_{t}")
        if pd.isna(r["sd_change"]) and pd.notna(r["mean_change"]) and n and n >= 2:
            if pd.notna(r["ci_lb"]) and pd.notna(r["ci_ub"]) and r["ci_lb"] <= r["mean_change"] <= r["ci_ub"]:
                out.iloc[i, out.columns.get_loc("sd_change")] = sd_from_ci(r["ci_lb"], r["ci_ub"], n, r["ci_level"] if pd.notna(r["ci_level"]) else 0.95)
                flags[i].append("sd_from_ci")
            elif parse_exact_p(r["p_value"]) is not None and 0 < parse_exact_p(r["p_value"]) < 1 and r["mean_change"] != 0:
                out.iloc[i, out.columns.get_loc("sd_change")] = sd_from_p(r["mean_change"], parse_exact_p(r["p_value"]), n)
                flags[i].append("sd_from_p")
            elif parse_threshold_p(r["p_value"]) is not None and r["mean_change"] != 0:
                out.iloc[i, out.columns.get_loc("sd_change")] = sd_from_p(r["mean_change"], parse_threshold_p(r["p_value"]), n)
                flags[i].append("sd_from_p_threshold")
    out["derived"] = [";".join(f) for f in flags]
    return out
