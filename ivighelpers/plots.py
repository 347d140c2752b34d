"""Figures: forest, funnel, PRISMA 2020 flow, risk-of-bias summary, evidence map.

Figures are matplotlib; ``save_figure`` writes PNG and SVG that are byte-for-byte reproducible (fixed SVG
hash salt, no dates or software stamps in the metadata).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import FancyBboxPatch, Polygon

matplotlib.rcParams["svg.hashsalt"] = "ivig-myositis"
matplotlib.rcParams["font.size"] = 9
ROOT = Path(__file__).resolve().parent.parent


def save_figure(fig, domain: str, name: str, outdir: str | Path | None = None) -> list[Path]:
    """Write ``<outdir or figures>/<domain>/<name>.png|.svg`` reproducibly; returns the paths."""
    base = Path(outdir) if outdir else ROOT / "figures"
    d = base / domain
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{name}.png", d / f"{name}.svg"]
    fig.savefig(paths[0], dpi=110, metadata={"Software": None}, bbox_inches="tight")
    fig.savefig(paths[1], metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    return paths


def forest_plot(a, by: str | None = None, xlabel: str | None = None, percent: bool | None = None):
    """Forest plot on the natural scale: study estimates with CIs (squares sized by weight), pooled
    diamond, prediction interval, and per-subgroup diamonds when ``by`` names a subgroup variable."""
    d = a.data.copy()
    percent = a.kind == "proportion" if percent is None else percent
    scale = 100 if percent else 1
    groups = [(None, d)] if not by or by not in a.subgroups else [(lvl, d[d[by].astype(str) == str(lvl)]) for lvl in a.subgroups[by].fits]
    rows = sum(len(g) + (2 if by else 0) for _, g in groups) + 3
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * rows + 1.2))
    y = rows
    wmax = d["weight"].max() if "weight" in d and len(d) else 1
    yticks, ylabels = [], []
    for lvl, g in groups:
        if lvl is not None:
            y -= 1
            yticks.append(y)
            ylabels.append(f"{SUB_TITLE.get(by, by)}: {lvl}")
        for _, r in g.iterrows():
            y -= 1
            ax.plot([r["ci_lb"] * scale, r["ci_ub"] * scale], [y, y], color="black", lw=1)
            size = 30 + 170 * (r["weight"] / wmax if "weight" in r else 1)
            ax.scatter([r["est"] * scale], [y], marker="s", s=size, color="#2b5d8a", zorder=3)
            yticks.append(y)
            ylabels.append(f"{r['label']}  ({int(r['events']) if 'events' in r and pd.notna(r.get('events')) else ''}"
                           f"{'/' if 'events' in r and pd.notna(r.get('events')) else 'n='}{int(r['n'])})"
                           f"  {r['weight']:.1f}%")
        if lvl is not None and len(g):
            f = a.subgroups[by].fits[lvl]
            t = f.transformed(_tname(a), ni=g["n"].astype(float).to_numpy() if "n" in g else None)
            y -= 1
            _diamond(ax, t["estimate"] * scale, t["ci_lb"] * scale, t["ci_ub"] * scale, y, color="#7f7f7f")
            yticks.append(y)
            ylabels.append(f"Subtotal (k = {f.k})")
    if a.pooled:
        s = a.summary
        y -= 1.5
        _diamond(ax, s["estimate"] * scale, s["ci_lb"] * scale, s["ci_ub"] * scale, y, color="#c0392b")
        yticks.append(y)
        ylabels.append(f"Pooled, {a.params['method'] if a.measure != 'GLMM' else 'GLMM'} (k = {a.k}, n = {a.n_patients})")
        if s.get("pi_lb") is not None:
            y -= 1
            ax.plot([s["pi_lb"] * scale, s["pi_ub"] * scale], [y, y], color="#c0392b", lw=2, ls=(0, (4, 2)))
            yticks.append(y)
            ylabels.append("Prediction interval")
        ax.axvline(s["estimate"] * scale, color="#c0392b", lw=0.6, ls=":")
    ax.set_yticks(yticks)
    ax.set_yticklabels(ylabels)
    ax.set_ylim(y - 1, rows)
    ax.set_xlabel(xlabel or (a.summary.get("label", "") + (" (%)" if percent else "")))
    if a.kind == "comparison":
        ax.set_xscale("log")
        ax.axvline(1, color="black", lw=0.6)
    ax.set_title(a.title, loc="left", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def funnel_plot(a):
    """Funnel plot on the analysis scale (yi against its standard error) with pseudo-95% limits."""
    d = a.data
    fig, ax = plt.subplots(figsize=(5, 4))
    se = np.sqrt(d["vi"].to_numpy())
    ax.scatter(d["yi"], se, color="#2b5d8a", zorder=3)
    if a.fit is not None and hasattr(a.fit, "estimate"):
        b = a.fit.estimate
        s = np.linspace(0, se.max() * 1.05, 50)
        ax.plot(b - 1.96 * s, s, color="grey", lw=0.8, ls="--")
        ax.plot(b + 1.96 * s, s, color="grey", lw=0.8, ls="--")
        ax.axvline(b, color="#c0392b", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel(f"effect size ({a.measure} scale)")
    ax.set_ylabel("standard error")
    ax.set_title(f"Funnel plot: {a.title}", loc="left", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def prisma_diagram(p: dict):
    """PRISMA 2020 flow (identification, screening, included) drawn from ``data.prisma_counts``."""
    fig, ax = plt.subplots(figsize=(8.5, 6.5))
    ax.axis("off")
    reasons = "\n".join(f"  {k}: {v}" for k, v in p["exclusion_reasons"].items())
    boxes = [
        (0.05, 0.80, f"Records identified from searches of stored\npublic pages: {p['searches']} searches,\n"
                     f"{p['results_returned']} results returned; {p['records_screened_rows']} candidate records logged"),
        (0.55, 0.80, f"Duplicate records removed\n(same PMID, DOI or address): {p['duplicates_removed']}"),
        (0.05, 0.52, f"Records screened\n(title/abstract): {p['records_screened']}"),
        (0.55, 0.40, f"Records excluded: {p['records_excluded']}\n{reasons}"),
        (0.05, 0.22, f"Records included: {p['records_included']}\nStudies included in the review: {p['studies_included']}"),
    ]
    for x, y, text in boxes:
        ax.add_patch(FancyBboxPatch((x, y), 0.4, 0.14 if y != 0.40 else 0.34, boxstyle="round,pad=0.01",
                                    fc="#f4f6f8", ec="#34495e", transform=ax.transAxes))
        ax.text(x + 0.01, y + (0.13 if y != 0.40 else 0.33), text, va="top", ha="left", fontsize=7.5, transform=ax.transAxes)
    for (x0, y0), (x1, y1) in (((0.25, 0.80), (0.25, 0.66)), ((0.25, 0.52), (0.25, 0.36)), ((0.45, 0.87), (0.55, 0.87)),
                               ((0.45, 0.59), (0.55, 0.59))):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), xycoords="axes fraction", arrowprops={"arrowstyle": "->"})
    ax.set_title("PRISMA 2020 flow diagram (computed from data/search_log.csv and data/screening.csv)", loc="left", fontsize=10)
    return fig


def rob_summary(rob: pd.DataFrame, studies: pd.DataFrame):
    """Share of studies per overall risk-of-bias judgement, by tool."""
    ov = rob[rob["domain"].str.lower() == "overall"].drop_duplicates("study_id")
    tab = pd.crosstab(ov["tool"], ov["judgement"])
    order = [c for c in ("low", "some_concerns", "moderate", "high", "serious", "critical", "no_information") if c in tab]
    tab = tab[order]
    colours = {"low": "#2e8b57", "some_concerns": "#f1c40f", "moderate": "#f39c12", "high": "#c0392b",
               "serious": "#c0392b", "critical": "#7b241c", "no_information": "#95a5a6"}
    fig, ax = plt.subplots(figsize=(7, 2.6))
    left = np.zeros(len(tab))
    for c in order:
        ax.barh(tab.index, tab[c], left=left, color=colours[c], label=c.replace("_", " "))
        left += tab[c].to_numpy()
    ax.set_xlabel("studies (overall judgement)")
    ax.legend(ncol=4, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), frameon=False)
    ax.set_title("Risk of bias, overall judgement by tool", loc="left", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def evidence_map(outcomes: pd.DataFrame, studies: pd.DataFrame):
    """Which study informs which domain (number of results)."""
    import seaborn as sns
    lab = studies.set_index("study_id")["label"]
    tab = pd.crosstab(outcomes["study_id"].map(lab), outcomes["domain"])
    fig, ax = plt.subplots(figsize=(8, 0.22 * len(tab) + 1.5))
    sns.heatmap(tab, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax, linewidths=0.3, annot_kws={"fontsize": 6})
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title("Evidence map: results per study and domain", loc="left", fontsize=10)
    fig.tight_layout()
    return fig


SUB_TITLE = {"subtype": "Predominant subtype", "route": "Route", "line": "Line", "population": "Population",
             "design_group": "Design"}


def _diamond(ax, est, lo, hi, y, color):
    ax.add_patch(Polygon([(lo, y), (est, y + 0.35), (hi, y), (est, y - 0.35)], closed=True, color=color, zorder=3))


def _tname(a):
    from .effects import MEASURE_TRANSFORM
    return "ilogit" if a.measure == "GLMM" else MEASURE_TRANSFORM.get(a.measure, "none")
