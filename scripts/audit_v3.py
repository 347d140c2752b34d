"""Evidence base v3 (issue 15): apply the meaning-level audit of every outcome row to data/outcomes.csv.

The audit itself is the record: data/extraction/audit_v3/audit.csv has one line per row of outcomes.csv (and one
more per further field changed): the checks made, the verdict, the error class, the field, its old and new
value, the reason, the words of the source that decide it, where they were read, the source type of the page
the number comes from, and the curator's decision (``apply``, ``reject`` with why, or ``keep`` for ok rows).
Four extractors re-read the rows (ProDERM; the other randomised trials; the observational studies in two
halves); the curator reviewed every proposed change and re-found one source the extractor could not
(dalakas1993-12, the EBM Guidelines page).

What this script does, and nothing else:
1. for each line with decision ``apply``: set ``field`` to ``new`` where the row's current value is ``old``
   (so a second run changes nothing), and append ``[audit v3 2026-12-01: field old -> new: reason]`` to the
   row's notes;
2. fill the ``source_type`` column of every row from the audit (the type of the page its number was read on).

Run once from the project root: ``.venv/bin/python scripts/audit_v3.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
AUDIT = ROOT / "data" / "extraction" / "audit_v3" / "audit.csv"
OUTCOMES = ROOT / "data" / "outcomes.csv"


def main(data_dir: Path = ROOT / "data") -> int:
    path = data_dir / "outcomes.csv"
    oc = pd.read_csv(path, dtype=str, keep_default_na=False)
    au = pd.read_csv(AUDIT, dtype=str, keep_default_na=False)
    if "source_type" not in oc.columns:
        oc["source_type"] = ""
    idx = {r: i for i, r in enumerate(oc["result_id"])}
    missing = sorted(set(oc["result_id"]) - set(au["result_id"]))
    if missing:
        print(f"error: rows of outcomes.csv not in the audit: {', '.join(missing)}", file=sys.stderr)
        return 1
    changed = 0
    for a in au.itertuples(index=False):
        if a.result_id not in idx:
            print(f"error: audit line for unknown row {a.result_id}", file=sys.stderr)
            return 1
        i = idx[a.result_id]
        if a.decision == "apply" and a.field:
            if oc.at[i, a.field] == a.old:
                oc.at[i, a.field] = a.new
                note = f"[audit v3 2026-12-01: {a.field} {a.old or 'empty'} -> {a.new or 'empty'}: {a.reason_short}]"
                oc.at[i, "notes"] = (oc.at[i, "notes"] + " " + note).strip()
                changed += 1
            elif oc.at[i, a.field] != a.new:
                print(f"error: {a.result_id}.{a.field} is {oc.at[i, a.field]!r}, expected {a.old!r}", file=sys.stderr)
                return 1
        if a.source_type:
            oc.at[i, "source_type"] = a.source_type
    oc.to_csv(path, index=False)
    print(f"{changed} field(s) changed; source_type set on {int((oc['source_type'] != '').sum())} of {len(oc)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data"))
