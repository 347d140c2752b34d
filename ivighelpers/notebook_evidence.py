"""What the evidence-base notebook (00) calls: PRISMA flow, study characteristics, cohorts, risk of bias and the
evidence map, every count computed from ``data/``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from . import plots
from . import published as pub
from .data import prisma_counts, treated_patients
from .notebook import DESIGN_WORDS, Context, _figure, _int, md_table
from .text import NA


def evidence_overview(ctx: Context) -> None:
    """For 00_evidence_base: PRISMA flow, study characteristics, cohorts, risk of bias, evidence map."""
    t = ctx.ev.tables
    p = prisma_counts(t)
    ctx.results["prisma"] = {k: v for k, v in p.items()}
    st = ctx.ev.studies
    lv = st["extraction_level"].value_counts()
    display(Markdown("## Key messages\n\n" + "\n".join(f"- {x}" for x in [
        f"{p['studies_included']} studies ({treated_patients(t['studies'])[1]} cohorts, "
        f"{treated_patients(t['studies'])[0]:,} patients treated with immunoglobulin counting each cohort once, "
        f"where printed) were included from {p['records_screened']} records screened; "
        f"{p['reports_not_retrieved']} eligible reports could not be read beyond their opening.",
        f"{int(st['design'].isin(['rct', 'crossover_rct']).sum())} of {len(st)} studies in this selection are randomised; "
        f"the rest are uncontrolled cohorts and case series.",
        f"{len(t['cohorts'])} reports belong to {t['cohorts']['cohort_id'].nunique()} cohorts reported more than once; "
        "each analysis counts one report per cohort.",
        "Extraction depth: " + ", ".join(f"{v} {'study' if v == 1 else 'studies'} {k.replace('_', ' ')}"
                                         for k, v in lv.items()) + ".",
    ])))
    display(Markdown("## Flow of studies (PRISMA 2020)"))
    fig = plots.prisma_diagram(p)
    _figure(ctx, fig, "prisma", alt=f"PRISMA 2020 flow diagram: {p['records_screened']} records screened, "
            f"{p['records_excluded']} excluded, {p['reports_not_retrieved']} reports not retrieved, "
            f"{p['studies_included']} studies included")
    if st.empty:
        display(Markdown("No study meets the current filters, so there are no characteristics, risk-of-bias summary "
                         "or evidence map to show."))
        ctx.results["studies"] = {"k": 0, "patients": 0, "by_design": {}}
        return
    once, cohorts = treated_patients(st)
    display(Markdown(f"## Characteristics of the included studies\n\n{len(st)} studies (reports) of {cohorts} cohorts; "
                     f"{once:,} patients treated with immunoglobulin, each cohort counted once by its largest report "
                     f"({int(st['n_ig'].sum()):,} if every report were counted; n not printed for "
                     f"{int(st['n_ig'].isna().sum())})."))
    tab = pd.DataFrame({
        "Study": st["label"], "Design": st["design"].map(DESIGN_WORDS), "Country": st["country"].replace("", NA),
        "Population": st["population"], "Main subtype (>= 80%)": st["subtype"].replace({"unclear": NA, "OTHER": "other"}),
        "Treated (n)": st["n_ig"].map(_int), "Route": st["route"], "Line": st["line"].str.replace("_", " "),
        "Risk of bias": st["rob_overall"].str.replace("_", " "), "Read": st["extraction_level"].str.replace("_", " "),
        "Cohort": np.where(st["cohort_id"] == st["study_id"], "", st["cohort_id"])})
    display(Markdown(md_table(tab)))
    co = t["cohorts"]
    if len(co):
        g = co.groupby("cohort_id").agg(reports=("study_id", lambda s: ", ".join(
            st.set_index("study_id")["label"].get(x, x) for x in s)), reason=("reason", "first")).reset_index()
        display(Markdown("## Reports that share patients\n\nEach analysis uses one report per cohort (largest n, then "
                         "longest follow-up, then deeper extraction, then later year).\n\n" + md_table(
                             g.rename(columns={"cohort_id": "Cohort", "reports": "Reports", "reason": "Why"}))))
    display(Markdown("## Risk of bias"))
    rob = t["risk_of_bias"][t["risk_of_bias"]["study_id"].isin(st["study_id"])]
    for tool in ("RoB2", "ROBINS-I", "JBI-CS"):
        sub = rob[rob["tool"] == tool]
        if sub.empty:
            continue
        fig = plots.rob_traffic_light(sub, st, tool)
        n_tool = sub["study_id"].nunique()
        _figure(ctx, fig, f"rob_traffic_{tool}", alt=f"Risk-of-bias traffic-light plot ({tool}): the judgement in "
                f"each domain for each of {n_tool} {'study' if n_tool == 1 else 'studies'}")
        fig = plots.rob_summary_bars(sub, tool)
        _figure(ctx, fig, f"rob_summary_{tool}", alt=f"Risk-of-bias summary ({tool}): share of the {n_tool} "
                f"{'study' if n_tool == 1 else 'studies'} with each judgement, per domain")
    display(Markdown("## Evidence map"))
    fig = plots.evidence_map(ctx.ev.outcomes, st)
    _figure(ctx, fig, "evidence_map", alt=f"Evidence map: the number of result rows of each of the {len(st)} studies "
            "(rows) in each outcome domain (columns); a blank cell means none")
    display(Markdown("## Published reviews beside this review, like for like\n\nEvery pooled estimate of an earlier "
                     "review held in `data/published_estimates.csv`, beside what this review finds when restricted the "
                     "same way (route, line, subtype, population, the published search window), and what still "
                     "differs, computed from the data.\n\n" + md_table(pub.comparison_table(ctx.ev))))
    ctx.results["studies"] = {"k": len(st), "patients": treated_patients(st)[0], "cohorts": treated_patients(st)[1],
                              "by_design": st["design"].value_counts().to_dict()}
