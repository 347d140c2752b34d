"""Effect sizes and their sampling variances (metafor's ``escalc``), and back-transformations.

Measure codes, argument names and defaults follow metafor 3.8 (Viechtbauer 2010, J Stat Softw
36(3)):

- single proportions: PR (raw), PLO (logit), PAS (arcsine), PFT (Freeman-Tukey double arcsine);
- pre-post (paired) continuous: MC (raw mean change), SMCR (change standardised by the SD of the
  first measurement, ``sd1i``), SMCC (standardised by the SD of the change), ROMC (log ratio of
  means); ``ri`` is the correlation between the two measurements;
- two groups: MD, SMD (Hedges' g), ROM (log ratio of means), RR (log), OR (log), RD.

Continuity correction (metafor's defaults ``add=0.5, to="only0"``): 0.5 is added to every cell of a
2x2 table that has a zero cell (RR, OR, RD), and to ``xi`` and ``ni - xi`` of a proportion with
``xi`` equal to 0 or ``ni`` (PR, PLO); never for PAS and PFT, whose transformations handle 0 and n.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.special import expit, gammaln, ndtri

from .errors import InputError, MissingValueWarning

PROPORTION_MEASURES = ("PR", "PLO", "PAS", "PFT")
PREPOST_MEASURES = ("MC", "SMCR", "SMCC", "ROMC")
TWO_GROUP_CONTINUOUS = ("MD", "SMD", "ROM")
TWO_GROUP_BINARY = ("RR", "OR", "RD")
MEASURES = PROPORTION_MEASURES + PREPOST_MEASURES + TWO_GROUP_CONTINUOUS + TWO_GROUP_BINARY
TO_OPTIONS = ("only0", "all", "if0all", "none")

_REQUIRED = {
    **{m: ("xi", "ni") for m in PROPORTION_MEASURES},
    **{m: ("m1i", "m2i", "sd1i", "sd2i", "ni", "ri") for m in PREPOST_MEASURES},
    **{m: ("m1i", "m2i", "sd1i", "sd2i", "n1i", "n2i") for m in TWO_GROUP_CONTINUOUS},
}
_ALL_INPUTS = ("xi", "ni", "ai", "bi", "ci", "di", "n1i", "n2i", "m1i", "m2i", "sd1i", "sd2i", "ri")


def escalc(measure: str, *, data: pd.DataFrame | None = None, add: float = 0.5, to: str = "only0",
           vtype: str = "LS", slab=None, **inputs) -> pd.DataFrame:
    """Compute effect sizes ``yi`` and sampling variances ``vi`` (metafor ``escalc``).

    Inputs use metafor's argument names (``xi, ni`` for proportions; ``m1i, m2i, sd1i, sd2i, ni, ri``
    for pre-post data, ``m1i`` being the later time point; ``ai, bi, ci, di`` or ``ai, n1i, ci, n2i``
    for 2x2 tables; ``m1i, m2i, sd1i, sd2i, n1i, n2i`` for two groups). With ``data``, an input given
    as a string is the name of a column of ``data``. Returns a DataFrame with columns ``yi`` and
    ``vi`` (indexed by ``slab`` when given).
    """
    if not isinstance(measure, str) or measure.upper() not in MEASURES:
        raise InputError(f"measure={measure!r} is not supported; allowed: {', '.join(MEASURES)}")
    measure = measure.upper()
    if to not in TO_OPTIONS:
        raise InputError(f"to={to!r} is not allowed; allowed: {', '.join(TO_OPTIONS)}")
    if vtype != "LS":
        raise InputError(f"vtype={vtype!r} is not supported; allowed: 'LS' (large-sample variances)")
    add = _check_scalar("add", add, lower=0.0)
    unknown = set(inputs) - set(_ALL_INPUTS)
    if unknown:
        raise InputError(f"unknown argument(s) {sorted(unknown)} for escalc; allowed inputs: "
                         f"{', '.join(_ALL_INPUTS)}")
    arr = {name: _as_array(name, value, data) for name, value in inputs.items() if value is not None}
    if measure in TWO_GROUP_BINARY:
        arr = _complete_2x2(arr)
        needed = ("ai", "bi", "ci", "di")
    else:
        needed = _REQUIRED[measure]
    missing = [n for n in needed if n not in arr]
    if missing:
        raise InputError(f"measure {measure} needs argument(s) {', '.join(missing)} "
                         f"(required: {', '.join(needed)})")
    arr = {n: arr[n] for n in needed}
    _check_lengths(arr)

    if measure in PROPORTION_MEASURES:
        yi, vi = _proportion(measure, arr["xi"], arr["ni"], add, to)
    elif measure in PREPOST_MEASURES:
        yi, vi = _prepost(measure, **arr)
    elif measure in TWO_GROUP_CONTINUOUS:
        yi, vi = _two_group_continuous(measure, **arr)
    else:
        yi, vi = _two_group_binary(measure, arr["ai"], arr["bi"], arr["ci"], arr["di"], add, to)
    out = pd.DataFrame({"yi": yi, "vi": vi})
    if slab is not None:
        slab = _as_array("slab", slab, data, numeric=False)
        if len(slab) != len(out):
            raise InputError(f"slab has length {len(slab)} but the inputs have length {len(out)}")
        out.index = pd.Index(slab, name="study")
    _missing_if_not_finite(out, measure, to)
    out.attrs["measure"] = measure
    if measure in PROPORTION_MEASURES:
        out.attrs["ni"] = arr["ni"].copy()
    return out


# ---------------------------------------------------------------------------------------------
# back-transformations (metafor's transf.*)

def transf_ilogit(x):
    """Inverse logit: 1 / (1 + exp(-x))."""
    return expit(np.asarray(x, dtype=float))        # no overflow for a large |x|


def transf_exp(x):
    """Exponential (back from log RR, log OR, log ratio of means)."""
    return np.exp(np.asarray(x, dtype=float))


def transf_iarcsin(x):
    """Inverse arcsine square-root: sin(x)^2, clipped to [0, 1] outside [0, pi/2]."""
    x = np.asarray(x, dtype=float)
    out = np.sin(x) ** 2
    out = np.where(x < 0, 0.0, out)
    return np.where(x > np.arcsin(1.0), 1.0, out)


def transf_pft(p, n):
    """Freeman-Tukey double arcsine of a proportion ``p`` with sample size ``n``."""
    p = np.asarray(p, dtype=float)
    x = p * n
    return 0.5 * (np.arcsin(np.sqrt(x / (n + 1))) + np.arcsin(np.sqrt((x + 1) / (n + 1))))


def transf_ipft(x, n):
    """Inverse Freeman-Tukey double arcsine at sample size ``n`` (Miller 1978)."""
    z = np.asarray(x, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sin(2 * z)
        inner = 1 - (s + (s - 1 / s) / n) ** 2
        out = 0.5 * (1 - np.sign(np.cos(2 * z)) * np.sqrt(inner))
    out = np.where(np.isnan(out), np.nan, out)
    out = np.where(z > transf_pft(1.0, n), 1.0, out)
    return np.where(z < transf_pft(0.0, n), 0.0, out)


def transf_ipft_hm(x, ni):
    """Inverse Freeman-Tukey at the harmonic mean of the study sizes ``ni`` (Miller 1978)."""
    ni = np.asarray(ni, dtype=float)
    if ni.size == 0 or np.any(ni <= 0) or np.any(~np.isfinite(ni)):
        raise InputError("ni for the Freeman-Tukey back-transformation must be positive and finite")
    nhm = 1.0 / np.mean(1.0 / ni)
    return transf_ipft(x, nhm)


TRANSFORMS = {
    "none": lambda x, **_: np.asarray(x, dtype=float),
    "ilogit": lambda x, **_: transf_ilogit(x),
    "exp": lambda x, **_: transf_exp(x),
    "iarcsin": lambda x, **_: transf_iarcsin(x),
    "ipft_hm": lambda x, ni=None, **_: transf_ipft_hm(x, ni),
}

#: natural back-transformation of each measure (what a reader wants on the axis)
MEASURE_TRANSFORM = {"PR": "none", "PLO": "ilogit", "PAS": "iarcsin", "PFT": "ipft_hm",
                     "MC": "none", "SMCR": "none", "SMCC": "none", "ROMC": "exp",
                     "MD": "none", "SMD": "none", "ROM": "exp", "RR": "exp", "OR": "exp", "RD": "none"}


def transform(x, name: str, ni=None):
    """Apply the named back-transformation (one of ``TRANSFORMS``)."""
    if name not in TRANSFORMS:
        raise InputError(f"transform={name!r} is not known; allowed: {', '.join(TRANSFORMS)}")
    if name == "ipft_hm" and ni is None:
        raise InputError("transform 'ipft_hm' needs ni (the study sample sizes)")
    return TRANSFORMS[name](x, ni=ni)


def cmicalc(mi):
    """Exact small-sample correction factor c(m) = Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2)) (Hedges 1981)."""
    mi = np.asarray(mi, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.exp(gammaln(mi / 2) - 0.5 * np.log(mi / 2) - gammaln((mi - 1) / 2))


# ---------------------------------------------------------------------------------------------
# helpers

def wilson_ci(x: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson (1927) score interval for the proportion x / n, without continuity correction."""
    z = float(ndtri(1 - (1 - level) / 2))
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(centre - half), float(centre + half)


def check_proportions(xi, ni):
    """Non-negative event counts, positive sample sizes, events <= n (messages name the position)."""
    _check_counts("xi", xi)
    _check_counts("ni", ni, positive=True)
    over = np.nonzero(xi > ni)[0]
    if over.size:
        i = over[0]
        raise InputError(f"xi (events) > ni at position {i}: xi={xi[i]:g}, ni={ni[i]:g}; events cannot "
                         "exceed the number of patients")


def _proportion(measure, xi, ni, add, to):
    check_proportions(xi, ni)
    mi = ni - xi
    if measure in ("PR", "PLO"):
        xi, mi = _correct((xi, mi), add, to, zero=(xi == 0) | (mi == 0))
        ni = xi + mi
    pi = xi / ni
    with np.errstate(divide="ignore", invalid="ignore"):
        if measure == "PR":
            yi, vi = pi, pi * (1 - pi) / ni
        elif measure == "PLO":
            yi, vi = np.log(pi / (1 - pi)), 1 / (ni * pi * (1 - pi))
        elif measure == "PAS":
            yi, vi = np.arcsin(np.sqrt(pi)), 1 / (4 * ni)
        else:  # PFT
            yi = 0.5 * (np.arcsin(np.sqrt(xi / (ni + 1))) + np.arcsin(np.sqrt((xi + 1) / (ni + 1))))
            vi = 1 / (4 * ni + 2)
    return yi, vi


def _prepost(measure, m1i, m2i, sd1i, sd2i, ni, ri):
    _check_sd("sd1i", sd1i)
    _check_sd("sd2i", sd2i)
    _check_counts("ni", ni, positive=True)
    bad = np.nonzero((ri < -1) | (ri > 1))[0]
    if bad.size:
        raise InputError(f"ri (pre-post correlation) must lie in [-1, 1]; got {ri[bad[0]]:g} at position {bad[0]}")
    if measure == "MC":
        yi = m1i - m2i
        vi = (sd1i ** 2 + sd2i ** 2 - 2 * ri * sd1i * sd2i) / ni
    elif measure == "SMCR":
        _check_positive("sd1i", sd1i, "the standardiser of SMCR")
        yi = cmicalc(ni - 1) * (m1i - m2i) / sd1i
        vi = 2 * (1 - ri) / ni + yi ** 2 / (2 * ni)
    elif measure == "SMCC":
        sddi = np.sqrt(sd1i ** 2 + sd2i ** 2 - 2 * ri * sd1i * sd2i)
        _check_positive("SD of the change (from sd1i, sd2i, ri)", sddi, "the standardiser of SMCC")
        yi = cmicalc(ni - 1) * (m1i - m2i) / sddi
        vi = 1 / ni + yi ** 2 / (2 * ni)
    else:  # ROMC
        _check_positive("m1i", m1i, "ROMC (log ratio of means)")
        _check_positive("m2i", m2i, "ROMC (log ratio of means)")
        yi = np.log(m1i / m2i)
        vi = (sd1i ** 2 / (ni * m1i ** 2) + sd2i ** 2 / (ni * m2i ** 2)
              - 2 * ri * sd1i * sd2i / (m1i * m2i * ni))
    return yi, vi


def _two_group_continuous(measure, m1i, m2i, sd1i, sd2i, n1i, n2i):
    _check_sd("sd1i", sd1i)
    _check_sd("sd2i", sd2i)
    _check_counts("n1i", n1i, positive=True)
    _check_counts("n2i", n2i, positive=True)
    if measure == "MD":
        return m1i - m2i, sd1i ** 2 / n1i + sd2i ** 2 / n2i
    if measure == "SMD":
        sdpi = np.sqrt(((n1i - 1) * sd1i ** 2 + (n2i - 1) * sd2i ** 2) / (n1i + n2i - 2))
        _check_positive("pooled SD (from sd1i, sd2i)", sdpi, "the standardiser of SMD")
        yi = cmicalc(n1i + n2i - 2) * (m1i - m2i) / sdpi
        return yi, 1 / n1i + 1 / n2i + yi ** 2 / (2 * (n1i + n2i))
    _check_positive("m1i", m1i, "ROM (log ratio of means)")
    _check_positive("m2i", m2i, "ROM (log ratio of means)")
    return np.log(m1i / m2i), sd1i ** 2 / (n1i * m1i ** 2) + sd2i ** 2 / (n2i * m2i ** 2)


def _two_group_binary(measure, ai, bi, ci, di, add, to):
    for name, v in (("ai", ai), ("bi", bi), ("ci", ci), ("di", di)):
        _check_counts(name, v)
    ai, bi, ci, di = _correct((ai, bi, ci, di), add, to, zero=(ai == 0) | (bi == 0) | (ci == 0) | (di == 0))
    n1i, n2i = ai + bi, ci + di
    p1, p2 = ai / n1i, ci / n2i
    with np.errstate(divide="ignore", invalid="ignore"):
        if measure == "RR":
            return np.log(p1 / p2), 1 / ai - 1 / n1i + 1 / ci - 1 / n2i
        if measure == "OR":
            return np.log((ai * di) / (bi * ci)), 1 / ai + 1 / bi + 1 / ci + 1 / di
    return p1 - p2, p1 * (1 - p1) / n1i + p2 * (1 - p2) / n2i


def _missing_if_not_finite(out, measure, to):
    """As metafor: a yi or vi that is +-Inf or NaN (a zero cell with ``to="none"``, or ``add=0``) becomes
    missing (NaN in both), with a warning naming the studies; ``rma`` then leaves them out, with a warning."""
    bad = ~(np.isfinite(out["yi"].to_numpy()) & np.isfinite(out["vi"].to_numpy()))
    if not bad.any():
        return
    where = [str(s) for s in out.index[bad]] if out.index.name == "study" else \
        [f"position {i}" for i in np.nonzero(bad)[0]]
    out.loc[bad, ["yi", "vi"]] = np.nan
    warnings.warn(f"escalc({measure}): yi/vi not finite for {', '.join(where)} (a zero cell with to={to!r}); "
                  "set to missing, as metafor does. rma() leaves these studies out; use to='only0' (the default) "
                  "to add a continuity correction instead.", MissingValueWarning, stacklevel=3)


def _complete_2x2(arr):
    """Accept ai, ci with n1i, n2i in place of bi, di (metafor does the same)."""
    arr = dict(arr)
    for event, nonevent, total in (("ai", "bi", "n1i"), ("ci", "di", "n2i")):
        if nonevent not in arr and event in arr and total in arr:
            _check_counts(total, arr[total], positive=True)
            diff = arr[total] - arr[event]
            bad = np.nonzero(diff < 0)[0]
            if bad.size:
                i = bad[0]
                raise InputError(f"{event} (events) > {total} at position {i}: {event}={arr[event][i]:g}, "
                                 f"{total}={arr[total][i]:g}; events cannot exceed the group size")
            arr[nonevent] = diff
    return arr


def _correct(cells, add, to, zero):
    if to == "none" or add == 0:
        return cells
    if to == "all":
        rows = np.ones_like(zero, dtype=bool)
    elif to == "only0":
        rows = zero
    else:  # if0all
        rows = np.ones_like(zero, dtype=bool) if np.any(zero) else np.zeros_like(zero, dtype=bool)
    return tuple(np.where(rows, c + add, c) for c in cells)


def _as_array(name, value, data, numeric=True):
    if isinstance(value, str) and data is not None:
        if value not in data.columns:
            raise InputError(f"{name}={value!r} is not a column of data; columns: {', '.join(map(str, data.columns))}")
        value = data[value]
    if not numeric:
        return np.asarray(value)
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric; got {value!r}") from None
    a = np.atleast_1d(a)
    if a.ndim != 1:
        raise InputError(f"{name} must be one-dimensional; got shape {a.shape}")
    bad = np.nonzero(~np.isfinite(a))[0]
    if bad.size:
        raise InputError(f"{name} has a missing or non-finite value at position {bad[0]} ({a[bad[0]]}); "
                         "remove the study or supply the value")
    return a


def _check_lengths(arr):
    lengths = {n: len(a) for n, a in arr.items()}
    if len(set(lengths.values())) > 1:
        raise InputError("input lengths differ: " + ", ".join(f"{n}={l}" for n, l in lengths.items())
                         + "; every input needs one value per study")
    if lengths and next(iter(lengths.values())) == 0:
        raise InputError("no studies: the inputs are empty")


def _check_counts(name, a, positive=False):
    bad = np.nonzero(a < (1 if positive else 0))[0]
    if bad.size:
        what = "positive" if positive else "non-negative"
        raise InputError(f"{name} must be {what} counts; got {a[bad[0]]:g} at position {bad[0]}")


def _check_sd(name, a):
    bad = np.nonzero(a < 0)[0]
    if bad.size:
        raise InputError(f"{name} (standard deviation) must be >= 0; got {a[bad[0]]:g} at position {bad[0]}")


def _check_positive(name, a, why):
    bad = np.nonzero(~(a > 0))[0]
    if bad.size:
        raise InputError(f"{name} must be > 0 for {why}; got {a[bad[0]]:g} at position {bad[0]}")


def _check_scalar(name, value, lower=None):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number; got {value!r}") from None
    if not np.isfinite(v) or (lower is not None and v < lower):
        raise InputError(f"{name} must be a finite number >= {lower}; got {value!r}")
    return v
