"""Adding a study: extraction templates, a check before merging, and the merge itself.

A new study is extracted into a folder holding any of the tables' files (``studies.csv``, ``outcomes.csv``,
``screening.csv``, ``risk_of_bias.csv``, ``cohorts.csv``, ``randomised.csv``, ...), each with the columns of
``data/templates/<table>.csv``. ``check(folder)`` validates every file on its own (row numbers of that file), then
a copy of ``data/`` with the rows appended (identifiers unique, every row pointing to a study, a screening
record for every included study, the analysis plans consistent); nothing is written. ``merge(folder)`` runs the
same check and then appends the rows to the data files: the one deliberate write to ``data/``, run by the
maintainer, never by a build.

CLI: ``python -m ivighelpers.data check <folder or file>`` / ``merge <folder> [data_dir]`` / ``templates``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

from . import data as dm
from .errors import DataValidationError

TABLES = ("studies", "screening", "outcomes", "risk_of_bias", "cohorts", "cohort_pairs", "randomised", "nonrandomised",
          "search_log", "ipd")
TEMPLATE_DIR = dm.DATA_DIR / "templates"

# One filled example per table: a fictitious study, clearly labelled, that passes the check (tests merge it
# into a temporary copy of data/ only).
EXAMPLE_ID = "example_template_2020"
EXAMPLES = {
    "studies": {"study_id": EXAMPLE_ID, "first_author": "Example", "year": "2020",
                "title": "EXAMPLE ROW - replace with the study's title", "journal": "Journal as printed",
                "pmid": "", "doi": "", "url": "https://example.org/replace-with-the-study-address",
                "design": "case_series", "country": "Country", "setting": "single_centre", "population": "adult",
                "n_total": "20", "n_ig": "20", "n_dm": "14", "n_pm": "6", "n_ibm": "0", "n_imnm": "", "n_asyns": "",
                "n_jdm": "", "n_cadm": "", "n_other": "", "route": "IVIG", "product": "", "regimen": "2 g/kg monthly",
                "line": "refractory", "comparator": "", "follow_up_months": "6", "cohort_id": EXAMPLE_ID,
                "concomitant": "glucocorticoids", "extraction_level": "abstract",
                "source": "URL:https://example.org/replace-with-the-study-address", "location": "abstract",
                "notes": "EXAMPLE ROW: delete before merging", "extraction_batches": ""},
    "screening": {"record_id": "EXAMPLE-001", "search_id": "", "first_author": "Example", "year": "2020",
                  "title": "EXAMPLE ROW - replace with the record's title", "pmid": "", "doi": "",
                  "url": "https://example.org/replace-with-the-study-address", "stage": "full_text",
                  "decision": "included", "reason": "", "study_id": EXAMPLE_ID,
                  "source": "search tool (stored public pages)", "duplicate_of": ""},
    "outcomes": {"result_id": f"{EXAMPLE_ID}-01", "study_id": EXAMPLE_ID, "domain": "strength",
                 "measure": "proportion", "definition": "muscle strength improved (as the study defines it)",
                 "arm": "ig", "timepoint": "6 months", "timepoint_months": "6", "n": "20", "events": "15",
                 "source": "URL:https://example.org/replace-with-the-study-address",
                 "url": "https://example.org/replace-with-the-study-address", "location": "abstract, results",
                 "notes": "EXAMPLE ROW: delete before merging", "outcome_code": "strength_improved", "subgroup": "all",
                 "extraction_level": "abstract", "quote": "15 of 20 patients improved in muscle strength",
                 "source_type": "journal_abstract"},
    "risk_of_bias": {"study_id": EXAMPLE_ID, "tool": "JBI-CS", "domain": "Q1", "judgement": "yes",
                     "reason": "clear inclusion criteria (example)",
                     "source": "URL:https://example.org/replace-with-the-study-address"},
}


def write_templates(out: Path | None = None) -> Path:
    """Write ``data/templates/``: one CSV per table (header and, for the main tables, the filled example row) and
    a README listing every column with its type, whether it is required and the allowed values."""
    out = Path(out) if out else TEMPLATE_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        cols = list(dm.SCHEMA[name])
        rows = [EXAMPLES[name]] if name in EXAMPLES else []
        pd.DataFrame(rows, columns=cols).fillna("").to_csv(out / f"{name}.csv", index=False)
    (out / "README.md").write_text(templates_readme(), encoding="utf-8")
    return out


def templates_readme() -> str:
    """The columns of every table, from ``data.SCHEMA`` (so the templates cannot drift from the validator)."""
    lines = ["# Extraction templates", "",
             "One CSV per table, with the columns the validator expects; the main tables carry one filled example "
             f"row (study `{EXAMPLE_ID}`, fictitious: delete it). Walkthrough: `data/README.md`, \"Adding a study\". "
             "Generated by `python -m ivighelpers.data templates` from the schema in `ivighelpers/data.py`.", ""]
    for name in TABLES:
        lines += [f"## {name}.csv", "", "| column | type | required | allowed |", "|---|---|---|---|"]
        for col, c in dm.SCHEMA[name].items():
            allowed = ", ".join(c.allowed) if c.allowed else (
                f"[{'' if c.min is None else f'{c.min:g}'}, {'' if c.max is None else f'{c.max:g}'}]"
                if c.min is not None or c.max is not None else "")
            lines.append(f"| {col} | {c.type} | {'yes' if c.required else ''} | {allowed} |")
        lines.append("")
    return "\n".join(lines)


def check(path: Path, data_dir: Path | None = None) -> dict:
    """Validate an extraction (a folder of table files, or one file) before it is merged; returns
    {table: rows to add}. Raises DataValidationError naming the file, row and column."""
    files = _files(Path(path))
    for name, f in files.items():
        dm.load_table(name, f)                       # the file on its own: its own row numbers
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "data"
        _merged_copy(files, Path(data_dir) if data_dir else dm.DATA_DIR, copy)
        try:
            dm.load_all(copy)
        except DataValidationError as e:
            raise DataValidationError(f"after appending the extraction to a copy of data/: {e}") from None
    return {name: len(pd.read_csv(f, dtype=str, keep_default_na=False)) for name, f in files.items()}


def merge(path: Path, data_dir: Path | None = None) -> dict:
    """Check the extraction, then append its rows to the data files of ``data_dir`` (default ``data/``)."""
    data_dir = Path(data_dir) if data_dir else dm.DATA_DIR
    added = check(path, data_dir)
    for name, f in _files(Path(path)).items():
        _append(data_dir / f"{name}.csv", f)
    return added


# ---------------------------------------------------------------------------------------------
# helpers

def _files(path: Path) -> dict:
    if path.is_file():
        cands = [path]
    elif path.is_dir():
        cands = sorted(path.glob("*.csv"))
    else:
        raise DataValidationError(f"{path}: no such file or folder")
    out = {}
    for f in cands:
        if f.stem not in TABLES:
            raise DataValidationError(f"{f.name}: not a table of the review (file names allowed: "
                                      f"{', '.join(t + '.csv' for t in TABLES)})")
        if path.is_dir() and f.stat().st_size and len(pd.read_csv(f, dtype=str, keep_default_na=False)) == 0:
            continue                                  # a header-only template: nothing for this table
        out[f.stem] = f
    if not out:
        raise DataValidationError(f"{path}: no table file (.csv) to check")
    return out


def _merged_copy(files: dict, data_dir: Path, copy: Path) -> None:
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("extraction", "releases", "templates"))
    for name, f in files.items():
        _append(copy / f"{name}.csv", f)


def _append(target: Path, new: Path) -> None:
    """Append ``new``'s rows to ``target`` keeping target's column order (both read as text: nothing retyped)."""
    old = pd.read_csv(target, dtype=str, keep_default_na=False)
    add = pd.read_csv(new, dtype=str, keep_default_na=False)
    missing = [c for c in old.columns if c not in add.columns]
    if missing:
        raise DataValidationError(f"{new.name}: missing column(s) {', '.join(missing)} (see data/templates/{new.name})")
    pd.concat([old, add[list(old.columns)]], ignore_index=True).to_csv(target, index=False)
