"""What the domain notebooks call: start (validate, load, run stamp), show an analysis, finish (JSON).

Every sentence displayed here is built from the numbers of the analysis it describes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from . import analysis as an
from . import plots
from .data import DATA_DIR, prisma_counts

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
PACKAGES = ("ivighelpers", "numpy", "scipy", "pandas", "statsmodels", "matplotlib", "seaborn", "papermill", "nbconvert")


@dataclass
class Context:
    domain: str
    run_name: str
    params: dict
    ev: an.Evidence
    figdir: Path | None
    results: dict = field(default_factory=dict)


def start(domain: str, namespace: dict) -> Context:
    """Validate the parameters found in ``namespace``, load the evidence and show the run stamp."""
    pd.set_option("display.max_columns", 60)
    pd.set_option("display.max_colwidth", 80)
    pd.set_option("display.width", 250)
    raw = {k: namespace[k] for k in list(an.DEFAULT_PARAMS) if k in namespace}
    params = an.validate_params(raw)
    run_name = namespace.get("run_name") or domain
    figdir = None if run_name == domain else REPORTS / "runs" / run_name / "figures"
    ev = an.load_evidence(params)
    ctx = Context(domain, run_name, params, ev, figdir)
    display(Markdown(run_stamp(params, run_name)))
    removed = [f"{name}: {n} removed" for name, n in ev.filter_log if n]
    display(Markdown(f"**Studies in this selection:** {len(ev.studies)} of {len(ev.tables['studies'])} included studies"
                     + (f" ({'; '.join(removed)})." if removed else " (no filter removes any study).")))
    return ctx


def run_stamp(params: dict, run_name: str) -> str:
    """Parameters, data files' SHA-256, package versions, git commit and date, as a Markdown block."""
    lines = [f"**Run stamp** - run `{run_name}`, {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
             f"git commit `{_git_commit()}`", "", "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | `{v!r}` |" for k, v in params.items()]
    lines += ["", "| data file | SHA-256 |", "|---|---|"]
    for p in sorted(DATA_DIR.glob("*.csv")):
        lines.append(f"| {p.name} | `{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}` |")
    vers = []
    for pkg in PACKAGES:
        try:
            vers.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            vers.append(f"{pkg} (not installed)")
    lines += ["", "Packages: " + ", ".join(vers)]
    return "\n".join(lines)


def show(ctx: Context, a: an.Analysis, published: list | None = None, subgroups: bool = True) -> None:
    """Display one analysis: result sentence, studies, forest plot, heterogeneity, subgroups,
    sensitivity, small-study effects, published comparison and the GRADE row."""
    ctx.results[a.name] = a.results_json()
    display(Markdown(f"### {a.title}\n\n{a.sentence()}"))
    if a.k == 0:
        if a.excluded is not None and len(a.excluded):
            display(Markdown(f"{_n(len(a.excluded), 'study reports', 'studies report')} this outcome without the numbers needed:"))
            display(a.excluded)
        return
    cols = [c for c in ("label", "design", "subtype", "route", "line", "population", "events", "n", "mean_pre", "sd_pre",
                        "mean_post", "sd_post", "ai", "n1i", "ci", "n2i", "est", "ci_lb", "ci_ub", "weight", "definition",
                        "timepoint", "rob_overall", "extraction_level", "derived", "result_id", "result_ids") if c in a.data]
    display(_fmt(a.data[cols].dropna(axis=1, how="all")))
    fig = plots.forest_plot(a)
    plots.save_figure(fig, ctx.domain, f"{a.name}_forest", ctx.figdir)
    plt.show()
    if a.excluded is not None and len(a.excluded):
        display(Markdown(f"Not usable here ({_n(len(a.excluded), 'study reports', 'studies report')} the outcome without the numbers needed): "
                         + "; ".join(f"{r.study_id} ({r.reason})" for r in a.excluded.itertuples()) + "."))
    if a.notes:
        display(Markdown("Notes: " + " ".join(a.notes)))
    if not a.pooled:
        return
    h = a.heterogeneity
    het = (f"Heterogeneity: tau\u00b2 = {h['tau2']:.3g}"
           + (f" ({h['tau2_ci'][0]:.3g} to {h['tau2_ci'][1]:.3g})" if h.get("tau2_ci") else "")
           + f", I\u00b2 = {h['I2']:.0f}%" + (f" ({h['I2_ci'][0]:.0f}% to {h['I2_ci'][1]:.0f}%)" if h.get("I2_ci") else "")
           + f"; {h['Q_type']} Q = {h['Q']:.2f}, p = {_p(h['Q_pval'])}.")
    display(Markdown(het))
    if subgroups and a.subgroups:
        rows = []
        for var, sg in a.subgroups.items():
            for lvl, f in sg.fits.items():
                ni = a.data.loc[a.data[var].astype(str) == str(lvl), "n"].astype(float).to_numpy() if "n" in a.data else None
                t = f.transformed(plots._tname(a) if a.measure != "GLMM" else "ilogit", ni=ni)
                rows.append({"variable": plots.SUB_TITLE.get(var, var), "subgroup": lvl, "k": f.k, "estimate": t["estimate"],
                             "ci_lb": t["ci_lb"], "ci_ub": t["ci_ub"], "I2": f.I2,
                             "Q_between (p)": f"{sg.Q_between:.2f} ({_p(sg.Q_between_pval)})"})
        display(Markdown("**Subgroups** (separate tau\u00b2 per subgroup; Q_between tests the difference):"))
        display(_fmt(pd.DataFrame(rows)))
        best = max(a.subgroups, key=lambda v: a.subgroups[v].fits.__len__())
        fig = plots.forest_plot(a, by=best)
        plots.save_figure(fig, ctx.domain, f"{a.name}_forest_by_{best}", ctx.figdir)
        plt.show()
    display(Markdown("**Sensitivity analyses** (other estimators; excluding high risk of bias, derived values, abstract-only extractions):"))
    display(_fmt(a.sensitivity))
    if a.loo is not None:
        loo = an.loo_natural(a)
        rng = (loo["estimate"].min(), loo["estimate"].max())
        infl = a.influence
        flagged = list(infl.index[(infl["cooks_d"] > 4 / a.k)]) if infl is not None else []
        display(Markdown(f"Leave-one-out: the pooled estimate ranges from {_fmt_val(a, rng[0])} to {_fmt_val(a, rng[1])} "
                         f"when one study is left out. Influential by Cook's distance > 4/k: "
                         f"{', '.join(flagged) if flagged else 'none'}."))
        display(_fmt(loo[["estimate", "ci_lb", "ci_ub", "tau2", "I2"]]))
        if infl is not None:
            display(Markdown("Influence diagnostics (Viechtbauer & Cheung 2010; normal-normal model on the "
                             f"{a.fit.measure if hasattr(a.fit, 'measure') and a.fit.measure else 'analysis'} scale):"))
            display(_fmt(infl))
    ss = a.small_study
    if "egger_pval" in ss:
        display(Markdown(f"Small-study effects: Egger's test z = {ss['egger_stat']:.2f}, p = {_p(ss['egger_pval'])}."))
    else:
        display(Markdown(ss.get("egger_note", "")))
    if a.k >= 3:
        fig = plots.funnel_plot(a)
        plots.save_figure(fig, ctx.domain, f"{a.name}_funnel", ctx.figdir)
        plt.show()
    if published:
        cmp = an.published_comparison(a, ctx.ev, published)
        display(Markdown("**Compared with published pooled estimates:**"))
        display(_fmt(cmp))
        display(Markdown(an.explain_difference(a, cmp)))
    if a.grade:
        display(Markdown("**Certainty of evidence (GRADE, computed):**"))
        display(pd.DataFrame([a.grade]))


def show_comparison(ctx: Context, a: an.Analysis) -> None:
    """Randomised comparisons, shown apart from the single-arm evidence."""
    ctx.results[a.name] = a.results_json()
    display(Markdown(f"### {a.title}\n\n{a.sentence()}"))
    if a.k:
        display(_fmt(a.data[["label", "ai", "n1i", "ci", "n2i", "est", "ci_lb", "ci_ub", "weight", "definition", "timepoint", "result_ids"]]))
        fig = plots.forest_plot(a, xlabel=a.summary["label"])
        plots.save_figure(fig, ctx.domain, f"{a.name}_forest", ctx.figdir)
        plt.show()


def show_rates(ctx: Context) -> None:
    """Adverse events per 100 infusions where a study reports the number of infusions (exact Poisson CI)."""
    r = an.per_infusion_rates(ctx.ev)
    if r.empty:
        display(Markdown("No study in this selection reports the number of infusions, so no per-infusion rate is given."))
        ctx.results["per_infusion"] = []
        return
    display(Markdown(f"{len(r)} results from {r['study_id'].nunique()} studies give the number of infusions. The rate "
                     "divides the events as reported by the infusions; where a study counts patients rather than "
                     "events (see notes in data/outcomes.csv), the rate is a lower bound."))
    display(_fmt(r[["study", "measure", "timepoint", "events", "n_infusions", "per_100_infusions", "ci_lb", "ci_ub", "result_id"]]))
    ctx.results["per_infusion"] = r[["result_id", "per_100_infusions"]].round(4).to_dict("records")


def show_reported(ctx: Context, domain: str, title: str, published: list | None = None) -> None:
    """Outcomes reported as single values (e.g. time to response): a table, not pooled, and why."""
    oc = ctx.ev.outcomes
    r = oc[(oc["domain"] == domain) & (oc["arm"] == "ig")].copy()
    lab = ctx.ev.studies.set_index("study_id")["label"]
    r["study"] = r["study_id"].map(lab)
    cols = ["study", "measure", "definition", "n", "events", "estimate", "mean_post", "median_post", "unit", "timepoint", "result_id"]
    with_sd = r["sd_post"].notna().sum() if "sd_post" in r else 0
    display(Markdown(f"### {title}\n\n{r['study_id'].nunique()} studies report {domain.replace('_', ' ')}; "
                     f"{int(with_sd)} give a spread (SD) that pooling would need, so the values are listed, not pooled."))
    display(_fmt(r[cols]))
    ctx.results[domain] = {"k_reporting": int(r["study_id"].nunique()), "result_ids": list(r["result_id"])}
    if published:
        pe = ctx.ev.tables["published_estimates"]
        display(_fmt(pe[pe["estimate_id"].isin(published)][["review", "outcome", "subgroup", "measure", "estimate",
                                                              "ci_lb", "ci_ub", "k", "n", "source", "location"]]))


def finish(ctx: Context) -> None:
    """Write the key results of this run as JSON (reports/results/<run_name>.json)."""
    out = REPORTS / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{ctx.run_name}.json"
    path.write_text(json.dumps({"domain": ctx.domain, "run_name": ctx.run_name, "params": ctx.params,
                                "k_studies_selected": len(ctx.ev.studies), "analyses": ctx.results},
                               indent=1, default=str, sort_keys=True))
    display(Markdown(f"Key results written to `reports/results/{path.name}`."))


def evidence_overview(ctx: Context) -> None:
    """For 00_evidence_base: PRISMA flow, study characteristics, risk-of-bias summary, evidence map."""
    t = ctx.ev.tables
    p = prisma_counts(t)
    ctx.results["prisma"] = {k: v for k, v in p.items()}
    display(Markdown(f"The searches ({p['searches']} queries) logged {p['records_screened_rows']} candidate records; after "
                     f"removing {p['duplicates_removed']} duplicates, {p['records_screened']} were screened, "
                     f"{p['records_excluded']} excluded and {p['studies_included']} studies included."))
    fig = plots.prisma_diagram(p)
    plots.save_figure(fig, ctx.domain, "prisma", ctx.figdir)
    plt.show()
    st = ctx.ev.studies
    if st.empty:
        display(Markdown("No study meets the current filters, so there are no characteristics, risk-of-bias summary "
                         "or evidence map to show."))
        ctx.results["studies"] = {"k": 0, "patients": 0, "by_design": {}}
        return
    display(Markdown(f"**Study characteristics** ({len(st)} studies, {int(st['n_ig'].sum())} patients treated with "
                     f"immunoglobulin; n not printed for {int(st['n_ig'].isna().sum())}):"))
    display(st[["label", "design", "country", "population", "subtype", "n_ig", "route", "line", "comparator",
                "follow_up_months", "rob_overall", "extraction_level", "source"]].reset_index(drop=True))
    fig = plots.rob_summary(t["risk_of_bias"][t["risk_of_bias"]["study_id"].isin(st["study_id"])], st)
    plots.save_figure(fig, ctx.domain, "risk_of_bias", ctx.figdir)
    plt.show()
    fig = plots.evidence_map(ctx.ev.outcomes, st)
    plots.save_figure(fig, ctx.domain, "evidence_map", ctx.figdir)
    plt.show()
    ctx.results["studies"] = {"k": len(st), "patients": int(st["n_ig"].sum()),
                              "by_design": st["design"].value_counts().to_dict()}


# ---------------------------------------------------------------------------------------------

def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _n(k: int, one: str, many: str) -> str:
    return f"{k} {one if k == 1 else many}"


def _p(p) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _fmt_val(a, x):
    return f"{100 * x:.1f}%" if a.kind == "proportion" else f"{x:.2f}"


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    """Round floats for display (3 significant decimals) so outputs are stable across platforms."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(3)
    return out.reset_index(drop=True) if not isinstance(out.index, pd.RangeIndex) and out.index.name != "study" else out
