"""Time the review build and re-runs as a user meets them, and print the size of each HTML report.

- the whole review: ``python -m ivighelpers report`` as a command (6 notebooks, 2 workers, HTML, parity, summary);
- one domain re-run: ``python -m ivighelpers run <domain> -p method DL`` as a command, for every domain, with the
  time split into the notebook's cells (papermill's per-cell durations), the rest of the notebook's forked process
  (papermill around the cells and the HTML export) and the command itself (imports and warm-up before the fork,
  publishing the run). Notebooks run without a kernel since issue 16 (``ivighelpers/execute.py``).

Run: ``make bench-report`` (or ``.venv/bin/python benchmarks/bench_report.py [repeats]``). Prints numbers; not a
test. Targets (issue 16): one domain <= 5 s and the whole review <= 30 s on 2 cores; each HTML <= 600 KB.
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ivighelpers.report import DOMAINS, REPORTS, run_name  # noqa: E402


def timed(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return time.perf_counter() - t0, r.stdout


def main(repeat: int = 3):
    py = sys.executable
    whole = [timed([py, "-m", "ivighelpers", "report"])[0] for _ in range(repeat)]
    print(f"whole review (python -m ivighelpers report): median {statistics.median(whole):.1f} s "
          f"(runs: {', '.join(f'{t:.1f}' for t in whole)}) - target <= 30 s")
    print(f"{'one domain re-run (-p method DL)':<36} {'median s':>8} {'cells':>6} {'pm+html':>9} {'command':>8}")
    for domain in DOMAINS:
        times, split = [], None
        for _ in range(repeat):
            t, out = timed([py, "-m", "ivighelpers", "run", domain, "-p", "method", "DL"])
            times.append(t)
            name = run_name(domain, {"method": "DL"})
            nb = json.loads((REPORTS / "runs" / name / f"{name}.ipynb").read_text())
            cells = sum(c.get("metadata", {}).get("papermill", {}).get("duration") or 0 for c in nb["cells"])
            execute = float(out.split("(")[-1].split(" s)")[0])       # the forked process's time, printed by run
            split = (cells, execute - cells, t - execute)
        print(f"  {domain:<34} {statistics.median(times):8.1f} {split[0]:6.1f} {split[1]:9.1f} {split[2]:8.1f}")
    print("  (cells: the notebook's code; pm+html: papermill around the cells and the HTML export, in the forked "
          "process; command: imports and warm-up before the fork, publishing) - target <= 5 s")
    for p in sorted(REPORTS.glob("*.html")):
        print(f"  {p.name:<28} {p.stat().st_size / 1024:7.0f} KB (target <= 600 KB)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
