"""Time the review build: the whole collection (make report's work, from an installed environment) and one
notebook re-run with non-default parameters; print the size of each HTML report. Prints numbers; not a test.
Targets (issue 9): whole collection <= 45 s and one re-run <= 8 s on 2 cores; each HTML <= 600 KB."""

import statistics
import time

from ivighelpers.report import REPORTS, build_report, run_domain


def main(repeat: int = 3):
    whole, one = [], []
    for i in range(repeat):
        t0 = time.perf_counter()
        build_report()
        whole.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_domain("strength", {"method": "DL", "level": 0.9 + i / 100}, quiet=True)
        one.append(time.perf_counter() - t0)
    print(f"whole collection (6 notebooks, 2 workers, HTML, parity, summary): median {statistics.median(whole):.1f} s "
          f"(runs: {', '.join(f'{t:.1f}' for t in whole)}) - target <= 45 s")
    print(f"one re-run (strength, papermill + HTML): median {statistics.median(one):.1f} s "
          f"(runs: {', '.join(f'{t:.1f}' for t in one)}) - target <= 8 s")
    for p in sorted(REPORTS.glob("*.html")):
        print(f"  {p.name:<28} {p.stat().st_size / 1024:7.0f} KB (target <= 600 KB)")


if __name__ == "__main__":
    main()
