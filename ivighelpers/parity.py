"""Parity with R's metafor: run every reference case and compare every field present.

``python -m ivighelpers.parity [reference_dir]`` prints, per file, the cases passed and the
largest relative error. The reference files are ``../shared/reference/metafor/*.json`` (format in
that folder's README; a copy is kept in ``tests/reference/metafor`` for clones without ``../shared``); set
``IVIG_REFERENCE_DIR`` to read them from elsewhere. ``tests/reference/metafor-extra`` adds cases the shared
reference lacks (k = 2 leave-one-out and influence, ``to="none"``), computed by metafor 3.8-1 with the R
script stored beside them.

Tolerances (issue 2): closed-form quantities to a relative error of 1e-6; quantities that come
from iterative estimation (REML, ML, PM, EB, GLMM, Q-profile limits and anything computed from them)
to 1e-4. Relative error is |ours - theirs| / max(|theirs|, 1e-8); an absolute difference below
1e-10 always passes (values that are zero up to rounding).
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import diagnostics as dg
from .effects import escalc
from .errors import MissingValueWarning
from .meta import rma, rma_subgroups
from .models import rma_glmm, rma_mh

ITERATIVE_METHODS = {"REML", "ML", "PM", "EB", "GLMM-ML"}
QPROFILE_KEYS = {"tau2_ci", "I2_ci", "H2_ci"}
TOL_CLOSED = 1e-6
TOL_ITER = 1e-4
ABS_FLOOR = 1e-10


@dataclass
class Comparison:
    case: str
    section: str
    key: str
    expected: object
    got: object
    rel_error: float
    tol: float

    @property
    def ok(self) -> bool:
        return self.rel_error <= self.tol


@dataclass
class CaseResult:
    case: str
    file: str
    comparisons: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    @property
    def max_rel_error(self) -> float:
        return max((c.rel_error for c in self.comparisons), default=0.0)


def reference_dir() -> Path:
    """The metafor reference cases: ``$IVIG_REFERENCE_DIR``, else ``../shared/reference/metafor`` beside the
    repository (the team's master copy, which may gain cases), else the copy kept in the repository
    (``tests/reference/metafor``, so that a clone works on its own; a test checks the two are equal)."""
    env = os.environ.get("IVIG_REFERENCE_DIR")
    if env:
        return Path(env)
    for cand in (REPO.parent / "shared" / "reference" / "metafor", VENDORED):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("metafor reference directory not found; set IVIG_REFERENCE_DIR")


REPO = Path(__file__).resolve().parent.parent
VENDORED = REPO / "tests" / "reference" / "metafor"
#: cases the shared reference does not hold (k = 2 diagnostics, to="none"), made by metafor 3.8-1 with the
#: R script beside them (``generate.R``)
EXTRA = REPO / "tests" / "reference" / "metafor-extra"


def load_cases(directory: Path | None = None):
    """Yield (file stem, case dict) for every case of every reference file."""
    directory = Path(directory) if directory else reference_dir()
    files = sorted(directory.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no reference files (*.json) in {directory}")
    for f in files:
        for case in json.loads(f.read_text())["cases"]:
            yield f.stem, case


def run_case(stem: str, case: dict) -> CaseResult:
    """Recompute one reference case and compare every field it holds."""
    out = CaseResult(case["id"], stem)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingValueWarning)  # NA effect sizes are part of some cases
        return _run_case(stem, case, out)


def _run_case(stem: str, case: dict, out: CaseResult) -> CaseResult:
    e, m = case["escalc"], case["model"]
    iterative = m["method"] in ITERATIVE_METHODS
    tol = TOL_ITER if iterative else TOL_CLOSED
    es = escalc(e["measure"], **e["inputs"], **(e.get("options") or {}))
    if "yi" in case:
        _cmp(out, "escalc", "yi", case["yi"], es["yi"].to_numpy(), TOL_CLOSED)
        _cmp(out, "escalc", "vi", case["vi"], es["vi"].to_numpy(), TOL_CLOSED)
    yi, vi = es["yi"].to_numpy(), es["vi"].to_numpy()
    ni = e["inputs"].get("ni")
    method, test, level = m["method"], m["test"], m["level"]

    if method == "MH":
        inp = e["inputs"]
        res = rma_mh(e["measure"], ai=inp["ai"], bi=inp.get("bi"), ci=inp["ci"], di=inp.get("di"),
                     n1i=inp.get("n1i"), n2i=inp.get("n2i"), level=level)
        for key, exp in case["expected"].items():
            _cmp(out, "expected", key, exp, getattr(res, key), tol)
        return out
    if method == "GLMM-ML":
        res = rma_glmm(xi=e["inputs"]["xi"], ni=e["inputs"]["ni"], level=level, nAGQ=7)  # metafor: glmer nAGQ=7
        for key, exp in case["expected"].items():
            _cmp(out, "expected", key, exp, getattr(res, key), tol)
        if case.get("transformed"):
            _cmp_transformed(out, case["transformed"], res.transformed("ilogit"), tol)
        return out

    moderator = m.get("moderator")
    if moderator:
        res = rma(yi, vi, method=method, test=test, level=level, mods={moderator["name"]: moderator["values"]})
        exp = case["expected"]
        sg = (rma_subgroups(yi, vi, moderator["values"], method=method, test=test, level=level)
              if "subgroups" in exp else None)
        for key, val in exp.items():
            if key == "coefficients":
                coefs = res.coefficients
                for row in val:
                    for ck, cv in row.items():
                        if ck != "name":
                            _cmp(out, "coefficients", f"{row['name']}.{ck}", cv, coefs.loc[row["name"], ck], tol)
            elif key == "subgroups":
                for row in val:
                    fit = sg.fits[row["level"]]
                    for sk, sv in row.items():
                        if sk in ("level",):
                            continue
                        stol = TOL_ITER if (iterative or sk in QPROFILE_KEYS) else tol
                        _cmp(out, f"subgroup {row['level']}", sk, sv, getattr(fit, sk), stol)
            elif key.startswith("Q_between"):
                attr = {"Q_between": "Q_between", "Q_between_df": "Q_between_df",
                        "Q_between_pval": "Q_between_pval"}[key]
                _cmp(out, "expected", key, val, getattr(sg, attr), tol)
            else:
                _cmp(out, "expected", key, val, getattr(res, key), tol)
        return out

    res = rma(yi, vi, method=method, test=test, level=level, measure=e["measure"], ni=ni)
    for key, exp in case["expected"].items():
        ktol = TOL_ITER if key in QPROFILE_KEYS else tol
        _cmp(out, "expected", key, exp, getattr(res, key), ktol)
    if case.get("transformed"):
        t = case["transformed"]
        _cmp_transformed(out, t, res.transformed(t["transform"], ni=ni), tol)
    if "leave_one_out" in case:
        loo = dg.leave_one_out(res)
        for key, exp in case["leave_one_out"].items():
            _cmp(out, "leave_one_out", key, exp, loo[key].to_numpy(), tol)
    if "influence" in case:
        inf = dg.influence(res)
        for key, exp in case["influence"].items():
            _cmp(out, "influence", key, exp, inf[key].to_numpy(), tol)
    if "egger" in case:
        eg = dg.egger(res)
        for key, exp in case["egger"].items():
            _cmp(out, "egger", key, exp, getattr(eg, key), tol)
    if "rank_test" in case:
        rt = dg.rank_test(res)
        for key, exp in case["rank_test"].items():
            _cmp(out, "rank_test", key, exp, getattr(rt, key), tol)
    if "trimfill" in case:
        tf = dg.trimfill(res)
        for key, exp in case["trimfill"].items():
            got = tf.side if key == "side" else (tf.k0 if key == "k0" else getattr(tf.fit, key))
            _cmp(out, "trimfill", key, exp, got, tol)
    if "cumulative" in case:
        cu = case["cumulative"]
        order = [i - 1 for i in cu["order"]]
        cum = dg.cumulative(res, order=order)
        for key, exp in cu.items():
            if key == "order":
                continue
            _cmp(out, "cumulative", key, exp, cum[key].to_numpy(), tol)
    return out


def run_all(directory: Path | None = None, extra: bool = True):
    """Every case of the reference directory, and (``extra``) the project's own metafor cases."""
    cases = list(load_cases(directory))
    if extra:
        cases += list(load_cases(EXTRA))
    return [run_case(stem, case) for stem, case in cases]


def report(results) -> str:
    """Per file: cases passed / total and the largest relative error (with where it occurred)."""
    lines = [f"{'file':<14} {'cases':>7} {'passed':>7} {'max rel. error':>15}  where"]
    by_file = {}
    for r in results:
        by_file.setdefault(r.file, []).append(r)
    for f, rs in by_file.items():
        worst = max((c for r in rs for c in r.comparisons), key=lambda c: c.rel_error, default=None)
        where = f"{worst.case} {worst.section}.{worst.key}" if worst else ""
        lines.append(f"{f:<14} {len(rs):>7} {sum(r.ok for r in rs):>7} "
                     f"{(worst.rel_error if worst else 0):>15.3e}  {where}")
    n = len(results)
    ncmp = sum(len(r.comparisons) for r in results)
    lines.append(f"{'total':<14} {n:>7} {sum(r.ok for r in results):>7}   ({ncmp} values compared)")
    failed = [c for r in results for c in r.comparisons if not c.ok]
    for c in failed[:30]:
        lines.append(f"FAIL {c.case} {c.section}.{c.key}: expected {c.expected}, got {c.got} "
                     f"(rel. error {c.rel_error:.3e} > {c.tol:g})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------

def _cmp_transformed(out, t, got, tol):
    for key in ("estimate", "ci_lb", "ci_ub", "pi_lb", "pi_ub"):
        if key in t:
            _cmp(out, "transformed", key, t[key], got[key], tol)


def _cmp(out: CaseResult, section, key, expected, got, tol):
    out.comparisons.append(Comparison(out.case, section, key, expected, got, _rel_error(expected, got), tol))


def _rel_error(expected, got) -> float:
    """Largest relative error; None / [] (R's NA / NULL) must be matched by None (or NaN)."""
    if expected is None or (isinstance(expected, list) and len(expected) == 0):
        return 0.0 if _is_missing(got) else math.inf
    if isinstance(expected, str):
        return 0.0 if expected == got else math.inf
    if _is_missing(got):
        return math.inf
    e = np.atleast_1d(np.asarray(expected, dtype=float))
    g = np.atleast_1d(np.asarray(got, dtype=float))
    if e.shape != g.shape:
        return math.inf
    both_nan = np.isnan(e) & np.isnan(g)
    diff = np.abs(g - e)
    rel = np.where(diff <= ABS_FLOOR, 0.0, diff / np.maximum(np.abs(e), 1e-8))
    rel = np.where(both_nan, 0.0, rel)
    rel = np.where(np.isnan(rel), math.inf, rel)
    return float(np.max(rel)) if rel.size else 0.0


def _is_missing(x) -> bool:
    if x is None:
        return True
    if isinstance(x, float) and math.isnan(x):
        return True
    return False


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    results = run_all(Path(argv[0]) if argv else None)
    print(report(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
