"""Root finding as R does it, so iterative limits match metafor to the last digit.

``zeroin`` is Brent's (1973) zero finder as implemented in R's ``R_zeroin2`` (the engine of
``uniroot``): the same interpolation rules, stopping rule and tolerance, so that a limit that
metafor reports after ``uniroot(..., tol=...)`` is reproduced, not merely approximated.
"""

from __future__ import annotations


_EPS = 2.220446049250313e-16


def zeroin(f, lower: float, upper: float, tol: float, maxiter: int = 1000,
           f_lower: float | None = None, f_upper: float | None = None) -> tuple[float, int, bool]:
    """Root of ``f`` in [lower, upper] (signs at the ends must differ). Returns (root, iterations, converged)."""
    a, b = float(lower), float(upper)
    fa = f(a) if f_lower is None else f_lower
    fb = f(b) if f_upper is None else f_upper
    c, fc = a, fa
    if fa == 0.0:
        return a, 0, True
    if fb == 0.0:
        return b, 0, True
    it = 0
    while it <= maxiter:
        it += 1
        prev_step = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2 * _EPS * abs(b) + tol / 2
        new_step = (c - b) / 2
        if abs(new_step) <= tol_act or fb == 0.0:
            return b, it, True
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2) and p < abs(prev_step * q / 2):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a, fa = b, fb
        b += new_step
        fb = f(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    return b, it, False


R_UNIROOT_TOL = _EPS ** 0.25  # R's default uniroot tolerance, .Machine$double.eps^0.25

