"""What the domain notebooks call to show randomised evidence (``ivighelpers.trials``): one table per question
with relative and absolute effects, the published anchors beside the computed numbers, crossover sensitivity
analyses, the structured narrative synthesis of trials without numbers, GRADE with reasons, and the rows of the
summary of findings. Every sentence is built from the numbers it describes.
"""

from __future__ import annotations

import pandas as pd
from IPython.display import Markdown, display

from . import analysis as an
from . import trials as tr
from .data import SECONDARY_SOURCES, SOURCE_WORDS

DESIGN = {"rct": "parallel RCT", "crossover_rct": "crossover RCT", "retrospective_cohort": "controlled cohort "
          "(non-randomised)", "prospective_open": "controlled prospective study (non-randomised)",
          "nonrandomized_controlled": "controlled non-randomised study", "registry": "registry comparison"}


def add_trial(ctx, t: tr.TrialResult, key: bool = True) -> tr.TrialResult:
    """Register a randomised comparison for the summary of findings (``key``: also in the key messages)."""
    ctx.trials.append((t, key))
    ctx.results[f"rct_{t.comparison_id}"] = trial_record(t)
    return t


def add_synthesis(ctx, syn: dict, outcome: str, key: bool = True) -> dict:
    """Register a narrative synthesis of several trials (e.g. the IBM trials) for the summary of findings."""
    if syn:
        ctx.syntheses.append((outcome, syn, key))
        ctx.results[f"synthesis_{outcome}"] = {k: v for k, v in syn.items() if k != "results"}
    return syn


def show_trials(ctx, results: list, title: str, empty: str = "No randomised trial in this selection reports this.") -> None:
    """A table of randomised comparisons, then per comparison: the sentence, the anchor, sensitivity, GRADE."""
    display(Markdown(f"### {title}"))
    if not results:
        display(Markdown(empty))
        return
    display(Markdown(md(trial_table(results))))
    from .notebook import protocol_rows
    in_sof = {t.comparison_id: r for r in protocol_rows(ctx) for t in r.results}
    for t in results:
        ctx.results[f"{'rct' if t.randomised else 'nrs'}_{t.comparison_id}"] = trial_record(t)
        parts = [f"**{t.trial}, {t.outcome}** ({DESIGN.get(t.design, t.design)}, {t.n_randomised} "
                 f"{'randomised' if t.randomised else 'compared'}; "
                 f"{tr.ANALYSES[t.analysis]}): {trial_sentence(t)}"]
        if t.anchor:
            parts.append(anchor_sentence(t))
        if t.sensitivity:
            parts.append("Sensitivity to the within-patient correlation: " + "; ".join(
                f"{lab}: RR {e:.2f} ({lo:.2f} to {hi:.2f})" for lab, e, lo, hi in t.sensitivity) + ".")
        if t.secondary_source:
            parts.append(f"Numbers read on: {source_words(t)}. Without secondary pages (preset `primary-sources`, "
                         "or `-p exclude_secondary true`) this comparison has no data.")
        parts += t.notes
        g = t.grade
        if t.role == "subgroup":
            parts.append("Certainty: not rated — " + "; ".join(g["footnotes"]) + ".")
        else:
            parts.append(f"Certainty (GRADE{'' if t.randomised else ', observational: starts low'}, the rules' "
                         f"suggestion): **{g['certainty']}**"
                         + (" — rated down for " + "; ".join(g["footnotes"]) if g["footnotes"] else "") + ".")
        if t.comparison_id in in_sof:
            r = in_sof[t.comparison_id]
            parts.append(f"Summary of findings, *{r.outcome.label}*" + (f" (with {r.k - 1} other trial(s))" if r.k > 1 else "")
                         + f": certainty **{r.grade['certainty']}**, the review team's recorded judgement"
                         + (" (differs from the rule for " + ", ".join(x.replace('_', ' ') for x in r.grade['differs'])
                            + ")" if r.grade.get("differs") else "") + ".")
        parts.append(f"*{t.statement()}* (rows {', '.join(t.result_ids)})")
        display(Markdown("\n\n".join(parts)))


def show_controlled(ctx, results: list, title: str) -> None:
    """Controlled non-randomised comparisons (ROBINS-I), shown as comparisons and kept apart from the randomised
    evidence and from the summary of findings."""
    if not results:
        display(Markdown(f"### {title}\n\nNo controlled non-randomised study in this selection reports a comparison "
                         "for this report's outcomes."))
        return
    k = len({t.study_id for t in results})
    show_trials(ctx, results, title)
    from .notebook import protocol_rows
    in_sof = {t.comparison_id for r in protocol_rows(ctx) for t in r.results}
    used = [t for t in results if t.comparison_id in in_sof]
    display(Markdown(f"{k} controlled non-randomised {'study' if k == 1 else 'studies'}: who received immunoglobulin "
                     "was chosen by the treating physicians, so these comparisons carry confounding by indication "
                     "(ROBINS-I). They start at low certainty and are never pooled with the trials. "
                     + (f"{', '.join(f'{t.trial} ({t.outcome})' for t in used)} "
                        f"{'answers a protocol outcome' if len(used) == 1 else 'answer protocol outcomes'} for which no "
                        "randomised trial exists, so the summary of findings uses "
                        f"{'it' if len(used) == 1 else 'them'}; the others stay out of it."
                        if used else "They stay out of the summary of findings: randomised evidence answers the "
                        "protocol's outcomes, or the outcome is not one of them.")))


def show_synthesis(ctx, syn: dict, title: str, outcome: str, published: list | None = None) -> None:
    """Structured narrative synthesis (SWiM) of trials whose between-group results have no computable effect."""
    display(Markdown(f"### {title}"))
    if not syn:
        display(Markdown(f"No randomised trial in this selection reports {outcome}."))
        return
    rows = [{"Trial": t.trial, "Design": DESIGN.get(t.design, t.design), "Randomised": t.n_randomised,
             "Outcome (time)": f"{t.outcome}", "Between-group result": (t.effect_text() if t.measure == "MD" else
                                                                       t.narrative),
             "Direction": t.direction.replace("_", " "), "Significant": t.significant,
             "Result IDs": ", ".join(t.result_ids)} for t in syn["results"]]
    g = syn["grade"]
    txt = (f"{syn['k']} randomised {'trial' if syn['k'] == 1 else 'trials'} ({syn['participants']} participants): "
           f"{syn['significant']} of {syn['k']} found a statistically significant between-group difference in "
           f"{outcome}. **{syn['statement']}** Certainty (GRADE, the rules' suggestion): **{g['certainty']}**"
           + (" — rated down for " + "; ".join(g["footnotes"]) if g["footnotes"] else "") + ". The trials print "
           "no spreads, so no mean difference can be pooled; the synthesis is by direction and significance "
           "(SWiM, Cochrane Handbook 12).")
    pub = ""
    if published:
        pe = ctx.ev.tables["published_estimates"].set_index("estimate_id")
        for pid in published:
            if pid in pe.index:
                r = pe.loc[pid]
                pub += (f"\n\nPublished review: {r['review']}: {r['outcome']}, {r['k']:.0f} trials, {r['n']:.0f} "
                        f"participants: {r['measure'].replace('_', ' ')}" + (f" ({r['notes']})" if r["notes"] else "")
                        + f" [{pid}].")
    display(Markdown(txt + "\n\n" + md(pd.DataFrame(rows)) + pub))


def trial_table(results: list) -> pd.DataFrame:
    lv = f"{round(results[0].level * 100):g}%"
    return pd.DataFrame([{
        "Trial" if t.randomised else "Study": t.trial, "Outcome (time)": t.outcome,
        "Design; analysis": f"{DESIGN.get(t.design, t.design)}; {tr.ANALYSES[t.analysis]}",
        "Randomised" if t.randomised else "Compared": t.n_randomised,
        "Immunoglobulin": _arm(t, "ig"), ("Placebo" if all(x.randomised for x in results) else "Control"): _arm(t, "placebo"),
        f"Relative effect ({lv} CI)": t.effect_text(), "Absolute effect": t.absolute_text() or "not computed",
        "NNTB / NNTH": t.nnt.text if t.nnt else "", "Certainty": t.grade.get("certainty", "not rated"),
        "Numbers read on": source_words(t)} for t in results])


def source_words(t: tr.TrialResult) -> str:
    """The kinds of page the comparison's numbers were read on, secondary ones marked."""
    return "; ".join(SOURCE_WORDS.get(x, x) + (" (secondary)" if x in SECONDARY_SOURCES else "") for x in t.source_types)


def trial_sentence(t: tr.TrialResult) -> str:
    """The comparison in one sentence (between-group effect, absolute effect, NNTB/NNTH)."""
    if t.measure == "RR":
        (a, n1), (c, n2) = t.counts["ig"], t.counts["placebo"]
        s = f"{a} of {n1} with immunoglobulin and {c} of {n2} {t.comparator}; {t.effect_text()}"
        if t.rd:
            rd, lo, hi = t.rd
            s += (f"; risk difference {100 * rd:+.1f} percentage points ({100 * lo:+.1f} to {100 * hi:+.1f}); "
                  f"{t.absolute_text()}")
        if t.nnt:
            s += f"; {t.nnt.text}"
        return s + "."
    if t.measure == "MD":
        return f"{t.effect_text()}" + (f"; {t.narrative}" if t.narrative else "") + "."
    return f"{t.narrative}."


def anchor_sentence(t: tr.TrialResult) -> str:
    """The published between-group result beside the computed one, and whether it is reproduced (to the
    published rounding: whole percentage points)."""
    a = t.anchor
    if not t.rd or a.get("ci_lb") is None:
        return f"Published: {a['estimate']:g} ({a['definition']})."
    rd = [100 * x for x in t.rd]
    same = all(round(x) == round(y) for x, y in zip(rd, (a["estimate"], a["ci_lb"], a["ci_ub"])))
    return (f"Published difference {a['estimate']:g} percentage points ({a['ci_lb']:g} to {a['ci_ub']:g}; row "
            f"{a['result_id']}); computed here {rd[0]:.1f} ({rd[1]:.1f} to {rd[2]:.1f}): "
            + ("reproduced to the published rounding." if same else "**not reproduced** (see the row's notes)."))


def trial_key_sentence(t: tr.TrialResult) -> str:
    c = t.grade.get("certainty", "not rated")
    body = trial_sentence(t).rstrip(".")
    return (f"{t.outcome[0].upper() + t.outcome[1:]} ({t.trial}, {t.n_randomised} randomised): {body} "
            f"(certainty: {c}). {t.statement()}")


def trial_record(t: tr.TrialResult) -> dict:
    """One randomised comparison as numbers (results JSON, releases)."""
    num = lambda x: None if x is None or pd.isna(x) else float(x)  # noqa: E731
    return {"comparison_id": t.comparison_id, "study_id": t.study_id, "trial": t.trial, "population": t.population,
            "outcome": t.outcome, "outcome_code": t.outcome_code, "analysis": t.analysis, "role": t.role,
            "harm": t.harm, "randomised": t.n_randomised, "measure": t.measure, "estimate": num(t.estimate),
            "ci_lb": num(t.ci_lb), "ci_ub": num(t.ci_ub),
            "rd": [num(x) for x in t.rd] if t.rd else None, "nnt": t.nnt.text if t.nnt else None,
            "certainty": t.grade.get("certainty"), "statement": t.statement(), "result_ids": t.result_ids}


def _arm(t, arm) -> str:
    if t.counts:
        x, n = t.counts[arm]
        return f"{x}/{n}"
    return ""


def md(df: pd.DataFrame) -> str:
    from .notebook import md_table
    return md_table(df)


def show_not_usable(ctx, report: str) -> None:
    """Randomised trials in the selection with no comparison for this report, and why."""
    st = ctx.ev.studies
    rand = st[st["design"].isin(list(an.RANDOMISED))]
    plan = ctx.ev.tables["randomised"]
    used = set(plan.loc[plan["report"] == report, "study_id"])
    gone = rand[~rand["study_id"].isin(used)]
    left = tr.left_out_by_value_filters(ctx.ev, report)
    if left:
        display(Markdown("Left out by this run's value filters (a comparison needs all its rows): " + "; ".join(
            f"{x['trial']}, {x['outcome']} (rows {', '.join(x['rows'])}: {x['why']})" for x in left) + "."))
    if gone.empty:
        display(Markdown(f"Every randomised trial in this selection ({len(rand)}) contributes a comparison or a "
                         "narrative result above." if len(rand) else "No randomised trial is in this selection."))
        return
    display(Markdown("Randomised trials not usable here: " + "; ".join(
        f"{r.label} ({DESIGN.get(r.design, r.design)}): no between-group result for this report's outcomes in the data"
        for r in gone.itertuples()) + "."))
