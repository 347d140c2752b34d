"""Time the review build and re-runs as a user meets them, and print the size of each HTML report.

- the whole review: ``python -m ivighelpers report`` as a command (6 notebooks, 2 workers, HTML, parity, summary);
- one domain re-run: ``python -m ivighelpers run <domain> -p method DL`` as a command, for every domain, served by
  the warm server (``ivighelpers/server.py``, what a user gets after the first run or after ``make report``) and,
  beside it, in its own process (``IVIG_SERVER=0``, what the first run of a session costs); the served time is split
  into the notebook's cells (papermill's per-cell durations), the rest of the notebook's forked process (papermill
  around the cells, the figures still rendering when the cells end, and the HTML export) and the command itself (hand-over to the server, argument checks,
  publishing the run). Notebooks run without a kernel since issue 16 (``ivighelpers/execute.py``).

Run: ``make bench-report`` (or ``.venv/bin/python benchmarks/bench_report.py [repeats]``). Prints numbers; not a
test. Targets (issue 16): one domain <= 5 s and the whole review <= 30 s on 2 cores; each HTML <= 600 KB.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ivighelpers.report import DOMAINS, REPORTS, run_name  # noqa: E402


RUNTIME = tempfile.mkdtemp(prefix="bench-xdg-")      # a private server for this benchmark, stopped at the end
SERVED = {**os.environ, "IVIG_SERVER": "1", "XDG_RUNTIME_DIR": RUNTIME}
OWN = {**os.environ, "IVIG_SERVER": "0"}


def timed(cmd, env=OWN):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return time.perf_counter() - t0, r.stdout


def main(repeat: int = 3):
    py = sys.executable
    whole = [timed([py, "-m", "ivighelpers", "report"])[0] for _ in range(repeat)]
    print(f"whole review (python -m ivighelpers report): median {statistics.median(whole):.1f} s "
          f"(runs: {', '.join(f'{t:.1f}' for t in whole)}) - target <= 30 s")
    try:
        per_domain(py, repeat)
    finally:
        subprocess.run([py, "-m", "ivighelpers", "server", "stop"], cwd=ROOT, env=SERVED, capture_output=True)
    for p in sorted(REPORTS.glob("*.html")):
        print(f"  {p.name:<28} {p.stat().st_size / 1024:7.0f} KB (target <= 600 KB)")


def per_domain(py, repeat):
    t, _ = timed([py, "-m", "ivighelpers", "run", "ck", "-p", "method", "PM"], env=SERVED)
    print(f"server start with the first re-run (ck): {t:.1f} s")
    print(f"{'one domain re-run (-p method DL)':<36} {'served s':>8} {'cells':>6} {'pm+html':>9} {'command':>8} "
          f"{'own process s':>14}")
    for domain in DOMAINS:
        times, split = [], None
        cmd = [py, "-m", "ivighelpers", "run", domain, "-p", "method", "DL"]
        own = statistics.median(timed(cmd)[0] for _ in range(repeat))
        for _ in range(repeat):
            t, out = timed(cmd, env=SERVED)
            times.append(t)
            name = run_name(domain, {"method": "DL"})
            nb = json.loads((REPORTS / "runs" / name / f"{name}.ipynb").read_text())
            cells = sum(c.get("metadata", {}).get("papermill", {}).get("duration") or 0 for c in nb["cells"])
            execute = float(out.split("(")[-1].split(" s)")[0])       # the forked process's time, printed by run
            split = (cells, execute - cells, t - execute)
        print(f"  {domain:<34} {statistics.median(times):8.1f} {split[0]:6.1f} {split[1]:9.1f} {split[2]:8.1f} "
              f"{own:14.1f}")
    print("  (served: medians with the warm server; cells: the notebook's code; pm+html: papermill around the cells "
          "and the figures still rendering after them, and the HTML export; command: the rest (hand-over, checks, publishing); own process: IVIG_SERVER=0, "
          "imports and warm-up included) - target <= 5 s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
