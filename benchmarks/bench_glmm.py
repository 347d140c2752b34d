"""GLMM (binomial-normal, ML) speed and accuracy: the current ``rma_glmm`` against the implementation it replaced
(``_glmm_previous.py``: Nelder-Mead from three starts) and, when R with metafor and lme4 is on this machine,
against metafor's ``rma.glmm`` (lme4::glmer underneath) on the same data in the same run.

Run: ``make bench-glmm`` (or ``.venv/bin/python benchmarks/bench_glmm.py [--no-metafor]``). Prints a table of
ms per fit (medians) and the accuracy of each fit against a 201-node fit. Not a test: nothing fails on time.
R is not a dependency of the project; without ``Rscript`` the metafor columns say "not measured".
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _glmm_previous as previous  # noqa: E402

from ivighelpers import rma_glmm  # noqa: E402


def datasets():
    """k = 4, 12 and 50 (random, fixed seed) and the review's flat 'any adverse event' pool (k = 4)."""
    rng = np.random.default_rng(7)
    n50 = rng.integers(15, 61, 50)
    x50 = rng.binomial(n50, 1 / (1 + np.exp(-rng.normal(-1.0, 0.8, 50))))
    return {
        "k=4": ([3, 9, 14, 5], [20, 17, 25, 24]),
        "k=12": ([3, 9, 14, 5, 2, 11, 6, 8, 1, 12, 7, 4], [20, 17, 25, 24, 18, 30, 22, 26, 15, 28, 21, 19]),
        "k=50": (x50.tolist(), n50.tolist()),
        "k=4 flat (ae_any)": ([0, 9, 84, 0], [5, 17, 95, 24]),
    }


def timeit(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


R_SCRIPT = r"""
suppressMessages({library(metafor); library(lme4)})
d <- jsonlite::fromJSON(commandArgs(TRUE)[1])
out <- list()
for (nm in names(d)) {
  x <- d[[nm]]$x; n <- d[[nm]]$n
  f <- function(q) rma.glmm(measure = "PLO", xi = x, ni = n, nAGQ = q)
  r <- f(7)
  t <- sapply(1:7, function(i) system.time(f(7))[["elapsed"]])
  out[[nm]] <- list(ms = 1000 * median(t), estimate = r$beta[1], tau2 = r$tau2, se = r$se)
}
cat(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA))
"""


def metafor_times(data):
    """{name: {ms, estimate, tau2, se}} from R metafor at nAGQ = 7 (default), or None without R."""
    if not shutil.which("Rscript"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "data.json"
        inp.write_text(json.dumps({k: {"x": x, "n": n} for k, (x, n) in data.items()}))
        script = Path(tmp) / "bench.R"
        script.write_text(R_SCRIPT)
        r = subprocess.run(["Rscript", str(script), str(inp)], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"(metafor not measured: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'Rscript failed'})")
        return None
    return json.loads(r.stdout)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    data = datasets()
    mf = None if "--no-metafor" in argv else metafor_times(data)
    head = (f"{'data':<19} {'previous 7':>10} {'now 7':>7} {'x prev':>7} {'metafor 7':>9} {'x metafor':>9} "
            f"{'now auto':>9} {'nodes':>5} {'|d mu| auto-201':>15} {'|d tau2| auto-201':>17} {'|d mu| metafor':>14}")
    print("ms per fit, medians on this machine; 'auto' = the default (7 nodes upwards until stable to 1e-7)")
    print(head)
    print("-" * len(head))
    for name, (x, n) in data.items():
        t_prev = timeit(lambda: previous.fit_previous(x, n, 7), 3)
        t_now = timeit(lambda: rma_glmm(xi=x, ni=n, nAGQ=7), 50)
        auto = rma_glmm(xi=x, ni=n)
        t_auto = timeit(lambda: rma_glmm(xi=x, ni=n), 10 if auto.nAGQ < 100 else 3)
        ref = rma_glmm(xi=x, ni=n, nAGQ=201)
        seven = rma_glmm(xi=x, ni=n, nAGQ=7)
        m = (mf or {}).get(name)
        t_mf = f"{m['ms']:9.1f}" if m else f"{'n/m':>9}"
        x_mf = f"{m['ms'] / t_now:8.1f}x" if m else f"{'':>9}"
        d_mf = f"{abs(m['estimate'] - seven.estimate):14.1e}" if m else f"{'':>14}"
        print(f"{name:<19} {t_prev:10.1f} {t_now:7.2f} {t_prev / t_now:6.0f}x {t_mf} {x_mf} {t_auto:9.2f} "
              f"{auto.nAGQ:5d} {abs(auto.estimate - ref.estimate):15.1e} {abs(auto.tau2 - ref.tau2):17.1e} {d_mf}")
    if mf is None:
        print("metafor: not measured (no Rscript with metafor, lme4 and jsonlite here); the issue quotes ~40 ms "
              "per fit at nAGQ=7, k=12")


if __name__ == "__main__":
    main()
