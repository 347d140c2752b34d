"""Evidence over time: cumulative meta-analysis by publication year (metafor ``cumul``; ``diagnostics.cumulative``)
and, for the randomised comparisons of the summary of findings, the information accumulated against the optimal
information size (GRADE 6: about 300 events for a binary outcome, 400 participants for a continuous one).

A reader sees when an answer stabilised and how much the latest studies moved it, and how far the randomised
evidence is from the information a precise answer needs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import diagnostics as dg
from .effects import escalc, transform
from .meta import rma

OIS_EVENTS = 300
OIS_PARTICIPANTS = 400


def cumulative_by_year(a) -> pd.DataFrame:
    """Cumulative random-effects meta-analysis of a single-arm proportion pool, adding studies by publication
    year (then label; undated studies last): logit proportions (PLO, 0.5 added to zero cells), the pool's
    tau2 estimator and CI method, back-transformed. Columns: year, study, k, patients (cumulative), estimate,
    ci_lb, ci_ub. Empty when the pool has fewer than 2 studies or is not a proportion pool."""
    if a.kind != "proportion" or a.k < 2 or "events" not in a.data:
        return pd.DataFrame()
    d = a.data.assign(_y=a.data["year"].fillna(9999)).sort_values(["_y", "label"], kind="stable").reset_index(drop=True)
    es = escalc("PLO", xi=d["events"].astype(float).to_numpy(), ni=d["n"].astype(float).to_numpy(), add=0.5,
                to="only0")
    p = a.params
    fit = rma(es["yi"].to_numpy(), es["vi"].to_numpy(), method=p["method"], test=p["test"], level=p["level"],
              slab=list(d["label"]))
    cu = dg.cumulative(fit).reset_index()
    out = pd.DataFrame({"year": d["year"].to_numpy(), "study": d["label"].to_numpy(), "k": cu["k"].to_numpy(),
                        "patients": d["n"].astype(float).cumsum().astype(int).to_numpy()})
    for c in ("estimate", "ci_lb", "ci_ub"):
        out[c] = transform(cu[c].to_numpy(), "ilogit")
    return out


def information_by_year(rows) -> pd.DataFrame:
    """For summary-of-findings rows (``sof.SofRow``) with randomised evidence: per outcome and publication year,
    the cumulative randomised participants (and events, for binary outcomes) and the share of the optimal
    information size reached."""
    out = []
    for r in rows:
        rs = [t for t in r.results if t.randomised]
        if not rs:
            continue
        years = {t.comparison_id: t.year for t in rs}
        binary = all(t.counts for t in rs)
        cum_n = cum_e = 0
        for t in sorted(rs, key=lambda t: (years[t.comparison_id] or 9999, t.trial)):
            cum_n += t.n_randomised
            cum_e += sum(x[0] for x in t.counts.values()) if binary else 0
            target = OIS_EVENTS if binary else OIS_PARTICIPANTS
            got = cum_e if binary else cum_n
            out.append({"population": r.population, "outcome": r.outcome.label, "year": years[t.comparison_id],
                        "trial": t.trial, "participants": cum_n, "events": cum_e if binary else np.nan,
                        "information": "events" if binary else "participants", "ois": target,
                        "share": got / target})
    return pd.DataFrame(out)
