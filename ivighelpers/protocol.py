"""The review protocol (``data/protocol.yaml``) and the review team's GRADE judgements (``data/grade.csv``).

The protocol declares, before any analysis, the populations, at most 7 ranked critical or important outcomes per
population (measure, follow-up, minimal important difference, the comparisons that answer each), and the rules
(when not to pool, subgroups, imprecision thresholds). ``grade.csv`` records one judgement per population,
outcome and GRADE domain, with its reason and what the rule suggested when the judgement was made (GRADEpro
works the same way: the panel judges, the software suggests and checks).

Both are validated on load; every message names the file, the population / outcome (or row) and the key
(or column), and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from .data import SOURCE_RE, data_dir
from .errors import DataValidationError

REPORTS = ("strength", "ck", "steroid", "safety", "response_course")
IMPORTANCE = ("critical", "important")
MAX_OUTCOMES = 7   # GRADE / Cochrane: at most 7 critical or important outcomes per summary of findings
DOWN = ("risk_of_bias", "inconsistency", "indirectness", "imprecision", "publication_bias")
UP = ("large_effect", "dose_response", "opposing_confounding")
DOMAINS = DOWN + UP
JUDGEMENTS = {
    "risk_of_bias": {"not_serious": 0, "serious": 1, "very_serious": 2},
    "inconsistency": {"not_serious": 0, "serious": 1, "very_serious": 2},
    "indirectness": {"not_serious": 0, "serious": 1, "very_serious": 2},
    "imprecision": {"not_serious": 0, "serious": 1, "very_serious": 2, "extremely_serious": 3},
    "publication_bias": {"undetected": 0, "strongly_suspected": 1},
    "large_effect": {"no": 0, "large": -1, "very_large": -2},
    "dose_response": {"no": 0, "yes": -1},
    "opposing_confounding": {"no": 0, "yes": -1},
}
GRADE_COLUMNS = ("population", "outcome", "domain", "judgement", "reason", "rule_suggestion", "date", "judged_by",
                 "rows", "source")


@dataclass(frozen=True)
class Outcome:
    id: str
    rank: int
    importance: str
    label: str
    measure: str
    follow_up: str
    report: str
    evidence: tuple
    mid: float | None
    mid_source: str
    mid_unit: str = ""
    observed: str = ""
    comments: str = ""


@dataclass(frozen=True)
class Population:
    id: str
    label: str
    question: str
    comparator: str
    outcomes: tuple


@dataclass
class Protocol:
    version: str
    rules: dict
    populations: tuple
    path: Path = field(default=None)

    def population(self, pid: str) -> Population:
        for p in self.populations:
            if p.id == pid:
                return p
        raise KeyError(pid)

    def outcomes_for(self, report: str):
        """(population, outcome) pairs whose summary-of-findings row belongs to ``report``."""
        return [(p, o) for p in self.populations for o in p.outcomes if o.report == report]


def load_protocol(path: Path | None = None, plans: dict | None = None) -> Protocol:
    """Read and validate ``data/protocol.yaml``. ``plans``: {'randomised': DataFrame, 'nonrandomised': DataFrame}
    to check that every evidence id is a comparison of one of the plans, of the same population."""
    path = Path(path) if path else data_dir() / "protocol.yaml"
    f = path.name
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataValidationError(f"{f}: file not found ({path}); the review protocol is required") from None
    except yaml.YAMLError as e:
        raise DataValidationError(f"{f}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise DataValidationError(f"{f}: the top level must be a mapping with keys version, rules, populations")
    for k in ("version", "rules", "populations"):
        if k not in raw:
            raise DataValidationError(f"{f}: key {k!r} is missing (needed: version, rules, populations)")
    if not isinstance(raw["populations"], list) or not raw["populations"]:
        raise DataValidationError(f"{f}: key 'populations' must be a non-empty list")
    comps = {}
    for name, plan in (plans or {}).items():
        for r in plan.itertuples(index=False):
            comps[r.comparison_id] = (name, r.population)
    pops, seen = [], set()
    for i, p in enumerate(raw["populations"], 1):
        where = f"{f}: population {i}"
        if not isinstance(p, dict):
            raise DataValidationError(f"{where}: must be a mapping (id, label, question, comparator, outcomes)")
        for k in ("id", "label", "question", "comparator", "outcomes"):
            if not p.get(k):
                raise DataValidationError(f"{where}, key {k!r}: missing or empty")
        pid = str(p["id"])
        where = f"{f}: population {pid!r}"
        if pid in seen:
            raise DataValidationError(f"{where}, key 'id': population listed twice")
        seen.add(pid)
        outs = p["outcomes"]
        if not isinstance(outs, list) or not 1 <= len(outs) <= MAX_OUTCOMES:
            raise DataValidationError(f"{where}, key 'outcomes': 1 to {MAX_OUTCOMES} outcomes (GRADE: at most "
                                      f"{MAX_OUTCOMES} per summary of findings); got "
                                      f"{len(outs) if isinstance(outs, list) else type(outs).__name__}")
        parsed, ids, ranks = [], set(), set()
        for j, o in enumerate(outs, 1):
            parsed.append(_outcome(o, f"{where}, outcome {j}", comps, pid))
            if parsed[-1].id in ids:
                raise DataValidationError(f"{where}, outcome {j}, key 'id': {parsed[-1].id!r} listed twice")
            if parsed[-1].rank in ranks:
                raise DataValidationError(f"{where}, outcome {j}, key 'rank': rank {parsed[-1].rank} used twice")
            ids.add(parsed[-1].id)
            ranks.add(parsed[-1].rank)
        pops.append(Population(pid, str(p["label"]), str(p["question"]), str(p["comparator"]),
                               tuple(sorted(parsed, key=lambda o: o.rank))))
    return Protocol(str(raw["version"]), dict(raw["rules"] or {}), tuple(pops), path)


def load_judgements(protocol: Protocol, path: Path | None = None, result_ids=None) -> pd.DataFrame:
    """Read and validate ``data/grade.csv`` against the protocol: known population and outcome, known domain,
    a judgement allowed for that domain (also for ``rule_suggestion``), a reason, the result rows the reason's
    numbers come from (each a result_id of ``outcomes.csv`` when ``result_ids`` is given), a method source
    (PMID, DOI or URL), no duplicate."""
    path = Path(path) if path else data_dir() / "grade.csv"
    f = path.name
    if not path.is_file():
        raise DataValidationError(f"{f}: file not found ({path}); record the GRADE judgements there "
                                  f"(columns {', '.join(GRADE_COLUMNS)})")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in GRADE_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"{f}: column(s) missing: {', '.join(missing)} (needed: {', '.join(GRADE_COLUMNS)})")
    known = {(p.id, o.id) for p in protocol.populations for o in p.outcomes}
    pops = {p.id for p in protocol.populations}
    seen = set()
    for i, r in df.iterrows():
        where = f"{f}: row {i + 2}"
        if r["population"] not in pops:
            raise DataValidationError(f"{where}, column population: {r['population']!r} is not a population of "
                                      f"protocol.yaml (allowed: {', '.join(sorted(pops))})")
        if (r["population"], r["outcome"]) not in known:
            allowed = sorted(o for p, o in known if p == r["population"])
            raise DataValidationError(f"{where}, column outcome: {r['outcome']!r} is not an outcome of population "
                                      f"{r['population']!r} in protocol.yaml (allowed: {', '.join(allowed)})")
        if r["domain"] not in DOMAINS:
            raise DataValidationError(f"{where}, column domain: {r['domain']!r} is not a GRADE domain (allowed: "
                                      f"{', '.join(DOMAINS)})")
        ok = JUDGEMENTS[r["domain"]]
        for col in ("judgement", "rule_suggestion"):
            if r[col] not in ok and not (col == "rule_suggestion" and r[col] == ""):
                raise DataValidationError(f"{where}, column {col}: {r[col]!r} is not a judgement for "
                                          f"{r['domain']} (allowed: {', '.join(ok)})")
        if not r["reason"].strip():
            raise DataValidationError(f"{where}, column reason: a judgement needs its reason")
        if not SOURCE_RE.match(r["source"]):
            raise DataValidationError(f"{where}, column source: {r['source']!r} is not PMID:<digits>, DOI:10.<...> or "
                                      "URL:<address> (the method the judgement applies)")
        ids = [x.strip() for x in r["rows"].split(";") if x.strip()]
        bad = [x for x in ids if result_ids is not None and x not in result_ids]
        if bad:
            raise DataValidationError(f"{where}, column rows: {bad[0]!r} is not a result_id in outcomes.csv")
        key = (r["population"], r["outcome"], r["domain"])
        if key in seen:
            raise DataValidationError(f"{where}: a second judgement for {' / '.join(key)}")
        seen.add(key)
    return df


# ---------------------------------------------------------------------------------------------
# helpers

def _outcome(o, where, comps, pid) -> Outcome:
    if not isinstance(o, dict):
        raise DataValidationError(f"{where}: must be a mapping")
    for k in ("id", "rank", "importance", "label", "measure", "follow_up", "report", "mid_source"):
        if o.get(k) in (None, ""):
            raise DataValidationError(f"{where}, key {k!r}: missing or empty")
    where = f"{where} ({o['id']!r})"
    if o["importance"] not in IMPORTANCE:
        raise DataValidationError(f"{where}, key 'importance': {o['importance']!r} (allowed: {', '.join(IMPORTANCE)})")
    if o["report"] not in REPORTS:
        raise DataValidationError(f"{where}, key 'report': {o['report']!r} (allowed: {', '.join(REPORTS)})")
    if not isinstance(o["rank"], int) or o["rank"] < 1:
        raise DataValidationError(f"{where}, key 'rank': a whole number >= 1; got {o['rank']!r}")
    mid = o.get("mid")
    if mid is not None and (isinstance(mid, bool) or not isinstance(mid, (int, float)) or mid <= 0):
        raise DataValidationError(f"{where}, key 'mid': a number > 0 or null; got {mid!r}")
    if mid is not None and not o.get("mid_unit"):
        raise DataValidationError(f"{where}, key 'mid_unit': the unit of the minimal important difference is missing "
                                  "(e.g. 'per 1,000 patients', 'CDASI activity points')")
    ev = o.get("evidence", [])
    if not isinstance(ev, list):
        raise DataValidationError(f"{where}, key 'evidence': a list of comparison ids; got {ev!r}")
    for cid in ev:
        if comps and cid not in comps:
            raise DataValidationError(f"{where}, key 'evidence': {cid!r} is not a comparison_id of randomised.csv "
                                      "or nonrandomised.csv")
        if comps and comps[cid][1] != pid:
            raise DataValidationError(f"{where}, key 'evidence': {cid!r} is a comparison in population "
                                      f"{comps[cid][1]!r}, not {pid!r}")
    return Outcome(str(o["id"]), int(o["rank"]), o["importance"], str(o["label"]), str(o["measure"]),
                   str(o["follow_up"]), o["report"], tuple(ev), None if mid is None else float(mid),
                   str(o["mid_source"]), str(o.get("mid_unit") or ""), str(o.get("observed") or ""),
                   str(o.get("comments") or ""))
