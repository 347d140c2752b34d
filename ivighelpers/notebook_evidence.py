"""What the evidence-base notebook (00) calls: PRISMA flow, study characteristics, shared patients (pair decisions),
risk of bias, the evidence map, published reviews like for like, registered trials without results and the full
texts to extract first, every count computed from ``data/``."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from . import evidence as ev_
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
        f"{p['reports_not_retrieved']} eligible reports could not be read beyond their opening"
        + (f", and {p['studies_awaiting']} eligible {'study awaits' if p['studies_awaiting'] == 1 else 'studies await'} "
           f"classification ({', '.join(p['awaiting'])}: no outcome can be read in any stored copy)"
           if p.get("studies_awaiting") else "") + ".",
        f"{int(st['design'].isin(['rct', 'crossover_rct']).sum())} of {len(st)} studies in this selection are randomised; "
        f"the rest are uncontrolled cohorts and case series.",
        f"{len(t['cohorts'])} reports belong to {t['cohorts']['cohort_id'].nunique()} cohorts reported more than once; "
        "each analysis counts one report per cohort.",
        "Extraction depth: " + ", ".join(f"{v} {'study' if v == 1 else 'studies'} {k.replace('_', ' ')}"
                                         for k, v in lv.items()) + ".",
    ])))
    display(Markdown("## Flow of studies (PRISMA 2020)"))
    _figure(ctx, partial(plots.prisma_diagram, p), "prisma",
            alt=f"PRISMA 2020 flow diagram: {p['records_screened']} records screened, "
                f"{p['records_excluded']} excluded, {p['reports_not_retrieved']} reports not retrieved, "
                f"{p['studies_included']} studies included, {p.get('studies_awaiting', 0)} awaiting classification")
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
        "Risk of bias": st["rob_overall"].str.replace("_", " "), "What was read": st["study_id"].map(ev_.read_labels(t)),
        "Cohort": np.where(st["cohort_id"] == st["study_id"], "", st["cohort_id"])})
    display(Markdown(md_table(tab)))
    co = t["cohorts"]
    pairs = ev_.overlap_table(t, st)
    n_dec = pairs["decision"].value_counts()
    shown = pairs[~pairs["decision"].str.startswith("distinct")]
    display(Markdown(
        "## Reports that share patients\n\nEvery pair of included reports from the same centre or network, or with shared "
        "authors, over overlapping years is decided in `data/cohort_pairs.csv`: **same cohort** (one report per "
        "analysis: largest n, then longest follow-up, then deeper extraction, then later year), **possible overlap** "
        "(both reports are analysed and each pool with both gives a sensitivity analysis without the smaller) or "
        f"**distinct**. In this selection: {int(n_dec.filter(like='same').sum())} same-cohort, "
        f"{int(n_dec.filter(like='possible').sum())} possible-overlap and {int(n_dec.filter(like='distinct').sum())} "
        "distinct pairs (the distinct ones, with their reasons, are in the file).\n\n"
        + (md_table(shown.rename(columns={"reports": "Reports", "decision": "Decision", "reason": "Why"}))
           if len(shown) else "No pair of reports in this selection shares or may share patients.")))
    if len(co):
        g = co[co["study_id"].isin(st["study_id"])].groupby("cohort_id").agg(reports=("study_id", lambda s: ", ".join(
            st.set_index("study_id")["label"].get(x, x) for x in s)), reason=("reason", "first")).reset_index()
        if len(g):
            display(Markdown("Cohorts reported more than once:\n\n" + md_table(
                g.rename(columns={"cohort_id": "Cohort", "reports": "Reports", "reason": "Why"}))))
    display(Markdown("## Risk of bias"))
    rob = t["risk_of_bias"][t["risk_of_bias"]["study_id"].isin(st["study_id"])]
    for tool in ("RoB2", "ROBINS-I", "JBI-CS"):
        sub = rob[rob["tool"] == tool]
        if sub.empty:
            continue
        n_tool = sub["study_id"].nunique()
        _figure(ctx, partial(plots.rob_traffic_light, sub, st, tool), f"rob_traffic_{tool}",
                alt=f"Risk-of-bias traffic-light plot ({tool}): the judgement in each domain for each of {n_tool} "
                    f"{'study' if n_tool == 1 else 'studies'}")
        _figure(ctx, partial(plots.rob_summary_bars, sub, tool), f"rob_summary_{tool}",
                alt=f"Risk-of-bias summary ({tool}): share of the {n_tool} {'study' if n_tool == 1 else 'studies'} "
                    "with each judgement, per domain")
    display(Markdown("## Evidence map"))
    _figure(ctx, partial(plots.evidence_map, ctx.ev.outcomes, st), "evidence_map",
            alt=f"Evidence map: the number of result rows of each of the {len(st)} studies (rows) in each outcome "
                "domain (columns); a blank cell means none")
    display(Markdown("## Published reviews beside this review, like for like\n\nEvery pooled estimate of an earlier "
                     "review held in `data/published_estimates.csv`, beside what this review finds when restricted the "
                     "same way (route, line, subtype, population, the published search window), and what still "
                     "differs, computed from the data.\n\n" + md_table(pub.comparison_table(ctx.ev))))
    show_registered_trials(ctx)
    show_full_text_priorities(ctx)
    ctx.results["studies"] = {"k": len(st), "patients": treated_patients(st)[0], "cohorts": treated_patients(st)[1],
                              "by_design": st["design"].value_counts().to_dict()}


def show_registered_trials(ctx: Context) -> None:
    """Registered trials without results (ongoing, completed, stopped): what is coming, with registry ids and the
    date the registries were last searched."""
    rt = ev_.registered_trials(ctx.ev.tables)
    ctx.results["registered_trials"] = rt.to_dict("records")
    if rt.empty:
        display(Markdown("## Registered trials without results\n\nNone recorded in `data/registered_trials.csv`."))
        return
    searched = max(rt["searched"])
    tab = rt.rename(columns={"trial": "Trial", "registry": "Registry ids", "population": "Population",
                             "comparison": "Comparison", "design": "Design", "target_n": "Planned n",
                             "status": "Status as printed (pages disagree when of different dates)",
                             "results": "Results", "pages": "Pages read"}).drop(columns="searched")
    display(Markdown(
        f"## Registered trials without results\n\n{len(rt)} registered trials of immunoglobulin in myositis have no "
        f"results in any stored page (registries and mirrors searched {searched}; each page, its date and the words "
        "it prints are in `data/registered_trials.csv`). They are not evidence yet; a living review shows what is "
        "coming: " + "; ".join(f"{r.trial} ({r.registry})" for r in rt.itertuples()) + ".\n\n" + md_table(tab)))


def show_full_text_priorities(ctx: Context, top: int = 15) -> None:
    """The full texts a team with library access should extract first (``evidence.full_text_priorities``)."""
    pr = ev_.full_text_priorities(ctx.ev)
    ctx.results["full_text_priorities"] = pr.head(top)[["rank", "study_id", "score"]].to_dict("records")
    head = ("## Full texts to extract first\n\nThe stored corpus holds mostly abstracts, so most rows were read in an "
            "abstract. These are the reports whose full text could change an answer most, ranked by: randomised trials "
            "first (1,000), then the share of patients the study holds in the uncontrolled pools it enters (100 x the share, "
            "summed over pools), 5 per result printed only as a direction or without a count, 5 per mean without its "
            "SD, and 10 per number read on a secondary page. How to add a full-text extraction: `data/README.md`, "
            "\"Adding a full-text extraction\".")
    if pr.empty:
        display(Markdown(head + "\n\nNo study in this selection was read below full text."))
        return
    tab = pr.head(top).rename(columns={"rank": "Rank", "study": "Study", "design": "Design", "score": "Score",
                                       "why": "Why", "read": "What was read", "reference": "Reference"})
    tab["Design"] = tab["Design"].map(DESIGN_WORDS)
    display(Markdown(head + f"\n\nThe first {len(tab)} of {len(pr)}:\n\n" + md_table(tab.drop(columns="study_id"))))
