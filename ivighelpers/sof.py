"""Summary of findings (GRADEpro layout, Cochrane Handbook 14), one per population of the protocol.

``protocol_sof(ev)`` builds one row per protocol outcome (``data/protocol.yaml``) from the best comparative
evidence the protocol names for it (randomised first, then controlled non-randomised): outcome and follow-up,
importance, participants (studies), relative effect, risk with the comparator and with immunoglobulin (per 1,000
from the trial's risk difference; mean difference for scores), certainty with footnotes from the recorded
judgements (``data/grade.csv``) beside the rules' suggestion, a GRADE-26 statement, comments. An outcome without
comparative evidence keeps its row and says so. Single-arm rates are never summary-of-findings rows: they go to
``observed_rates``, a separate table.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import pandas as pd

from . import analysis as an
from . import grade as gr
from . import trials as tr
from .text import p_text


@dataclass
class SofRow:
    """One outcome of one population's summary of findings."""
    population: str
    outcome: object                      # protocol.Outcome
    results: list = field(default_factory=list)   # TrialResult, best evidence first
    grade: dict = field(default_factory=dict)
    statement: str = ""
    filtered: bool = False

    @property
    def k(self) -> int:
        return len(self.results)

    @property
    def participants(self) -> int:
        return sum(t.n_randomised for t in self.results)

    @property
    def randomised(self) -> bool:
        return bool(self.results) and all(t.randomised for t in self.results)

    def studies_text(self) -> str:
        if not self.results:
            return "none in this selection" if self.filtered else "no studies"
        kind = "RCT" if self.randomised else "observational"
        return f"{self.participants} ({self.k} {kind}{'s' if self.k > 1 and kind == 'RCT' else ''}" + (
            " studies" if self.k > 1 and kind != "RCT" else " study" if kind != "RCT" else "") + ")"

    def relative_text(self) -> str:
        if not self.results:
            return "not measured"
        if self.k == 1:
            t = self.results[0]
            return t.effect_text() if t.measure != "narrative" else f"not estimable: {t.narrative}"
        return "not pooled: " + "; ".join(f"{t.trial}: " + (t.effect_text() if t.has_effect else t.narrative)
                                          for t in self.results)

    def risk_texts(self) -> tuple[str, str]:
        """(risk with the comparator, risk with immunoglobulin) per GRADEpro: per 1,000 for a binary outcome from
        the trial's control risk and risk difference, a mean difference for a score; blank when not estimable."""
        if self.k != 1:
            return "", ""
        t = self.results[0]
        if t.absolute:
            ab = t.absolute
            ctrl = (f"{ab['ctrl']:.0f} per 1,000" if ab["ctrl_events"] else f"0 of {ab['ctrl_n']} (no events)")
            diff = (f"{tr._more(ab['diff'])} per 1,000 ({tr._more(ab['diff_lb'])} to {tr._more(ab['diff_ub'])})")
            ig = f"{ab['ctrl'] + 1000 * ab['diff']:.0f} per 1,000: {diff}" if ab["ctrl_events"] else diff
            return ctrl, ig
        if t.measure == "MD" and t.has_effect:
            u = f" {t.unit}" if t.unit else ""
            ctrl = f"mean change {t.arm_means['placebo']:+.1f}{u}" if t.arm_means else ""
            if t.ci_lb is None or pd.isna(t.ci_lb):
                return ctrl, f"MD {_hl(t.estimate)}{u} (no CI: spreads not reported)"
            return ctrl, f"MD {_hl(t.estimate)}{u} ({_hl(t.ci_lb)} to {_hl(t.ci_ub)})"
        return "", ""

    def comments(self) -> str:
        o = self.outcome
        parts = []
        if self.results and not self.randomised:
            parts.append("No randomised trial; a controlled non-randomised comparison (ROBINS-I), which starts at low "
                         "certainty.")
        if not self.results and o.observed:
            parts.append("No randomised or controlled comparison; uncontrolled studies are summarised under "
                         "'Observed rates in treated patients', which are not effects.")
        if o.comments:
            parts.append(o.comments)
        if o.mid is not None:
            parts.append(f"Minimal important difference {o.mid:g} {o.mid_unit} ({o.mid_source.split(':')[0]}).")
        return " ".join(parts)

    def record(self) -> dict:
        """As numbers, for the results JSON, releases and ``diff``."""
        num = lambda x: None if x is None or pd.isna(x) else float(x)  # noqa: E731
        t = self.results[0] if self.k == 1 else None
        return {"outcome": f"{tr.POPULATIONS[self.population]}: {self.outcome.label}",
                "analysis": f"{self.population}:{self.outcome.id}",
                "kind": "protocol", "population": self.population, "rank": self.outcome.rank,
                "measure": t.measure if t else ("narrative" if self.results else ""), "k": self.k,
                "participants": self.participants, "estimate": num(t.estimate) if t else None,
                "ci_lb": num(t.ci_lb) if t else None, "ci_ub": num(t.ci_ub) if t else None,
                "null": {"RR": 1.0, "MD": 0.0}.get(t.measure) if t else None, "declined": False,
                "certainty": self.grade.get("certainty", "not rated") if self.results else "no evidence",
                "studies": sorted({x.study_id for x in self.results}), "mid": self.outcome.mid,
                "rd_per_1000": [1000 * x for x in t.rd] if t and t.rd else None}

    def display_row(self) -> dict:
        o = self.outcome
        ctrl, ig = self.risk_texts()
        return {"Outcome (follow-up)": f"{o.label} ({o.follow_up})", "Importance": o.importance,
                "Participants (studies)": self.studies_text(), "Relative effect": self.relative_text(),
                "Risk with comparator": ctrl, "Risk with immunoglobulin": ig,
                "Certainty": self.grade.get("certainty", "") if self.results else "",
                "Reasons": self.grade.get("footnotes", []) if self.results else [],
                "What happens": self.statement, "Comments": self.comments()}


def protocol_sof(ev, report: str | None = None, population: str | None = None) -> list[SofRow]:
    """The summary-of-findings rows of the protocol (all, one report's, or one population's), computed from the
    selection ``ev`` (``analysis.load_evidence``)."""
    proto = ev.tables["protocol"]
    judg = ev.tables.get("grade")
    found = {t.comparison_id: t for t in tr.randomised_evidence(ev) + tr.controlled_evidence(ev)}
    rows = []
    for p in proto.populations:
        if population is not None and p.id != population:
            continue
        for o in p.outcomes:
            if report is not None and o.report != report:
                continue
            rs = [found[c] for c in o.evidence if c in found]
            row = SofRow(p.id, o, rs, filtered=an.filtered(ev.params))
            if rs:
                sugg = _with_mid(rs[0], o.mid) if len(rs) == 1 else tr.combine(rs)
                row.grade = gr.apply(sugg, judg, p.id, o.id)
                row.statement = _statement(row)
            else:
                row.statement = (f"No study in this selection compares immunoglobulin with a control for "
                                 f"{_lower(o.label)}." if row.filtered else
                                 f"No randomised or controlled study in the data measured {_lower(o.label)}.")
            rows.append(row)
    return rows


def results_rows(rows: list[SofRow], protocol) -> list[dict]:
    """The rows as the results JSON keeps them (the landing page builds each population's table from these)."""
    return [{**r.display_row(), "population": r.population, "population_label": protocol.population(r.population).label,
             "rank": r.outcome.rank, "outcome_id": r.outcome.id, "judged": r.grade.get("judged", False),
             "differs": r.grade.get("differs", []), "stale": r.grade.get("stale", [])} for r in rows]


def sof_frame(rows: list[SofRow]) -> pd.DataFrame:
    """GRADEpro columns, one row per outcome (the 'Reasons' column holds the footnotes as a list)."""
    return pd.DataFrame([r.display_row() for r in rows])


def plain_statement(a: an.Analysis, outcome: str) -> str:
    """GRADE plain-language statement (Santesso et al. 2020, J Clin Epidemiol 119:126) for an uncontrolled rate
    or a pooled comparison: high 'results in', moderate 'probably', low 'may', very low 'We are very uncertain'."""
    outcome = re.sub(r"\s*\([^()]*\)\s*$", "", outcome)
    if not a.grade or a.k == 0:
        if a.k == 0 and an.filtered(a.params):
            return f"No study in this selection reports {outcome}."
        return f"No study reports usable data on {outcome}."
    c = a.grade["certainty"]
    if a.kind == "comparison":
        up = a.summary.get("estimate", 1) > 1
        verb = {"high": "increases", "moderate": "probably increases", "low": "may increase"}
        if c == "very low":
            return f"We are very uncertain whether immunoglobulin changes {outcome} compared with placebo."
        if a.declined:
            return f"The trials measured different outcomes; see each trial's result for {outcome}."
        if a.summary.get("ci_lb", 0) <= 1 <= a.summary.get("ci_ub", 2):
            return {"high": "Immunoglobulin results in little or no difference in",
                    "moderate": "Immunoglobulin probably results in little or no difference in",
                    "low": "Immunoglobulin may result in little or no difference in"}[c] + f" {outcome}."
        v = verb[c] if up else verb[c].replace("increase", "reduce")
        return f"Immunoglobulin {v} the proportion of patients with {outcome} compared with placebo."
    if a.kind == "swim":
        vc = a.extra["vote"]
        lead = "We are very uncertain" if c == "very low" else "We are uncertain"
        return (f"{lead} how much {outcome} changes with immunoglobulin: {vc.tally()}, but the size cannot be "
                "pooled.")
    if a.declined or a.summary.get("exact_total"):
        lo, hi = a.data["est"].min(), a.data["est"].max()
        return (f"We are very uncertain how often {outcome} {_occurs(outcome)} with immunoglobulin: studies range from "
                f"{round(100 * lo)} to {round(100 * hi)} in 100 patients, too unlike for one number.")
    est = (a.summary.get("marginal", a.summary.get("estimate"))) if a.k >= 2 else a.data["est"].iloc[0]
    if est is None or pd.isna(est):
        return f"We are very uncertain about {outcome} with immunoglobulin."
    n100 = round(100 * est)
    src = "one uncontrolled study" if a.k == 1 else "uncontrolled studies"
    if c == "very low":
        return (f"We are very uncertain how often {outcome} {_occurs(outcome)} with immunoglobulin (about {n100} in 100 treated "
                f"patients in {src}).")
    verb = {"low": "may occur", "moderate": f"probably {_occurs(outcome)}", "high": _occurs(outcome)}[c]
    return f"In {src}, {outcome} {verb} in about {n100} in 100 patients treated with immunoglobulin."


def observed_rates(items: list) -> pd.DataFrame:
    """The table of observed rates in treated patients (uncontrolled; never in a summary of findings) from
    (outcome label, Analysis) pairs: studies and patients, rate, certainty with its reasons, statement."""
    rows = []
    for outcome, a in items:
        lv = f"{round(a.params['level'] * 100):g}%"
        s = a.summary
        if a.k == 0:
            eff = "none in this selection" if an.filtered(a.params) else "no usable data"
        elif a.kind == "comparison" and a.declined:
            eff = "not pooled (different outcomes): " + "; ".join(
                f"{r.label} RR {r.est:.2f} ({r.ci_lb:.2f} to {r.ci_ub:.2f}), {r.per1000_ctrl:.0f} vs {r.per1000_ig:.0f} "
                f"per 1,000" for r in a.data.itertuples())
        elif a.kind == "comparison":
            eff = (f"RR {s['estimate']:.2f} ({lv} CI {s['ci_lb']:.2f} to {s['ci_ub']:.2f}); "
                   + (f"{s['per1000_ctrl']:.0f} per 1,000 with placebo, {s['per1000_ig']:.0f} per 1,000 with "
                      f"immunoglobulin ({s['per1000_lb']:.0f} to {s['per1000_ub']:.0f})" if "per1000_ctrl" in s else "")
                   + (f"; NNT {s['nnt']:.1f}" if "nnt" in s else ""))
        elif a.kind == "swim":
            eff = f"{a.extra['vote'].tally()} (sign test {p_text(s['sign_pval'])}); size not poolable"
        elif a.k == 1:
            r = a.data.iloc[0]
            eff = f"{an.fmt_est(a, r['est'])} ({lv} CI {an.fmt_est(a, r['ci_lb'])} to {an.fmt_est(a, r['ci_ub'])}), one study"
        elif a.declined:
            eff = (f"not pooled: studies range {an.fmt_est(a, a.data['est'].min())} to {an.fmt_est(a, a.data['est'].max())}")
        elif s.get("marginal") is not None:
            eff = (f"{an.fmt_est(a, s['marginal'])} ({lv} CI {an.fmt_est(a, s['marginal_lb'])} to "
                   f"{an.fmt_est(a, s['marginal_ub'])}), population-average; median study {an.fmt_est(a, s['estimate'])}"
                   + (f"; prediction {an.fmt_est(a, s['pi_lb'])} to {an.fmt_est(a, s['pi_ub'])}" if s.get("pi_lb") is not None else ""))
        else:
            eff = (f"{an.fmt_est(a, s['estimate'])} ({lv} CI {an.fmt_est(a, s['ci_lb'])} to {an.fmt_est(a, s['ci_ub'])})"
                   + (f"; prediction {an.fmt_est(a, s['pi_lb'])} to {an.fmt_est(a, s['pi_ub'])}" if s.get("pi_lb") is not None else ""))
        g = a.grade or {}
        rows.append({"Outcome": outcome, "Studies (patients)": f"{a.k} ({a.n_patients})" if a.k else "0",
                     "Observed rate": eff, "Certainty": g.get("certainty", "not rated"),
                     "Reasons": list(g.get("footnotes", [])),
                     "What this means": plain_statement(a, outcome)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# helpers

def _occurs(outcome: str) -> str:
    """Verb agreement: 'serious adverse events occur', 'relapse occurs'."""
    head = re.split(r"[,(]", outcome)[0].strip().split(" ")
    return "occur" if head and head[-1].endswith(("events", "reactions", "infections", "effects")) else "occurs"


def _lower(s: str) -> str:
    return s[0].lower() + s[1:] if s and not s[:2].isupper() else s


def _hl(x: float) -> str:
    """GRADEpro wording of a difference: '8.2 lower' / '9.5 higher'."""
    return f"{abs(x):.1f} {'lower' if x < 0 else 'higher'}"


def _with_mid(t, mid):
    """The trial's suggestion, with imprecision also judged against the protocol's minimal important difference
    (GRADE 34: rate down when the interval includes both an important and an unimportant effect)."""
    g = dict(t.grade)
    if mid is None or not g.get("domains"):
        return g
    if t.rd:
        lo, hi, unit = 1000 * t.rd[1], 1000 * t.rd[2], " per 1,000"
    elif t.measure == "MD" and t.has_effect and t.ci_lb is not None and not pd.isna(t.ci_lb):
        lo, hi, unit = t.ci_lb, t.ci_ub, f" {t.unit}" if t.unit else ""
    else:
        return g
    crosses = lo < mid < hi or lo < -mid < hi
    if not crosses:
        return g
    dom = {k: dict(v) for k, v in g["domains"].items()}
    imp = dom["imprecision"]
    note = f"the interval ({lo:+.0f} to {hi:+.0f}{unit}) includes both more and less than the minimal important " \
           f"difference ({mid:g}{unit})" if unit == " per 1,000" else \
           f"the interval ({lo:+.1f} to {hi:+.1f}{unit}) includes both more and less than the minimal important " \
           f"difference ({mid:g}{unit})"
    if imp["levels"] == 0:
        dom["imprecision"] = {"levels": 1, "reason": f"serious: {note}"}
    else:
        dom["imprecision"] = {"levels": imp["levels"], "reason": f"{imp['reason']}; {note}"}
    return {**g, "domains": dom}


def _statement(row: SofRow) -> str:
    o = row.outcome
    what = _lower(o.label)
    c = row.grade.get("certainty", "not rated")
    if row.k == 1:
        t = dataclasses.replace(row.results[0], outcome=what, grade=row.grade,
                                mid=o.mid if row.results[0].measure == "MD" else row.results[0].mid)
        return t.statement()
    return tr.combined_statement(row.results, what, c)
