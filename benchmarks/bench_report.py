"""Time the review build (issue 4): the whole collection (make report's work, from an installed
environment) and one notebook with non-default parameters. Prints seconds; not a test."""

import statistics
import time

from ivighelpers.report import build_report, run_domain


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
          f"(runs: {', '.join(f'{t:.1f}' for t in whole)}) - target <= 60 s")
    print(f"one notebook (strength, papermill + HTML): median {statistics.median(one):.1f} s "
          f"(runs: {', '.join(f'{t:.1f}' for t in one)}) - target <= 10 s")


if __name__ == "__main__":
    main()
