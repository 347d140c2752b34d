"""Figures: forest (RevMan / R meta style), funnel, PRISMA 2020 flow, risk-of-bias traffic light and summary
bars (robvis style), effect-direction plot, evidence map.

Figures are matplotlib; ``save_figure`` writes PNG and SVG that are byte-for-byte reproducible (fixed SVG
hash salt, no dates or software stamps in the metadata). Colours are from the Okabe-Ito palette, which
stays distinguishable with the common colour-vision deficiencies; risk-of-bias cells also carry a symbol.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import FancyBboxPatch, Polygon
from matplotlib.ticker import FixedLocator, NullLocator

from .text import p_text

matplotlib.rcParams["svg.hashsalt"] = "ivig-myositis"
matplotlib.rcParams["font.size"] = 9
ROOT = Path(__file__).resolve().parent.parent

OKABE = {"blue": "#0072B2", "orange": "#E69F00", "vermillion": "#D55E00", "sky": "#56B4E9", "green": "#009E73",
         "yellow": "#F0E442", "purple": "#CC79A7", "grey": "#999999", "black": "#000000"}
ROB_STYLE = {  # judgement -> (colour, symbol, label)
    "low": (OKABE["green"], "+", "Low"), "yes": (OKABE["green"], "+", "Yes"),
    "some_concerns": (OKABE["yellow"], "-", "Some concerns"), "moderate": (OKABE["yellow"], "-", "Moderate"),
    "unclear": (OKABE["grey"], "?", "Unclear"), "no_information": (OKABE["grey"], "?", "No information"),
    "high": (OKABE["vermillion"], "x", "High"), "serious": (OKABE["vermillion"], "x", "Serious"),
    "no": (OKABE["vermillion"], "x", "No"), "critical": ("#7a1e00", "!", "Critical"),
    "not_applicable": ("#ffffff", "", "Not applicable"),
}
FOREST_GROUP = {"subtype": "Subtype", "route": "Route", "line": "Line", "population": "Population", "design_group": "Design"}
SUB_TITLE = {"subtype": "Subtype (>= 80% of patients)", "route": "Route", "line": "Line of therapy", "population": "Population",
             "design_group": "Design"}


def save_figure(fig, domain: str, name: str, outdir: str | Path | None = None, svg: bool = True) -> list[Path]:
    """Write ``<outdir or figures>/<domain>/<name>.png`` (and ``.svg`` unless ``svg=False``: a re-run's report
    embeds the PNG only) reproducibly; returns the paths, PNG first."""
    base = Path(outdir) if outdir else ROOT / "figures"
    d = base / domain
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{name}.png"] + ([d / f"{name}.svg"] if svg else [])
    fig.savefig(paths[0], dpi=100, metadata={"Software": None}, bbox_inches="tight")
    if svg:
        fig.savefig(paths[1], metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    return paths


def forest_plot(a, by: str | None = None):
    """Forest plot with text columns (study, events/n per arm, weight, estimate [CI]); subgroup subtotals
    when ``by`` names a subgroup variable; pooled diamond, labelled prediction interval, heterogeneity and
    the test for subgroup differences under the plot; log axis with plain ticks for ratios."""
    d = a.data.copy()
    prop = a.kind == "proportion"
    comp = a.kind == "comparison"
    scale = 100 if prop else 1
    groups = [(None, d)]
    if by and by in a.subgroups:
        groups = [(lvl, d[d[by].astype(str) == str(lvl)]) for lvl in a.subgroups[by].fits]
    n_rows = sum(len(g) + (2 if by else 0) for _, g in groups) + 4
    fig = plt.figure(figsize=(11, 0.28 * n_rows + 1.6))
    ax = fig.add_axes([0.43, 0.16, 0.30, 0.78])
    y = n_rows - 0.8     # leaves room for the column headers
    rows_txt = []  # (y, [col texts], bold)
    lv = f"{round(a.params['level'] * 100):g}%"
    head = ["Study", "IVIG/SCIg" if comp else "Events/n" if prop else "n", "Placebo" if comp else "", "Weight",
            f"Estimate [{lv} CI]"]
    for lvl, g in groups:
        if lvl is not None:
            y -= 1
            rows_txt.append((y, [f"{FOREST_GROUP.get(by, by)}: {str(lvl).replace('_', ' ')}", "", "", "", ""], True))
        for _, r in g.iterrows():
            y -= 1
            ax.plot([r["ci_lb"] * scale, r["ci_ub"] * scale], [y, y], color="black", lw=1)
            w = r["weight"] if "weight" in r and pd.notna(r["weight"]) else 100.0
            ax.scatter([r["est"] * scale], [y], marker="s", s=20 + 1.6 * (w if a.pooled and not a.declined else 25),
                       color=OKABE["blue"], zorder=3)
            if comp:
                c1, c2 = f"{int(r['ai'])}/{int(r['n1i'])}", f"{int(r['ci'])}/{int(r['n2i'])}"
            elif prop:
                c1, c2 = f"{int(r['events'])}/{int(r['n'])}", ""
            else:
                c1, c2 = f"{int(r['n'])}", ""
            wt = "" if a.declined or not a.pooled else f"{w:.1f}%"   # nothing pooled: no weights
            rows_txt.append((y, [r["label"], c1, c2, wt, _est_txt(a, r["est"], r["ci_lb"], r["ci_ub"])], False))
        if lvl is not None and len(g):
            f = a.subgroups[by].fits[lvl]
            y -= 1
            if len(g) == 1:   # a subtotal of one study is that study
                r = g.iloc[0]
                est, lo, hi = r["est"], r["ci_lb"], r["ci_ub"]
            else:
                t = f.transformed(_tname(a), ni=g["n"].astype(float).to_numpy() if "n" in g else None)
                est, lo, hi = t["estimate"], t["ci_lb"], t["ci_ub"]
            _diamond(ax, est * scale, lo * scale, hi * scale, y, color=OKABE["grey"])
            i2 = f"; I\u00b2 = {f.I2:.0f}%" if f.I2 is not None and len(g) > 1 else ""
            rows_txt.append((y, [f"Subtotal (k = {len(g)}{i2})", _sum_n(g, comp, prop, 1), _sum_n(g, comp, prop, 2),
                                 f"{g['weight'].sum():.1f}%", _est_txt(a, est, lo, hi)], True))
    foot = []
    if a.pooled and a.headline:
        s = a.summary
        y -= 1.4
        _diamond(ax, s["estimate"] * scale, s["ci_lb"] * scale, s["ci_ub"] * scale, y, color=OKABE["vermillion"])
        model = "GLMM" if a.measure == "GLMM" else f"random effects, {a.params['method']}"
        rows_txt.append((y, [f"Total ({model})", _sum_n(d, comp, prop, 1), _sum_n(d, comp, prop, 2), "100%",
                             _est_txt(a, s["estimate"], s["ci_lb"], s["ci_ub"])], True))
        if s.get("pi_lb") is not None:
            y -= 1
            ax.plot([s["pi_lb"] * scale, s["pi_ub"] * scale], [y, y], color=OKABE["vermillion"], lw=2, ls=(0, (4, 2)))
            rows_txt.append((y, ["Prediction interval", "", "", "",
                                 _est_txt(a, None, s["pi_lb"], s["pi_ub"])], False))
        ax.axvline(s["estimate"] * scale, color=OKABE["vermillion"], lw=0.6, ls=":")
    elif a.declined:
        foot.append(f"No pooled estimate: {a.declined}")
    h = a.heterogeneity
    if a.pooled and h.get("I2") is not None:
        foot.append(f"Heterogeneity: tau\u00b2 = {h['tau2']:.3g}; {h.get('Q_type', 'Cochran')} Q = {h['Q']:.2f}"
                    + (f", df = {h['Q_df']}" if h.get("Q_df") is not None else "")
                    + f", {p_text(h['Q_pval'])}; I\u00b2 = {h['I2']:.0f}%")
    if by and by in a.subgroups:
        sg = a.subgroups[by]
        foot.append(f"Test for subgroup differences: Q = {sg.Q_between:.2f}, df = {len(sg.fits) - 1}, "
                    f"{p_text(sg.Q_between_pval)}" if sg.testable else
                    "No test for subgroup differences: a subgroup with one study (Handbook 10.11)")
    ax.set_ylim(y - 0.8, n_rows)
    ax.set_yticks([])
    ax.spines[["top", "right", "left"]].set_visible(False)
    if comp:
        ax.set_xscale("log")
        ax.axvline(1, color="black", lw=0.8)
        lo = min(d["ci_lb"].min(), 0.5)
        hi = max(d["ci_ub"].max(), 2)
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if lo / 1.5 <= t <= hi * 1.5]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.set_xlim(min(ticks) / 1.2, max(ticks) * 1.2)
        ax.text(0.0, -0.1, "\u2190 favours placebo", transform=ax.transAxes, ha="left", va="top", fontsize=8)
        ax.text(1.0, -0.1, "favours immunoglobulin \u2192", transform=ax.transAxes, ha="right", va="top", fontsize=8)
        ax.set_xlabel(a.summary.get("label", ""), labelpad=18)
    elif prop:
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"{a.summary.get('label', 'proportion')} (%)")
    else:
        ax.set_xlabel(a.summary.get("label", ""))
    xs = [0.01, 0.19, 0.255, 0.75, 0.83]
    for yy, cells, bold in [(n_rows - 0.45, head, True)] + rows_txt:
        yf = _yfrac(ax, fig, yy)
        for x, c, align in zip(xs, cells, ["left", "right", "right", "right", "left"]):
            xx = x if align == "left" else x + 0.05
            fig.text(xx, yf, textwrap.shorten(str(c), 34, placeholder="…") if x == xs[0] and not bold else c, ha=align, va="center",
                     fontsize=8, fontweight="bold" if bold else "normal")
    if foot:
        fig.text(0.01, 0.02, "\n".join(textwrap.fill(f, 170) for f in foot), ha="left", va="bottom", fontsize=8)
    fig.suptitle(a.title, x=0.01, ha="left", fontsize=10, y=0.995)
    return fig


def funnel_plot(a):
    """Funnel plot on the analysis scale (yi against its standard error) with pseudo-95% limits (k >= 10)."""
    d = a.data
    fig, ax = plt.subplots(figsize=(5, 4))
    se = np.sqrt(d["vi"].to_numpy())
    ax.scatter(d["yi"], se, color=OKABE["blue"], zorder=3)
    if a.fit is not None and hasattr(a.fit, "estimate"):
        b = a.fit.estimate
        s = np.linspace(0, se.max() * 1.05, 50)
        ax.plot(b - 1.96 * s, s, color="grey", lw=0.8, ls="--")
        ax.plot(b + 1.96 * s, s, color="grey", lw=0.8, ls="--")
        ax.axvline(b, color=OKABE["vermillion"], lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel(f"effect size ({a.measure} scale)")
    ax.set_ylabel("standard error")
    ax.set_title(f"Funnel plot: {a.title}", loc="left", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def prisma_diagram(p: dict):
    """PRISMA 2020 flow (identification, screening, eligibility, included) from ``data.prisma_counts``; every
    number is inside its box and the boxes add up."""
    fig, ax = plt.subplots(figsize=(9.5, 7.0))
    ax.axis("off")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)

    def box(x, y, w, h, text, fc="#f2f5f8"):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.006", fc=fc, ec="#34495e", lw=0.8))
        ax.text(x + 0.012, y + h - 0.012, text, va="top", ha="left", fontsize=7.6, wrap=True)

    def arrow(x0, y0, x1, y1):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "lw": 0.8})

    def reasons(dct):
        return "\n".join(f"  {textwrap.shorten(k, 52, placeholder='…')}: {v}" for k, v in dct.items()) or "  none"

    d0, d1 = p.get("search_dates", ("", ""))
    ax.text(0.0, 0.985, "Identification", fontsize=9, fontweight="bold")
    box(0.02, 0.84, 0.46, 0.12, f"Records identified: {p['searches']} searches of stored public\npages (PubMed, journal, "
        f"registry, congress pages),\n{d0} to {d1}: {p['results_returned']} results;\n"
        f"{p['records_screened_rows']} candidate records logged")
    box(0.55, 0.84, 0.43, 0.12, f"Records removed before screening:\n  duplicates (same PMID, DOI or address): "
        f"{p['duplicates_removed']}")
    arrow(0.48, 0.90, 0.55, 0.90)
    ax.text(0.0, 0.80, "Screening", fontsize=9, fontweight="bold")
    box(0.02, 0.70, 0.46, 0.08, f"Records screened (title and abstract):\n{p['records_screened']}")
    box(0.55, 0.56, 0.43, 0.22, f"Records excluded: {p['excluded_title_abstract']}\n" + reasons(p["reasons_title_abstract"]))
    arrow(0.25, 0.84, 0.25, 0.78)
    arrow(0.48, 0.74, 0.55, 0.70)
    box(0.02, 0.57, 0.46, 0.08, f"Reports sought for retrieval:\n{p['reports_sought']}")
    arrow(0.25, 0.70, 0.25, 0.65)
    box(0.55, 0.45, 0.43, 0.08, f"Reports not retrieved (results not in any\nstored copy): {p['reports_not_retrieved']}")
    arrow(0.48, 0.61, 0.55, 0.49)
    box(0.02, 0.42, 0.46, 0.08, f"Reports assessed for eligibility (full text or\nresults read): {p['reports_assessed']}")
    arrow(0.25, 0.57, 0.25, 0.50)
    box(0.55, 0.28, 0.43, 0.14, f"Reports excluded: {p['excluded_full_text']}\n" + reasons(p["reasons_full_text"]))
    arrow(0.48, 0.46, 0.55, 0.38)
    ax.text(0.0, 0.36, "Included", fontsize=9, fontweight="bold")
    box(0.02, 0.20, 0.46, 0.12, f"Reports included: {p['records_included']}\nStudies included in the review: "
        f"{p['studies_included']}\n(several reports can describe one study)", fc="#e8f1f8")
    arrow(0.25, 0.42, 0.25, 0.32)
    if p.get("studies_awaiting"):
        names = textwrap.fill(", ".join(p.get("awaiting", [])), 48)
        box(0.55, 0.15, 0.43, 0.11, f"Studies awaiting classification: {p['studies_awaiting']}\n(eligible; no outcome can be "
            f"read in any stored copy)\n{names}", fc="#fdf3e1")
        arrow(0.48, 0.44, 0.55, 0.24)
    ax.set_ylim(0.13 if p.get("studies_awaiting") else 0.18, 1.0)
    ax.set_title("PRISMA 2020 flow diagram (computed from data/search_log.csv and data/screening.csv)", loc="left",
                 fontsize=10)
    return fig


def cumulative_plot(cu: pd.DataFrame, title: str):
    """Cumulative meta-analysis by publication year: the pooled proportion and its CI after each study is added
    (``over_time.cumulative_by_year``), one row per step, the latest at the bottom."""
    n = len(cu)
    fig, ax = plt.subplots(figsize=(8.2, 0.34 * n + 1.5))
    y = np.arange(n)
    ax.hlines(y, 100 * cu["ci_lb"], 100 * cu["ci_ub"], color=OKABE["blue"], lw=1.4)
    ax.plot(100 * cu["estimate"], y, "s", color=OKABE["blue"], ms=5)
    ax.set_yticks(y)
    ax.set_yticklabels([f"+ {s}: k = {k}, {p} patients" for s, k, p in zip(cu["study"], cu["k"], cu["patients"])],
                       fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("pooled proportion after adding the study (%), 95% CI")
    ax.axvline(100 * cu["estimate"].iloc[-1], color="#999", lw=0.8, ls=":")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(textwrap.fill(f"Cumulative meta-analysis by year: {title}", 80), loc="left", fontsize=10)
    fig.tight_layout()
    return fig


def information_plot(info: pd.DataFrame):
    """Information accumulated by the randomised trials of each summary-of-findings outcome, as a share of the
    optimal information size (events for binary outcomes, participants for continuous ones), by year."""
    outs = list(dict.fromkeys(zip(info["population"], info["outcome"])))
    fig, ax = plt.subplots(figsize=(8.2, 0.42 * len(outs) + 1.6))
    for i, key in enumerate(outs):
        g = info[(info["population"] == key[0]) & (info["outcome"] == key[1])]
        last = g.iloc[-1]
        ax.barh(i, min(100 * last["share"], 100), color=OKABE["sky"], edgecolor="#333", lw=0.4)
        got = int(last["events"]) if last["information"] == "events" else int(last["participants"])
        trials = ", ".join(g["trial"])
        ax.text(min(100 * last["share"], 100) + 1, i, f"{got} of {int(last['ois'])} {last['information']} ({trials})",
                va="center", fontsize=7.5, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.set_yticks(range(len(outs)))
    short = {"dm_pm": "DM/PM", "ibm": "IBM", "jdm": "JDM"}
    ax.set_yticklabels([textwrap.fill(f"{short.get(p, p)}: {o}", 40) for p, o in outs], fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlim(0, 160)
    ax.axvline(100, color="#333", lw=0.8, ls="--")
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel("optimal information size reached (%)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Randomised evidence accumulated so far against the optimal information size", loc="left",
                 fontsize=10, pad=12)
    fig.tight_layout()
    return fig


def rob_traffic_light(rob: pd.DataFrame, studies: pd.DataFrame, tool: str):
    """Traffic-light plot: one row per study, one column per bias domain plus the overall judgement."""
    lab = studies.set_index("study_id")["label"]
    r = rob.assign(study=rob["study_id"].map(lab).fillna(rob["study_id"]))
    domains = [d for d in dict.fromkeys(r["domain"]) if d.lower() != "overall"] + ["overall"]
    st = sorted(r["study"].unique())
    fig, ax = plt.subplots(figsize=(1.6 + 0.55 * len(domains) + 2.2, 0.32 * len(st) + 1.6))
    first = {}                                          # (study, domain) -> its first judgement
    for key, j in zip(zip(r["study"], r["domain"]), r["judgement"]):
        first.setdefault(key, j)
    xs, ys, cols = [], [], []
    marks = {}                                          # (symbol, its colour) -> [(x, y), ...]
    for i, s in enumerate(st):
        for j, dname in enumerate(domains):
            if (s, dname) not in first:
                continue
            col, sym, _ = ROB_STYLE.get(first[(s, dname)], ("#ffffff", "", ""))
            xs.append(j), ys.append(i), cols.append(col)
            if sym:
                ink = "white" if col in (OKABE["vermillion"], "#7a1e00", OKABE["green"]) else "black"
                marks.setdefault((sym, ink), []).append((j, i))
    ax.scatter(xs, ys, s=190, c=cols, edgecolors="#333333", linewidths=0.5)   # one collection: fast to draw
    for (sym, ink), pts in marks.items():              # the symbols as markers: one collection per symbol
        marker, size = _ROB_MARKER[sym]
        ax.scatter(*zip(*pts), marker=marker, s=size, c=ink, linewidths=0)
    ax.set_xticks(range(len(domains)))
    ax.set_xticklabels([_dom(dm) for dm in domains], rotation=40, ha="right", fontsize=7.5)
    ax.set_yticks(range(len(st)))
    ax.set_yticklabels(st, fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlim(-0.6, len(domains) - 0.4)
    ax.spines[:].set_visible(False)
    ax.tick_params(length=0)
    used = [k for k in ROB_STYLE if k in set(r["judgement"])]
    handles = [plt.Line2D([], [], marker="o", ls="", markersize=9, markerfacecolor=ROB_STYLE[k][0], markeredgecolor="#333",
                          label=f"{ROB_STYLE[k][1]} {ROB_STYLE[k][2]}") for k in used]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7.5)
    ax.set_title(f"Risk of bias by study and domain ({_tool(tool)})", loc="left", fontsize=10)
    fig.tight_layout()
    return fig


# The judgement's symbol inside its circle, drawn as a marker (a glyph path) rather than one text object per cell,
# which made the traffic light of 31 case series take 0.6 s more to draw. Sizes in points squared, so that each
# glyph, scaled to the marker box, keeps about the size of 8-point bold text: symbol -> (marker, size).
_ROB_MARKER = {sym: (rf"$\mathbf{{{sym}}}$", size)
               for sym, size in (("+", 30), ("-", 30), ("?", 36), ("x", 26), ("!", 36))}


def rob_summary_bars(rob: pd.DataFrame, tool: str):
    """Summary bars: share of studies per judgement in each domain (robvis style), overall last."""
    domains = [d for d in dict.fromkeys(rob["domain"]) if d.lower() != "overall"] + ["overall"]
    order = [k for k in ROB_STYLE if k in set(rob["judgement"])]
    fig, ax = plt.subplots(figsize=(8, 0.34 * len(domains) + 1.4))
    for i, dname in enumerate(domains):
        sub = rob[rob["domain"] == dname]["judgement"].value_counts(normalize=True)
        left = 0.0
        for k in order:
            v = float(sub.get(k, 0.0))
            if v:
                ax.barh(i, 100 * v, left=100 * left, color=ROB_STYLE[k][0], edgecolor="#333333", lw=0.4)
                if v >= 0.08:
                    ax.text(100 * (left + v / 2), i, ROB_STYLE[k][1], ha="center", va="center", fontsize=8,
                            fontweight="bold")
            left += v
    ax.set_yticks(range(len(domains)))
    ax.set_yticklabels([_dom(dm) for dm in domains], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("studies (%)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=ROB_STYLE[k][0], ec="#333", label=f"{ROB_STYLE[k][1]} {ROB_STYLE[k][2]}")
               for k in order]
    ax.legend(handles=handles, ncol=min(len(handles), 4), loc="upper center", bbox_to_anchor=(0.5, -0.28),
              frameon=False, fontsize=7.5)
    n = rob["study_id"].nunique()
    ax.set_title(f"Risk of bias summary ({_tool(tool)}, {n} studies)", loc="left", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def effect_direction_plot(analyses: list):
    """Effect-direction plot: rows = studies, columns = outcomes; arrow up/down/diamond for rise/fall/no
    change, sized by n, coloured by overall risk of bias (Thomson & Thomas 2013; SWiM)."""
    cols = [(a.title, a) for a in analyses if a.k]
    if not cols:
        return None
    studies = sorted({lab for _, a in cols for lab in a.data["label"]})
    fig, ax = plt.subplots(figsize=(2.5 + 1.6 * len(cols) + 2.4, 0.3 * len(studies) + 1.6))
    marker = {"increase": "^", "decrease": "v", "no_change": "D"}
    robcol = {k: v[0] for k, v in ROB_STYLE.items()}
    for j, (_, a) in enumerate(cols):
        for _, r in a.data.iterrows():
            i = studies.index(r["label"])
            n = r["n"] if pd.notna(r["n"]) else 10
            ax.scatter(j, i, marker=marker.get(r["direction"], "o"), s=30 + 4 * min(n, 120),
                       color=robcol.get(r["rob_overall"], OKABE["grey"]), edgecolors="#333", linewidths=0.5)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([textwrap.fill(t, 18) for t, _ in cols], fontsize=8)
    ax.set_yticks(range(len(studies)))
    ax.set_yticklabels(studies, fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlim(-0.6, len(cols) - 0.4)
    ax.spines[:].set_visible(False)
    ax.tick_params(length=0)
    present = {r for _, a in cols for r in a.data["rob_overall"]}
    by_colour = {}   # one legend entry per colour: equivalent levels of different tools share it (high / serious)
    for k in [k for k in ROB_STYLE if k in present] + sorted(present - set(ROB_STYLE)):
        by_colour.setdefault(robcol.get(k, OKABE["grey"]), []).append(k.replace("_", " "))
    h = [plt.Line2D([], [], marker=m, ls="", color="#555", label=l, markersize=8)
         for m, l in (("^", "rise"), ("v", "fall"), ("D", "no change"))]
    h += [plt.Line2D([], [], marker="s", ls="", color=c, markersize=8, label=f"risk of bias: {' / '.join(ks)}")
          for c, ks in by_colour.items()]
    ax.legend(handles=h, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=7.5)
    ax.set_title("Effect direction by study (marker size: number of patients)", loc="left", fontsize=10)
    fig.tight_layout()
    return fig


def evidence_map(outcomes: pd.DataFrame, studies: pd.DataFrame):
    """Which study informs which domain (number of results)."""
    import seaborn as sns
    lab = studies.set_index("study_id")["label"]
    tab = pd.crosstab(outcomes["study_id"].map(lab), outcomes["domain"].str.replace("_", " "))
    # readable at 1280 px: ~1:1 in the report, 9-pt counts, empty cells blank, colour capped at 10 results so
    # one trial with 47 safety rows does not wash out the rest
    fig, ax = plt.subplots(figsize=(11, 0.3 * len(tab) + 2.2))
    annot = tab.astype(str).where(tab > 0, "")
    sns.heatmap(tab.clip(upper=10), annot=annot, fmt="", cmap="Blues", vmin=0, vmax=10, cbar=False, ax=ax,
                linewidths=0.4, linecolor="#e5e8eb", annot_kws={"fontsize": 9})
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="both", labelsize=9)
    ax.tick_params(axis="y", labelrotation=0)   # seaborn turns the study names upright when there are few rows
    ax.xaxis.tick_top()
    ax.set_xticklabels(ax.get_xticklabels(), rotation=40, ha="left")
    ax.set_title("Evidence map: number of results per study and domain (blank: none)", loc="left", fontsize=11,
                 pad=45)
    fig.tight_layout()
    return fig


def _diamond(ax, est, lo, hi, y, color):
    ax.add_patch(Polygon([(lo, y), (est, y + 0.35), (hi, y), (est, y - 0.35)], closed=True, color=color, zorder=3))


def _tname(a):
    from .effects import MEASURE_TRANSFORM
    return "ilogit" if a.measure == "GLMM" else MEASURE_TRANSFORM.get(a.measure, "none")


def _est_txt(a, est, lo, hi):
    if a.kind == "proportion":
        f = lambda x: f"{100 * x:.1f}"  # noqa: E731
        return (f"{f(est)}% " if est is not None else "") + f"[{f(lo)}; {f(hi)}]"
    return (f"{est:.2f} " if est is not None else "") + f"[{lo:.2f}; {hi:.2f}]"


def _sum_n(g, comp, prop, arm):
    if comp:
        return f"{int(g['ai' if arm == 1 else 'ci'].sum())}/{int(g['n1i' if arm == 1 else 'n2i'].sum())}"
    if arm == 2:
        return ""
    return f"{int(g['events'].sum())}/{int(g['n'].sum())}" if prop else f"{int(g['n'].sum())}"


def _yfrac(ax, fig, y):
    """Figure-fraction height of data coordinate y on ``ax``."""
    lo, hi = ax.get_ylim()
    pos = ax.get_position()
    return pos.y0 + (y - lo) / (hi - lo) * pos.height




JBI_ITEMS = {"Q1": "Q1 inclusion criteria", "Q2": "Q2 condition measured reliably", "Q3": "Q3 valid identification",
             "Q4": "Q4 consecutive inclusion", "Q5": "Q5 complete inclusion", "Q6": "Q6 demographics reported",
             "Q7": "Q7 clinical information", "Q8": "Q8 outcomes reported", "Q9": "Q9 site described",
             "Q10": "Q10 statistics appropriate"}


def _dom(d: str) -> str:
    return {"overall": "Overall", **JBI_ITEMS}.get(d, d.replace("_", " ").strip())


def _tool(t: str) -> str:
    return {"RoB2": "RoB 2, randomised trials", "ROBINS-I": "ROBINS-I, non-randomised studies",
            "JBI-CS": "JBI checklist, case series"}.get(t, t)
