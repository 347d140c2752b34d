"""What the domain notebooks call. A report reads: title, the run's selection in words, key messages and the
summary-of-findings table, the question (PICO), results per question, limitations, references, and the run
stamp in an appendix.

Every sentence displayed here is built from the numbers of the analysis it describes; tables are Markdown
with human headers, percentages with %, counts as integers and "not reported" where a value is missing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from . import analysis as an
from . import sof as sof_mod
from . import plots
from . import published as pub
from .data import data_dir
from .text import NA, count_text, p_text

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
PACKAGES = ("ivighelpers", "numpy", "scipy", "pandas", "statsmodels", "matplotlib", "seaborn", "papermill", "nbconvert")

PARAM_WORDS = {
    "method": ("tau\u00b2 estimator {v}", "REML"), "test": ("{v} confidence intervals", "z"),
    "level": ("{p}% intervals", 0.95), "transform": ("proportions on the {v} scale", None),
    "ri": ("assumed pre-post correlation {v}", 0.5), "add": ("continuity correction {v}", 0.5),
    "to": ("correction added to {v}", "only0"), "designs": ("only {v}", "all"), "subtypes": ("only {v}", "all"),
    "subtype_share": ("subtype share >= {p}%", 0.8), "route": ("only {v}", "all"), "line": ("only {v} line", "all"),
    "population": ("only {v} patients", "all"), "year_min": ("published from {v}", 1900),
    "year_max": ("published up to {v}", 2100), "min_n": ("at least {v} treated patients per study", 1),
    "exclude_high_rob": ("excluding studies at high risk of bias", False),
    "exclude_derived": ("excluding derived values", False),
    "exclude_secondary": ("excluding values read on secondary pages (news, manufacturer, other reviews)", False),
}
DESIGN_WORDS = {"rct": "randomised trials", "crossover_rct": "crossover trials", "prospective_open": "open prospective studies",
                "retrospective_cohort": "retrospective cohorts", "case_series": "case series",
                "nonrandomized_controlled": "non-randomised controlled studies", "registry": "registries"}
TRANSFORM_WORDS = {"PLO": "logit", "PFT": "Freeman-Tukey", "PAS": "arcsine", "PR": "raw proportion",
                   "GLMM": "binomial-normal (GLMM)"}


@dataclass
class Context:
    domain: str
    run_name: str
    params: dict
    ev: an.Evidence
    figdir: Path | None
    default_transform: str = "PLO"
    results: dict = field(default_factory=dict)
    items: list = field(default_factory=list)         # (outcome label, Analysis, key message?): uncontrolled rates
    trials: list = field(default_factory=list)        # (TrialResult, key message?): randomised comparisons
    syntheses: list = field(default_factory=list)     # (outcome, narrative synthesis of trials, key message?)
    protocol: list | None = None                       # this report's summary-of-findings rows (sof.SofRow)
    output_dir: Path | None = None                     # None: the review itself (figures/<domain>/, reports/results/)

    @property
    def results_path(self) -> Path:
        """Where the key results JSON is written (the review's own, or the run folder's)."""
        if self.output_dir is None:
            return REPORTS / "results" / f"{self.domain}.json"
        return self.output_dir / "results.json"

    @property
    def results_shown(self) -> str:
        """The results file as the reader will find it once the run is published (not the staging folder)."""
        if self.output_dir is None:
            return f"reports/results/{self.domain}.json"
        return f"reports/runs/{self.run_name}/results.json"


def start(domain: str, namespace: dict, default_transform: str = "PLO") -> Context:
    """Validate the parameters found in ``namespace``, load the evidence, state the selection in words.

    ``output_dir`` (set by ``python -m ivighelpers run`` and by ``make report``: a private staging folder) receives
    the figures and the results JSON; without it (``make notebooks``, executing in place) they go to the review's
    own ``figures/<domain>/`` and ``reports/results/<domain>.json``.
    """
    raw = {k: namespace[k] for k in list(an.DEFAULT_PARAMS) if k in namespace}
    params = an.validate_params(raw)
    run_name = namespace.get("run_name") or domain
    out = namespace.get("output_dir") or ""
    output_dir = Path(out) if out else None
    figdir = None if output_dir is None else output_dir / "figures"
    ev = an.load_evidence(params)
    ctx = Context(domain, run_name, params, ev, figdir, default_transform, output_dir=output_dir)
    display(Markdown(selection_line(ctx)))
    return ctx


def selection_line(ctx: Context) -> str:
    """The run's non-default parameters and what the filters removed, in words."""
    p = ctx.params
    words = []
    for k, (tmpl, default) in PARAM_WORDS.items():
        v = p[k]
        if k == "transform":
            default = ctx.default_transform
        if v == default:
            continue
        if k in ("designs",):
            v = ", ".join(DESIGN_WORDS.get(x, x) for x in v)
        elif k == "subtypes":
            v = ", ".join(x.upper() for x in v)
        elif isinstance(v, list):
            v = " or ".join(str(x).replace("_", " ") for x in v)
        elif k == "transform":
            v = TRANSFORM_WORDS.get(v, v)
        elif k == "test":
            v = "Knapp-Hartung" if v == "knha" else "normal (z)"
        words.append(tmpl.format(v=v, p=round(100 * v) if isinstance(v, float) else v))
    head = ("**This run:** " + "; ".join(w[0].upper() + w[1:] if i == 0 else w for i, w in enumerate(words)) + "."
            if words else "**This run:** the default analysis (all included studies; REML; "
            f"{TRANSFORM_WORDS[ctx.default_transform]} scale for proportions).")
    n_all = len(ctx.ev.tables["studies"])
    out = [head, f"{len(ctx.ev.studies)} of {n_all} included studies are in this selection."]
    for name, n, which in ctx.ev.filter_log:
        if n:
            out.append(f"Filter *{name}* removed {n}: {', '.join(which)}.")
    return " ".join(out)


def add(ctx: Context, outcome: str, a: an.Analysis, key: bool = True) -> an.Analysis:
    """Register an analysis for the summary of findings (``key``: also in the key messages)."""
    ctx.items.append((outcome, a, key))
    ctx.results[a.name] = a.results_json()
    return a


def key_messages(ctx: Context, extra: list | None = None) -> None:
    """Sentences computed from the results: this report's summary-of-findings outcomes first (best evidence,
    recorded certainty), then other randomised comparisons registered as key, then uncontrolled rates (labelled),
    then ``extra`` computed sentences; at most 6."""
    from . import notebook_trials as nt
    rows = protocol_rows(ctx)
    used = {t.comparison_id for r in rows for t in r.results}
    lines = [_protocol_sentence(r) for r in rows if r.results]
    lines += [nt.trial_key_sentence(t) for t, key in ctx.trials if key and t.role == "main" and t.comparison_id not in used]
    lines += [f"{o[0].upper() + o[1:]} ({s['k']} randomised trials, {s['participants']} participants): "
              f"{s['significant']} of {s['k']} found a significant difference (certainty: {s['grade']['certainty']}). "
              f"{s['statement']}" for o, s, key in ctx.syntheses
              if key and not {t.comparison_id for t in s["results"]} <= used]
    lines += [("Uncontrolled: " if lines else "") + _key_sentence(outcome, a) for outcome, a, key in ctx.items if key]
    lines += extra or []
    display(Markdown("## Key messages\n\n" + "\n".join(f"- {x}" for x in lines[:6])))


def _protocol_sentence(r) -> str:
    """One summary-of-findings outcome as a key message: the evidence, the effect, the certainty, the statement."""
    from . import notebook_trials as nt
    from .trials import POPULATIONS
    o = r.outcome
    what = o.label if r.population == "dm_pm" else f"{POPULATIONS[r.population].capitalize()}, {o.label[0].lower() + o.label[1:]}"
    if r.k == 1:
        t = r.results[0]
        head = f"{what} ({t.trial}, {r.participants} {'randomised' if r.randomised else 'compared'})"
        body = nt.trial_sentence(t).rstrip(".")
    else:
        head = f"{what} ({r.k} {'RCTs' if r.randomised else 'studies'}, {r.participants} participants)"
        body = r.relative_text()
    return f"{head}: {body} (certainty: {r.grade.get('certainty')}). {r.statement}"


def sof(ctx: Context, title: str = "Summary of findings") -> None:
    """GRADE summary of findings: this report's rows of the protocol (``data/protocol.yaml``), one table per
    population in GRADEpro's layout, certainty from the recorded judgements (``data/grade.csv``) with footnotes;
    then, apart and labelled, the observed rates in treated patients from uncontrolled studies (not effects)."""
    lv = f"{round(ctx.params['level'] * 100):g}%"
    notes, parts = [], []
    rows = protocol_rows(ctx)
    proto = ctx.ev.tables["protocol"]
    for pid in dict.fromkeys(r.population for r in rows):
        pop = proto.population(pid)
        t = _footnoted(sof_mod.sof_frame([r for r in rows if r.population == pid]), notes)
        parts.append(f"## {title}: {pop.label}\n\n**Question:** {pop.question} **Comparator:** {pop.comparator}. "
                     f"This report's part of the protocol's outcomes (`data/protocol.yaml`; the landing page shows "
                     f"every outcome of each population). Relative effects with {lv} CIs; absolute effects per 1,000 "
                     "from the trial's risk difference. Certainty (GRADE) is the review team's recorded judgement "
                     "(`data/grade.csv`), with the rules' suggestion where they differ.\n\n" + md_table(t))
    if not rows:
        parts.append(f"## {title}\n\nNo critical or important outcome of the protocol (`data/protocol.yaml`) is "
                     "answered in this report: its outcomes are surrogate or secondary measures, shown below with "
                     "their randomised comparisons where any exist.")
    items = _observed_items(ctx)
    if items:
        t = _footnoted(sof_mod.observed_rates(items), notes)
        parts.append("## Observed rates in treated patients (uncontrolled)\n\nProportions of treated patients with "
                     f"{lv} confidence intervals, from uncontrolled studies: they include the natural course and "
                     "concurrent treatment, so they are not treatment effects and never enter the summary of findings. "
                     "Certainty (GRADE, the rules' suggestion) starts at low.\n\n" + md_table(t))
    foot = "\n".join(f"{i}. {n[0].upper() + n[1:].rstrip('.')}." for i, n in enumerate(notes, 1))
    display(Markdown("\n\n".join(parts) + "\n\nFootnotes (reasons for each rating):\n\n" + (foot or "none.")))


def _observed_items(ctx: Context) -> list:
    """Observed-rate rows worth a line: no empty rows, no vote count of one study."""
    return [(o, a) for o, a, _ in ctx.items if a.k > 0 and not (a.kind == "swim" and a.k == 1)]


def protocol_rows(ctx: Context) -> list:
    """This report's summary-of-findings rows (computed once per run)."""
    if ctx.protocol is None:
        ctx.protocol = sof_mod.protocol_sof(ctx.ev, report=ctx.domain)
    return ctx.protocol


def _footnoted(t: pd.DataFrame, notes: list) -> pd.DataFrame:
    """Replace the Reasons column (a string or a list of reasons) by numbered footnote marks on Certainty
    (shared numbering across the tables of a report)."""
    marks = []
    for r in t["Reasons"]:
        rs = [x for x in (r if isinstance(r, list) else [r]) if x not in ("none", "no data", "")]
        nums = []
        for x in rs:
            notes.append(x)
            nums.append(str(len(notes)))
        marks.append(f" <sup>{','.join(nums)}</sup>" if nums else "")
    return t.assign(Certainty=[f"{c}{m}" for c, m in zip(t["Certainty"], marks)]).drop(columns=["Reasons"])


def pico(text: str) -> None:
    display(Markdown("## Question and eligibility\n\n" + text))


def show(ctx: Context, a: an.Analysis, published: list | None = None, subgroups: bool = True,
         forest: bool = True) -> None:
    """One question: sentence, studies, forest plot, heterogeneity, subgroups, sensitivity, GRADE."""
    ctx.results[a.name] = a.results_json()
    display(Markdown(f"### {a.title}\n\n{a.sentence()}"))
    if a.notes:
        display(Markdown(" ".join(a.notes)))
    if a.merged:
        display(Markdown("Overlapping reports: " + "; ".join(
            f"{m['kept']} is used for cohort *{m['cohort']}* ({', '.join(m['dropped'])} not counted again)"
            for m in a.merged) + ". Rule: largest n, then longest follow-up, then deeper extraction, then later year."))
    if a.k == 0:
        _show_excluded(a, ctx.ev.studies.set_index('study_id')['label'].to_dict())
        show_published(ctx, published)
        return
    if a.kind == "swim":
        _show_swim(ctx, a)
        return
    display(Markdown(md_table(study_table(a))))
    if forest and a.k >= 2:          # one study: its table row says it all
        _figure(ctx, partial(plots.forest_plot, a), f"{a.name}_forest", alt=forest_alt(a))
    _show_excluded(a, ctx.ev.studies.set_index('study_id')['label'].to_dict())
    if not a.pooled:
        show_published(ctx, published)
        if a.grade:
            _show_grade(a)
        return
    if subgroups and a.subgroups:
        display(Markdown("**Subgroups** (separate tau\u00b2 per subgroup; the test for subgroup differences is "
                         "Q between):\n\n" + md_table(subgroup_table(a))))
        by = "subtype" if "subtype" in a.subgroups else next(iter(a.subgroups))
        _figure(ctx, partial(plots.forest_plot, a, by=by), f"{a.name}_forest_by_{by}", alt=forest_alt(a, by))
    dt = a.extra.get("definition_test")
    if dt:
        display(Markdown(f"Outcome definition as moderator (common tau\u00b2): QM = {dt['QM']:.2f} on {dt['df']} df, "
                         f"{p_text(dt['pval'])}" + (f", R\u00b2 = {dt['R2']:.0f}%." if dt.get("R2") is not None else ".")))
    display(Markdown("**Sensitivity analyses**\n\n" + md_table(sensitivity_table(a))))
    if a.loo is not None:
        loo = an.loo_natural(a)
        rng = (loo["estimate"].min(), loo["estimate"].max())
        infl = a.influence
        flagged = list(infl.index[(infl["cooks_d"] > 4 / a.k)]) if infl is not None else []
        display(Markdown(f"Leaving out one study at a time, the pooled estimate ranges from {_val(a, rng[0])} to "
                         f"{_val(a, rng[1])}. Influential by Cook's distance > 4/k: "
                         f"{', '.join(flagged) if flagged else 'none'}."))
    ss = a.small_study
    if "egger_pval" in ss:
        display(Markdown(f"Small-study effects: Egger's test z = {ss['egger_stat']:.2f}, {p_text(ss['egger_pval'])}."))
        _figure(ctx, partial(plots.funnel_plot, a), f"{a.name}_funnel",
                alt=f"Funnel plot, {a.title}: each study's effect against its standard error ({a.k} studies), with "
                    "the pooled estimate and pseudo-confidence limits")
    else:
        display(Markdown(ss.get("egger_note", "")))
    show_published(ctx, published)
    _show_grade(a)


def moderator_sentence(a: an.Analysis, mr: dict, what: str) -> str:
    """One sentence for a two-level meta-regression (common tau2) on the analysis' studies."""
    if not mr:
        return f"Too few studies to test {what} as a moderator."
    ratio = float(np.exp(mr["coef"]))
    return (f"Across all subtypes ({mr['k']} studies, mixed definitions), studies of {what} had lower odds of "
            f"improvement: odds ratio {ratio:.2f} ({np.exp(mr['ci_lb']):.2f} to {np.exp(mr['ci_ub']):.2f}), "
            f"{p_text(mr['pval'])}" + (f", explaining R\u00b2 = {mr['R2']:.0f}% of the between-study variance."
                                         if mr.get("R2") is not None and mr["k"] >= 10 else
                                         " (with fewer than 10 studies the share of variance explained, R\u00b2, is "
                                         "not a finding).")) if a.measure in ("PLO", "GLMM") else (
        f"Meta-regression on {what}: coefficient {mr['coef']:.2f} ({mr['ci_lb']:.2f} to {mr['ci_ub']:.2f}), "
        f"{p_text(mr['pval'])}.")


def show_over_time(ctx: Context, analyses: list) -> None:
    """Evidence over time: the randomised evidence of this report's summary-of-findings outcomes against the optimal
    information size, then a cumulative meta-analysis by publication year for each uncontrolled pool given."""
    from . import over_time
    display(Markdown("## Evidence over time"))
    info = over_time.information_by_year(protocol_rows(ctx))
    if len(info):
        last = info.groupby(["population", "outcome"], sort=False).tail(1)
        from .trials import POPULATIONS
        lines = [f"{o} ({POPULATIONS[p]}): {int(r.events) if r.information == 'events' else int(r.participants)} of "
                 f"{int(r.ois)} {r.information} ({100 * r.share:.0f}% of the optimal information size)"
                 for p, o, r in zip(last["population"], last["outcome"], last.itertuples())]
        display(Markdown("Randomised evidence so far, against the optimal information size (GRADE: about "
                         f"{over_time.OIS_EVENTS} events for a binary outcome, {over_time.OIS_PARTICIPANTS} "
                         "participants for a continuous one): " + "; ".join(lines) + "."))
        _figure(ctx, partial(plots.information_plot, info), "information_size",
                alt="Bar chart: for each summary-of-findings outcome with randomised trials, the share of the optimal "
                    "information size reached so far; " + "; ".join(lines))
    for a in analyses:
        cu = over_time.cumulative_by_year(a)
        if cu.empty:
            continue
        first, last = cu.iloc[0], cu.iloc[-1]
        mid = cu.iloc[len(cu) // 2]
        middle = (f"after {int(mid['k'])} studies {_pct(mid['estimate'])} ({_pct(mid['ci_lb'])} to "
                  f"{_pct(mid['ci_ub'])}); " if 1 < int(mid["k"]) < int(last["k"]) else "")
        display(Markdown(f"**{a.title}** (cumulative by year, random effects on the logit scale): after the first "
                         f"study ({first['study']}) {_pct(first['estimate'])}; {middle}with all {int(last['k'])} "
                         f"{_pct(last['estimate'])} ({_pct(last['ci_lb'])} to {_pct(last['ci_ub'])}); the latest "
                         f"study ({last['study']}) moved the estimate by "
                         f"{100 * (last['estimate'] - cu.iloc[-2]['estimate']):+.1f} percentage points."))
        _figure(ctx, partial(plots.cumulative_plot, cu, a.title), f"{a.name}_cumulative",
                alt=f"Cumulative meta-analysis by publication year, {a.title}: the pooled proportion after each of "
                    f"{len(cu)} studies, ending at {_pct(last['estimate'])}")


def show_moderator(a: an.Analysis, mr: dict, what: str) -> None:
    display(Markdown("**Meta-regression** (common tau\u00b2, the same model as R metafor's `rma(mods = ~ IBM)`): "
                     + moderator_sentence(a, mr, what) + " A subgroup test with one tau\u00b2 per level and several "
                     "levels spends its power on small groups; the two-level model asks the clinical question directly."))


def show_rates(ctx: Context) -> None:
    """Events per 100 infusion cycles (exact Poisson CI) and patients with >= 1 event, where a study reports the
    number of infusions; every row labelled with the study's own definition."""
    r = an.per_infusion_rates(ctx.ev)
    if r.empty:
        display(Markdown("No study in this selection reports the number of infusions, so no exposure-based rate is given."))
        ctx.results["per_infusion"] = []
        return
    lv = f"{round(ctx.params['level'] * 100):g}%"
    ok = r[r["rate_note"] == ""]
    t = pd.DataFrame({"Study": ok["study"], "Adverse event (as defined)": ok["definition"], "Period": ok["timepoint"].fillna(NA),
                      "Events": ok["events_counted"].map(_int), "Infusion cycles": ok["n_infusions"].map(_int),
                      f"Events per 100 cycles ({lv} CI)": [f"{x:.1f} ({lo:.1f} to {hi:.1f})" for x, lo, hi in
                                                          zip(ok["per_100_infusions"], ok["ci_lb"], ok["ci_ub"])],
                      "Patients with ≥ 1 event": [f"{_int(e)}/{_int(n)} ({_pct(e / n)}; {_pct(lo)} to {_pct(hi)})"
                                                 if pd.notna(e) and pd.notna(n) else NA for e, n, lo, hi in
                                                 zip(ok["events"], ok["n"], ok["patients_lb"], ok["patients_ub"])],
                      "Result ID": ok["result_id"]})
    no = r[r["rate_note"] != ""]
    txt = (f"{len(ok)} results from {ok['study_id'].nunique()} {'study' if ok['study_id'].nunique() == 1 else 'studies'} "
           "give both the number of events and the number of infusion cycles: events per 100 cycles with exact "
           "Poisson limits, beside the share of patients with at least one event. All patients were on "
           "immunoglobulin (uncontrolled exposure).\n\n" + (md_table(t) if len(ok) else ""))
    if len(no):
        txt += ("\n\nNo exposure rate for: " + "; ".join(f"{x.study} ({x.definition}, row {x.result_id})"
                                                      for x in no.itertuples()) + " (the count is of patients or "
                "episodes, not of events per infusion).")
    display(Markdown(txt))
    ctx.results["per_infusion"] = ok[["result_id", "per_100_infusions"]].round(4).to_dict("records")


def show_reported(ctx: Context, codes, title: str, published: list | None = None) -> None:
    """Outcomes reported as single values (e.g. time to response): listed, not pooled, and why."""
    oc = ctx.ev.outcomes
    r = oc[oc["outcome_code"].isin(codes if isinstance(codes, (list, tuple)) else [codes]) & (oc["arm"] == "ig")].copy()
    lab = ctx.ev.studies.set_index("study_id")["label"]
    r["study"] = r["study_id"].map(lab)
    spread = r[r[["sd_post", "sd_change", "q1_post", "min_post"]].notna().any(axis=1)]
    k = r["study_id"].nunique()
    ks = spread["study_id"].nunique()
    why = ("none gives a spread (SD, IQR or range) that pooling would need" if ks == 0 else
           f"{ks} {'gives' if ks == 1 else 'give'} a spread (SD, IQR or range), too few to pool")
    display(Markdown(f"### {title}\n\n{k} {'study reports' if k == 1 else 'studies report'} this; {why}, so the "
                     "values are listed, not pooled."))
    if len(r):
        t = pd.DataFrame({"Study": r["study"], "Definition": r["definition"].fillna(NA), "Patients": r["n"].map(_int),
                          "Value": [_value(x) for x in r.itertuples()], "Unit": r["unit"].replace("", NA).fillna(NA),
                          "Result ID": r["result_id"]})
        display(Markdown(md_table(t)))
    ctx.results[str(codes)] = {"k_reporting": int(r["study_id"].nunique()), "result_ids": list(r["result_id"])}
    show_published(ctx, published)


def effect_direction(ctx: Context, analyses: list) -> None:
    """Effect-direction plot (studies x outcomes; arrows by direction, sized by n, coloured by risk of bias)."""
    fig = plots.effect_direction_plot(analyses)
    if fig is None:
        return
    _figure(ctx, fig, "effect_direction", alt="Effect-direction plot: one arrow per study and outcome (up: a rise, "
            "down: a fall, diamond: no change), sized by the number of treated patients, coloured by risk of bias")


def limitations(ctx: Context, extra: list | None = None) -> None:
    """Limitations computed from the studies behind the registered analyses."""
    used = {t.study_id for t, _ in ctx.trials}
    for _, a, _ in ctx.items:
        if a.k:
            used |= set(a.data["study_id"])
    st = ctx.ev.studies[ctx.ev.studies["study_id"].isin(used)]
    lines = []
    if len(st):
        ab = int((st["extraction_level"] == "abstract").sum())
        lines.append(f"{ab} of the {len(st)} studies behind these results could be read only as abstracts (or "
                     "news reports of them); definitions, denominators and spreads may differ in the full texts.")
        single = int((~st["design"].isin(list(an.RANDOMISED))).sum())
        lines.append(f"{single} of the {len(st)} studies are uncontrolled (single-arm); their rates include the natural "
                     "course, regression to the mean and the effect of concurrent glucocorticoids and immunosuppressants.")
        merged = sorted({m["cohort"] for _, a, _ in ctx.items for m in a.merged})
        if merged:
            lines.append(f"Reports of one cohort were counted once ({', '.join(merged)}); the groupings are inferred "
                         "from centre, authors and periods where the reports do not state them (data/cohorts.csv).")
        unclear = int((st["predominant"] == "unclear").sum())
        if unclear:
            lines.append(f"{unclear} studies do not print their subtype mix; they are counted with DM/PM unless they "
                         "report IBM patients.")
    lines += extra or []
    display(Markdown("## Limitations\n\n" + "\n".join(f"- {x}" for x in lines)))


def references(ctx: Context) -> None:
    """Every study behind this report, with first author, year, journal and PMID/DOI links."""
    used = {t.study_id for t, _ in ctx.trials} | {x.study_id for _, syn, _ in ctx.syntheses for x in syn["results"]}
    for _, a, _ in ctx.items:
        if a.k:
            used |= set(a.data["study_id"])
            if a.alternatives is not None:
                used |= set(a.alternatives["study_id"])
    st = ctx.ev.tables["studies"]
    st = st[st["study_id"].isin(used)] if used else st.iloc[0:0]
    lines = []
    for r in st.sort_values(["first_author", "year"], na_position="last").itertuples():
        auth = re.sub(r"\s*\((unverified|probable)[^)]*\)$", " [author name not confirmed in the source read]",
                      r.first_author) if r.first_author else "Authors not shown"
        yr = int(r.year) if pd.notna(r.year) else "n.d."
        links = []
        if pd.notna(r.pmid):
            links.append(f"[PMID {int(r.pmid)}](https://pubmed.ncbi.nlm.nih.gov/{int(r.pmid)}/)")
        if r.doi:
            links.append(f"[doi:{r.doi}](https://doi.org/{r.doi})")
        if not links:
            links.append(f"[source]({r.url})")
        lines.append(f"{auth} ({yr}). {r.title or 'Title not shown'}. *{r.journal or 'journal not shown'}*. "
                     f"{' · '.join(links)} (read: {r.extraction_level.replace('_', ' ')}; id `{r.study_id}`)")
    display(Markdown("## References\n\n" + ("\n".join(f"{i}. {x}" for i, x in enumerate(lines, 1)) or "No study.")))


def appendix(ctx: Context) -> None:
    """Run stamp (parameters, data and code fingerprints, versions) and the JSON of key results."""
    display(Markdown("## Appendix: run stamp\n\n" + run_stamp(ctx.params, ctx.run_name)))
    finish(ctx)


def run_stamp(params: dict, run_name: str) -> str:
    """Parameters, data files' SHA-256, the code fingerprint, package versions, git commit and date."""
    lines = [f"**Run stamp** - run `{run_name}`, {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
             f"git commit `{_git_commit()}`", "", "| Parameter | Value |", "|---|---|"]
    lines += [f"| {k} | `{v!r}` |" for k, v in params.items()]
    lines += ["", "| Input | SHA-256 |", "|---|---|"]
    lines += [f"| data/{name} | `{sha}` |" for name, sha in data_fingerprint().items()]
    lines.append(f"| ivighelpers (code) | `{code_fingerprint()}` |")
    vers = []
    for pkg in PACKAGES:
        try:
            vers.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            vers.append(f"{pkg} (not installed)")
    lines += ["", "Packages: " + ", ".join(vers)]
    return "\n".join(lines)


def sof_record(outcome: str, a: an.Analysis) -> dict:
    """One summary-of-findings row as numbers (for releases and ``diff``): estimate and CI on the natural scale
    (risk ratio for a randomised comparison, proportion for a single-arm rate, share of studies in the expected
    direction for vote counting), k, participants, certainty, the studies, and the value of no effect (1 for a
    ratio, 0.5 for a vote count's share; none for a rate of treated patients)."""
    s = a.summary or {}
    pooled = a.k >= 1 and not a.declined and s.get("estimate") is not None
    if a.k == 1 and a.kind != "comparison" and len(a.data):
        r = a.data.iloc[0]
        est, lo, hi = r.get("est"), r.get("ci_lb"), r.get("ci_ub")
    else:
        est, lo, hi = (s.get("estimate"), s.get("ci_lb"), s.get("ci_ub")) if pooled else (None, None, None)
    num = lambda x: None if x is None or pd.isna(x) else float(x)  # noqa: E731
    return {"outcome": outcome, "analysis": a.name, "kind": a.kind, "measure": a.measure, "k": int(a.k),
            "participants": int(a.n_patients or 0), "estimate": num(est), "ci_lb": num(lo), "ci_ub": num(hi),
            "null": {"comparison": 1.0, "swim": 0.5}.get(a.kind), "declined": bool(a.declined),
            "certainty": (a.grade or {}).get("certainty", "not rated"),
            "studies": sorted(set(a.data["study_id"])) if len(a.data) and "study_id" in a.data else []}


def data_fingerprint() -> dict:
    """SHA-256 (16 hex) of each data file (tables and the protocol)."""
    d = data_dir()
    files = sorted([*d.glob("*.csv"), *d.glob("*.yaml")])
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in files}


def code_fingerprint() -> str:
    """SHA-256 (16 hex) of the package's Python sources, in path order: changes when the code changes."""
    h = hashlib.sha256()
    for p in sorted((ROOT / "ivighelpers").glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def finish(ctx: Context) -> None:
    """Write the key results of this run as JSON (``Context.results_path``)."""
    path = ctx.results_path
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = _observed_items(ctx)
    observed = sof_mod.observed_rates(shown).to_dict("records") if shown else []
    rows = protocol_rows(ctx)
    proto = sof_mod.results_rows(rows, ctx.ev.tables["protocol"])
    path.write_text(json.dumps({"domain": ctx.domain, "run_name": ctx.run_name, "params": ctx.params,
                                "k_studies_selected": len(ctx.ev.studies), "analyses": ctx.results,
                                "observed_rates": observed, "protocol_sof": proto,
                                "sof": [r.record() for r in rows] + [sof_record(o, a) for o, a, _ in ctx.items],
                                "fingerprint": {"data": data_fingerprint(), "code": code_fingerprint()}},
                               indent=1, default=str, sort_keys=True))
    display(Markdown(f"Key results of this run: `{ctx.results_shown}`."))


# ---- tables -----------------------------------------------------------------------------------------

def md_table(df: pd.DataFrame) -> str:
    """A Markdown pipe table with no index; cells are strings already formatted, pipes escaped."""
    if df is None or df.empty:
        return "*(none)*"
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            s = NA if v is None or (isinstance(v, float) and np.isnan(v)) or (v is pd.NA) else str(v)
            cells.append(s.replace("|", "\\|").replace("\n", " "))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def study_table(a: an.Analysis) -> pd.DataFrame:
    d = a.data
    lv = f"{round(a.params['level'] * 100):g}%"
    t = {"Study": d["label"], "Design": d["design"].map(DESIGN_WORDS)}
    if a.kind == "proportion":
        t["Events/n"] = [f"{int(x)}/{int(n)}" for x, n in zip(d["events"], d["n"])]
        t[f"Proportion ({lv} CI)"] = [f"{_pct(e)} ({_pct(lo)} to {_pct(hi)})" for e, lo, hi in zip(d["est"], d["ci_lb"], d["ci_ub"])]
    else:
        t["Patients"] = d["n"].map(_int)
        t["Before, mean (SD)"] = [f"{_num(m)} ({_num(s)})" for m, s in zip(d["mean_pre"], d["sd_pre"])]
        t["After, mean (SD)"] = [f"{_num(m)} ({_num(s)})" for m, s in zip(d["mean_post"], d["sd_post"])]
        t[f"Effect ({lv} CI)"] = [f"{e:.2f} ({lo:.2f} to {hi:.2f})" for e, lo, hi in zip(d["est"], d["ci_lb"], d["ci_ub"])]
    t["Weight"] = [f"{w:.1f}%" for w in d["weight"]]
    t["Outcome as defined"] = d["definition"].fillna(NA)
    t["Time point"] = d["timepoint"].fillna(NA).replace("", NA)
    t["Risk of bias"] = d["rob_overall"].str.replace("_", " ")
    t["Read"] = d["extraction_level"].str.replace("_", " ")
    t["Result ID"] = d["result_id"] + np.where(d["derived"] != "", " (derived: " + d["derived"].str.replace("_", " ") + ")", "")
    return pd.DataFrame(t)


def subgroup_table(a: an.Analysis) -> pd.DataFrame:
    rows = []
    lv = f"{round(a.params['level'] * 100):g}%"
    for var, sg in a.subgroups.items():
        first = True
        for lvl, f in sg.fits.items():
            ni = a.data.loc[a.data[var].astype(str) == str(lvl), "n"].astype(float).to_numpy()
            t = f.transformed(plots._tname(a) if a.measure != "GLMM" else "ilogit", ni=ni)
            rows.append({"Variable": plots.SUB_TITLE.get(var, var) if first else "",
                         "Subgroup": str(lvl).replace("_", " "), "Studies": f.k,
                         f"Estimate ({lv} CI)": f"{_val(a, t['estimate'])} ({_val(a, t['ci_lb'])} to {_val(a, t['ci_ub'])})",
                         "I\u00b2": f"{f.I2:.0f}%" if f.I2 is not None else "not estimable",
                         "Test for subgroup differences": ("" if not first else
                                                           f"Q = {sg.Q_between:.2f}, {p_text(sg.Q_between_pval)}"
                                                           if sg.testable else "not tested: a level with one study "
                                                           "(Handbook 10.11)")})
            first = False
    return pd.DataFrame(rows)


def sensitivity_table(a: an.Analysis) -> pd.DataFrame:
    s = a.sensitivity
    lv = f"{round(a.params['level'] * 100):g}%"
    return pd.DataFrame({
        "Analysis": s["analysis"], "Studies": s["k"].map(_int),
        f"Estimate ({lv} interval)": [f"{_val(a, e)} ({_val(a, lo)} to {_val(a, hi)})" if k and not pd.isna(e) else "no study"
                                      for e, lo, hi, k in zip(s.get("estimate", pd.Series(np.nan, index=s.index)),
                                                              s.get("ci_lb", pd.Series(np.nan, index=s.index)),
                                                              s.get("ci_ub", pd.Series(np.nan, index=s.index)), s["k"])],
        "tau\u00b2": [f"{x:.3f}" if x is not None and not pd.isna(x) else "" for x in s.get("tau2", pd.Series(np.nan, index=s.index))],
        "I\u00b2": [f"{x:.0f}%" if x is not None and not pd.isna(x) else "" for x in s.get("I2", pd.Series(np.nan, index=s.index))]})


# ---- helpers ------------------------------------------------------------------------------------------

def show_published(ctx: Context, published: list | None) -> None:
    """Published pooled estimates beside this review's like-for-like result (``ivighelpers.published``)."""
    if not published:
        return
    t = pub.comparison_table(ctx.ev, published)
    if len(t):
        display(Markdown("**Compared with published reviews, like for like** (this review restricted as each published "
                         "estimate was: route, line, subtype, population, search window)\n\n" + md_table(t)))


def _key_sentence(outcome: str, a: an.Analysis) -> str:
    g = a.grade.get("certainty") if a.grade else None
    cert = f" (certainty: {g})" if g else ""
    lv = f"{round(a.params['level'] * 100):g}%"
    s = a.summary
    if a.k == 0:
        return f"{outcome[0].upper() + outcome[1:]}: no study in this selection reports usable data."
    if a.kind == "comparison":
        return f"{outcome[0].upper() + outcome[1:]}: {a.sentence().rstrip('.')}{cert}."
    if a.kind == "swim":
        vc = a.extra["vote"]
        return (f"{outcome[0].upper() + outcome[1:]}: {vc.tally()} (sign test {p_text(vc.pval)}); how large the "
                f"change is cannot be pooled{cert}.")
    if a.k == 1:
        r = a.data.iloc[0]
        return (f"{outcome[0].upper() + outcome[1:]}: one study ({r['label']}, {int(r['n'])} patients): "
                f"{_val(a, r['est'])} ({lv} CI {_val(a, r['ci_lb'])} to {_val(a, r['ci_ub'])}){cert}.")
    if a.declined or s.get("exact_total"):
        return (f"{outcome[0].upper() + outcome[1:]}: {a.k} studies ({a.n_patients} patients) range from "
                f"{_val(a, a.data['est'].min())} to {_val(a, a.data['est'].max())}; too unlike to pool{cert}.")
    if s.get("marginal") is not None:
        return (f"{outcome[0].upper() + outcome[1:]}: {_val(a, s['marginal'])} on average ({lv} CI "
                f"{_val(a, s['marginal_lb'])} to {_val(a, s['marginal_ub'])}; population-average risk of the GLMM) in "
                f"{a.k} studies with {a.n_patients} patients{cert}.")
    return (f"{outcome[0].upper() + outcome[1:]}: {_val(a, s['estimate'])} ({lv} CI {_val(a, s['ci_lb'])} to "
            f"{_val(a, s['ci_ub'])}) in {a.k} studies with {a.n_patients} patients{cert}.")


def _show_swim(ctx, a):
    vc = a.extra["vote"]
    d = a.data
    sign = {"increase": "rise \u25b2", "decrease": "fall \u25bc", "no_change": "no change \u25c6"}
    t = pd.DataFrame({"Study": d["label"], "Design": d["design"].map(DESIGN_WORDS), "Patients": d["n"].map(_int),
                      "Direction": d["direction"].map(sign), "Before": d["mean_pre"].map(_num),
                      "After": d["mean_post"].map(_num), "Change": d["mean_change"].map(_num),
                      "p as printed": d["p_value"].replace("", NA).fillna(NA),
                      "Outcome as defined": d["definition"].fillna(NA), "Risk of bias": d["rob_overall"].str.replace("_", " "),
                      "Result ID": d["result_id"]})
    display(Markdown(f"Vote counting on the direction of effect (Cochrane Handbook 12.2.2.5; SWiM): "
                     f"{vc.sentence()}. Sign test by the exact binomial test; Wilson interval for the proportion of "
                     f"studies. The direction comes from the printed numbers where there are any, otherwise from the "
                     f"report's words (quoted in data/outcomes.csv).\n\n" + md_table(t)))
    st = a.extra.get("stouffer")
    display(Markdown(st.sentence("fall" if vc.direction == "fall" else "rise") + "." if st is not None
                     else a.extra.get("stouffer_note", "")))
    g = a.extra.get("romc")
    if g is not None and len(g):
        names = ", ".join(a.extra["romc_studies"])
        pt = g.assign(cell=[f"{r:.2f} ({lo:.2f} to {hi:.2f})" for r, lo, hi in zip(g["ratio"], g["ci_lb"], g["ci_ub"])])
        grid = pt.pivot(index="cv", columns="r", values="cell")
        grid = grid.reset_index().rename(columns={"cv": "Assumed CV"})
        grid.columns = ["Assumed CV"] + [f"r = {c}" for c in grid.columns[1:]]
        display(Markdown(f"Ratio of means after/before ({names}; {len(a.extra['romc_studies'])} "
                         f"{'study' if len(a.extra['romc_studies']) == 1 else 'studies'} printing both means), with the "
                         "SD imputed as CV x mean and the pre-post correlation r imputed: the grid shows how much the "
                         "interval depends on these assumptions.\n\n" + md_table(grid)))
    _show_grade(a)


def _show_excluded(a, labels=None):
    if a.excluded is not None and len(a.excluded):
        col = "study_id" if "study_id" in a.excluded else "study"
        lab = labels if labels is not None else {}
        display(Markdown("Not used here: " + "; ".join(f"{lab.get(getattr(r, col), getattr(r, col))} ({r.reason})"
                                                        for r in a.excluded.itertuples()) + "."))


def _show_grade(a):
    g = a.grade
    if not g.get("domains"):
        display(Markdown(f"**Certainty of the evidence (GRADE): {g['certainty']}** — {'; '.join(g['footnotes'])}"))
        return
    rows = [{"Domain": k[0].upper() + k[1:], "Rated down": f"{v['levels']} level{'s' if v['levels'] != 1 else ''}"
             if v["levels"] else "no", "Reason": v["reason"]} for k, v in g["domains"].items()]
    display(Markdown(f"**Certainty of the evidence (GRADE): {g['certainty']}** — starts at {g['starting certainty']} "
                     f"({g['design']}).\n\n" + md_table(pd.DataFrame(rows))))


def forest_alt(a: an.Analysis, by: str | None = None) -> str:
    """Alternative text of a forest plot: what is plotted, how many studies and patients, and the pooled result."""
    lv = f"{round(a.params['level'] * 100):g}%"
    what = {"comparison": "the risk ratio of each trial", "proportion": "the proportion in each study",
            "prepost": "the change in each study"}.get(a.kind, "the estimate of each study")
    k = f"{a.k} {'study' if a.k == 1 else 'studies'}" + (f", {a.n_patients} patients" if a.n_patients else "")
    out = f"Forest plot, {a.title}: {what} with its {lv} confidence interval ({k})"
    if by:
        out += f", grouped by {an.SUBGROUP_VARIABLES.get(by, by)} with a subtotal per group"
    s = a.summary
    if a.declined:
        out += "; not pooled"
    elif a.pooled and s.get("estimate") is not None:
        out += (f"; pooled {'risk ratio ' if a.kind == 'comparison' else ''}{_val(a, s['estimate'])} "
                f"({_val(a, s['ci_lb'])} to {_val(a, s['ci_ub'])})")
    return out


# Set by ivighelpers.execute while a notebook runs in its own process: figure_sink(render, alt) renders the figure
# in a forked process while the notebook goes on, and shows the image where the figure was made. In a kernel
# (JupyterLab, nbval) it is None and the figure is rendered here.
figure_sink = None


def _figure(ctx, fig, name, alt: str | None = None):
    """Save the figure (PNG + SVG for the review, PNG only for a re-run; full quality, reproducible) and show a
    64-colour PNG of it in the report. ``fig`` is a figure, or a function without arguments that makes one: with
    ``alt`` given, a run then makes it where it renders it, in a process beside the notebook (``figure_sink``)."""
    from IPython.display import Image
    make = fig if callable(fig) else None
    if make is not None and (alt is None or figure_sink is None):
        fig, make = make(), None
    if alt is None:
        alt = "Figure: " + (fig._suptitle.get_text() if fig._suptitle is not None else
                            (fig.axes[0].get_title(loc="left") if fig.axes else name))
    svg, optimize = ctx.run_name == ctx.domain, ctx.run_name == ctx.domain   # a re-run: PNG only, no optimiser

    def render() -> bytes:
        paths = plots.save_figure(make() if make is not None else fig, ctx.domain, name, ctx.figdir, svg=svg)
        return _report_png(paths[0], optimize)

    if figure_sink is not None:
        figure_sink(render, alt)
    else:
        data = render()
        display(Image(data=data, format="png"), metadata={"alt": alt})
    if make is None:
        plt.close(fig)


def _report_png(path, optimize: bool) -> bytes:
    """The figure as shown in the report: 64 colours (the HTML stays small), optionally optimised."""
    import io

    from PIL import Image as PILImage
    im = PILImage.open(path).convert("RGB").quantize(colors=64, method=PILImage.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=optimize)
    return buf.getvalue()


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"




def _pct(x) -> str:
    return NA if x is None or pd.isna(x) else f"{100 * x:.1f}%"


def _val(a, x):
    if x is None or pd.isna(x):
        return "not estimable"
    return f"{100 * x:.1f}%" if a.kind in ("proportion", "swim") else f"{x:.2f}"


_int = count_text


def _num(x) -> str:
    if x is None or pd.isna(x):
        return NA
    x = float(x)
    return f"{x:.0f}" if abs(x) >= 100 or x == int(x) else f"{x:.3g}"


def _value(r) -> str:
    for c in ("estimate", "mean_post", "median_post", "events"):
        v = getattr(r, c)
        if v is not None and not pd.isna(v):
            return _num(v)
    return NA
