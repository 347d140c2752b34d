"""Speed benchmarks for the statistics engine (issue 2), side by side with statsmodels where it overlaps.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/bench_meta.py``). Prints a table; numbers
are medians over repeated runs on this machine. Not a test: nothing here fails on time.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc

import numpy as np
from statsmodels.stats.meta_analysis import combine_effects

from ivighelpers import bayesmeta, influence, leave_one_out, rma, rma_glmm


def timeit(fn, repeat=200):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    rng = np.random.default_rng(2024)
    k = 30
    vi = rng.uniform(0.01, 0.2, k)
    yi = rng.normal(0.3, np.sqrt(vi + 0.05))
    rows = []

    def reml_ci_pi():
        r = rma(yi, vi, method="REML")
        return r.ci_lb, r.ci_ub, r.pi_lb, r.pi_ub

    rows.append(("REML fit + CI + PI, k=30", timeit(reml_ci_pi, 2000) * 1e3, "ms", "target <= 0.5 ms"))

    def reml_all():
        r = rma(yi, vi, method="REML")
        return r.tau2_ci, r.I2_ci

    rows.append(("REML fit + Q-profile tau2/I2 CIs, k=30", timeit(reml_all, 1000) * 1e3, "ms", ""))
    rows.append(("DL fit + CI + PI, k=30", timeit(lambda: rma(yi, vi, method="DL").pi_lb, 2000) * 1e3, "ms", ""))
    rows.append(("statsmodels combine_effects DL, k=30",
                 timeit(lambda: combine_effects(yi, vi, method_re="dl").conf_int(), 2000) * 1e3, "ms", "no PI, no REML"))
    rows.append(("statsmodels combine_effects PM, k=30",
                 timeit(lambda: combine_effects(yi, vi, method_re="pm").conf_int(), 2000) * 1e3, "ms", ""))
    fit = rma(yi, vi, method="REML")
    rows.append(("leave_one_out + influence, REML, k=30",
                 timeit(lambda: (leave_one_out(fit), influence(fit)), 100) * 1e3, "ms", "target <= 10 ms"))

    rows.append(("bayesmeta, half-normal(0.5), k=30 (8,001-point tau grid)",
                 timeit(lambda: bayesmeta(yi, vi, tau_scale=0.5), 200) * 1e3, "ms", "exact integration, no MCMC"))
    x, n = np.array([0, 9, 84, 0]), np.array([5, 17, 95, 24])
    rows.append(("rma_glmm, nAGQ=7 (metafor default), flat likelihood k=4",
                 timeit(lambda: rma_glmm(xi=x, ni=n, nAGQ=7), 50) * 1e3, "ms", "make bench-glmm: vs metafor"))
    nodes = rma_glmm(xi=x, ni=n).nAGQ
    rows.append((f"rma_glmm, adaptive nodes (stops at {nodes}), same data",
                 timeit(lambda: rma_glmm(xi=x, ni=n), 10) * 1e3, "ms", "estimate stable to 1e-7"))

    big = 1_000_000
    vb = rng.uniform(0.01, 0.2, big)
    yb = rng.normal(0.3, np.sqrt(vb + 0.05))
    tracemalloc.start()
    t0 = time.perf_counter()
    r = rma(yb, vb, method="REML")
    _ = (r.ci_lb, r.pi_lb)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rows.append((f"REML, k=1,000,000 ({r.tau2_iterations} Fisher steps)", dt, "s", "target <= 2 s"))
    rows.append(("REML, k=1,000,000, peak traced memory", peak / 2 ** 20, "MiB", "target <= 1 GB"))
    t0 = time.perf_counter()
    combine_effects(yb, vb, method_re="dl")
    rows.append(("statsmodels combine_effects DL, k=1,000,000", time.perf_counter() - t0, "s", ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'median':>10}  unit  note")
    for name, val, unit, note in rows:
        print(f"{name:<{width}}  {val:>10.3f}  {unit:<4}  {note}")


if __name__ == "__main__":
    main()
