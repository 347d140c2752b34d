"""Build the review under ``reports/``.

The domain notebooks (issue 4) are not written yet; until they are, the report is the metafor parity
report and the data summary, written to ``reports/`` so that ``make report`` already produces something a
reviewer can check.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"


def build_report() -> int:
    from . import parity
    REPORTS.mkdir(exist_ok=True)
    results = parity.run_all()
    text = parity.report(results)
    (REPORTS / "parity.txt").write_text(text + "\n")
    print(text)
    try:
        from .data import load_all, summary_text
        summary = summary_text(load_all())
        (REPORTS / "data_summary.txt").write_text(summary + "\n")
        print()
        print(summary)
    except ImportError:
        pass
    print(f"\nwritten to {REPORTS.relative_to(ROOT)}/")
    return 0 if all(r.ok for r in results) else 1
