"""GRADE: the rules' suggestion for a pooled analysis, and the review team's recorded judgements applied to it.

The code suggests and checks; the review team decides (GRADEpro, GRADE handbook). ``suggest`` rates one
``analysis.Analysis`` by stated rules; ``trials.suggest_grade`` / ``trials.combine`` rate randomised and
controlled comparisons. ``apply`` takes such a suggestion and the judgements recorded in ``data/grade.csv``
(``protocol.load_judgements``) and returns the certainty with one footnote per domain that is rated down or
up, saying where the recorded judgement differs from the rule and what the rule suggested. A domain with no
recorded judgement falls back to the rule and is marked "not yet judged".
"""

from __future__ import annotations

import pandas as pd

from .protocol import DOWN, JUDGEMENTS, UP
from .trials import rr_imprecision

LEVELS = ["very low", "low", "moderate", "high"]
HIGH_ROB = {"high", "serious", "critical"}
SOME_ROB = {"some_concerns", "moderate"}
NAMES = {"risk_of_bias": "risk of bias", "inconsistency": "inconsistency", "indirectness": "indirectness",
         "imprecision": "imprecision", "publication_bias": "publication bias", "large_effect": "large effect",
         "dose_response": "dose-response gradient", "opposing_confounding": "plausible confounding would reduce the effect"}
KEYS = {v: k for k, v in NAMES.items()}
WORDS = {k: {lv: w for w, lv in d.items()} for k, d in JUDGEMENTS.items()}


def suggest(a, ev=None) -> dict:
    """The rules' GRADE suggestion for a pooled (single-arm or comparative) analysis.

    - start: high for a randomised comparison; low for single-arm evidence (a rate in treated patients is not a
      treatment effect);
    - risk of bias: single-arm evidence carries serious risk of bias by design (no comparison: co-treatment,
      glucocorticoid tapering and regression to the mean for benefits; unsystematic recording for harms); one
      more level when more than half of the weight is at high/serious/critical risk. Comparisons: one level when
      more than half of the weight has some concerns or worse (RoB 2 'some concerns' counts; Sterne 2019,
      GRADE 4), two when more than half is at high risk;
    - inconsistency: I2 > 75% with a prediction interval over half of the range (or non-overlapping CIs) two
      levels; I2 > 50% or non-overlapping CIs one level;
    - indirectness: one level when the pool mixes outcome codes or responder definitions as written, subtype
      mixes not printed for most of the weight, or first-line and refractory patients;
    - imprecision: proportions: a CI wider than 20 percentage points one level, wider than 40 two (no optimal
      information size: that applies to comparative effects); comparisons: the trials' rule
      (``trials.rr_imprecision``);
    - publication bias: Egger p < 0.10 with k >= 10; with k < 10 (no funnel test), suspected when the series are
      small (median n < 20) and uniformly favourable for a benefit (every study >= 50% improved) or mostly
      conference abstracts (GRADE 5).
    """
    if a.k == 0:
        return {}
    if a.declined:
        return {"studies": a.k, "patients": a.n_patients, "certainty": "not rated (not pooled)",
                "footnotes": [f"not pooled: {a.declined}"], "domains": {}}
    d = a.data
    randomised = a.kind == "comparison"
    harm = any(str(c).startswith("ae_") or c == "discontinued_ae" for c in a.codes)
    w = d["weight"].astype(float) if "weight" in d else pd.Series(100.0 / len(d), index=d.index)
    w = 100 * w / w.sum()
    rob = d["rob_overall"].astype(str) if "rob_overall" in d else pd.Series("no_information", index=d.index)
    high = float(w[rob.isin(list(HIGH_ROB))].sum())
    some = float(w[rob.isin(list(SOME_ROB))].sum())
    dom = {}
    if randomised:
        if high > 50:
            dom["risk of bias"] = (2, f"very serious: {high:.0f}% of the weight at high risk of bias")
        elif high + some > 50:
            dom["risk of bias"] = (1, f"serious: {high + some:.0f}% of the weight with some concerns or at high risk")
        else:
            dom["risk of bias"] = (0, f"not serious: {high + some:.0f}% of the weight with some concerns or worse")
    else:
        why = ("adverse events recorded without a comparison group and mostly retrospectively" if harm else
               "no comparison group: co-treatment, glucocorticoid tapering and regression to the mean are not "
               "separated from the effect of immunoglobulin")
        lv = 2 if high > 50 else 1
        dom["risk of bias"] = (lv, f"{'very serious' if lv == 2 else 'serious'}: {why}"
                                   + (f"; {high:.0f}% of the weight at high/serious/critical risk" if high else ""))
    i2 = a.heterogeneity.get("I2")
    overlap = bool(d["ci_lb"].max() <= d["ci_ub"].min()) if len(d) >= 2 and "ci_lb" in d else True
    s = a.summary
    wide = False
    if s.get("pi_lb") is not None and s.get("pi_ub") is not None:
        wide = (s["pi_ub"] - s["pi_lb"] > 0.5) if a.kind == "proportion" else (
            (s["pi_ub"] / max(s["pi_lb"], 1e-12) > 10) if a.kind == "comparison" else False)
    if a.kind == "swim":
        agree = s.get("favouring", 0) == s.get("voting", -1)
        dom["inconsistency"] = (0, "not serious: every study with a direction agrees") if agree else \
            (1, "serious: studies differ in direction")
    elif a.k < 2:
        dom["inconsistency"] = (0, "not assessable: single study")
    elif i2 is not None and i2 > 75 and (wide or not overlap):
        dom["inconsistency"] = (2, f"very serious: I\u00b2 = {i2:.0f}% and " + (
            "a prediction interval spanning more than half of the range" if wide else "study CIs that do not overlap"))
    elif (i2 is not None and i2 > 50) or not overlap:
        dom["inconsistency"] = (1, "serious: " + "; ".join(([f"I\u00b2 = {i2:.0f}%"] if i2 is not None else [])
                                                          + ([] if overlap else ["some study CIs do not overlap"])))
    else:
        dom["inconsistency"] = (0, f"not serious: I\u00b2 = {i2:.0f}%, study CIs overlap" if i2 is not None else
                                "not serious")
    reasons = []
    if len(a.codes) > 1:
        reasons.append("outcome codes differ (broad pool)")
    if "definition" in d and a.kind in ("proportion", "comparison") and d["definition"].nunique() > 1 and not harm:
        defs = list(dict.fromkeys(d["definition"].astype(str)))
        reasons.append(f"{len(defs)} responder definitions as written (e.g. " + "; ".join(
            f"'{x[:60]}'" for x in defs[:3]) + ")")
    if "predominant" in d:
        off = float(w[d["predominant"].isin(["unclear"])].sum())
        if off > 50:
            reasons.append(f"{off:.0f}% of the weight from studies whose subtype mix is not printed")
    if "line" in d and len(d) >= 2:
        first = float(w[d["line"] == "first_line"].sum())
        refr = float(w[d["line"].isin(["refractory"])].sum())
        if first >= 20 and refr >= 20:
            reasons.append(f"first-line ({first:.0f}% of the weight) and refractory ({refr:.0f}%) patients pooled")
    if a.kind == "swim":
        reasons.append("direction only; the size of the change is not known for most studies")
    dom["indirectness"] = ((1, "serious: " + "; ".join(reasons)) if reasons else
                           (0, "not serious: one outcome definition; populations as selected"))
    if a.kind == "proportion":
        lo_, hi_ = (s.get("ci_lb"), s.get("ci_ub")) if a.k >= 2 else (d["ci_lb"].iloc[0], d["ci_ub"].iloc[0])
        width = 100 * (hi_ - lo_) if lo_ is not None else 100
        lv = 2 if width > 40 else (1 if width > 20 else 0)
        dom["imprecision"] = (lv, f"{['not serious', 'serious', 'very serious'][lv]}: the CI spans {width:.0f} "
                                  f"percentage points ({a.n_patients} patients)")
    elif a.kind == "comparison" and s.get("ci_lb") is not None:
        dom["imprecision"] = rr_imprecision(s["ci_lb"], s["ci_ub"], int(d["ai"].sum() + d["ci"].sum()))
    else:
        lv = 1 if a.n_patients < 400 else 0
        dom["imprecision"] = (lv, f"{'serious' if lv else 'not serious'}: {a.n_patients} patients (no pooled size "
                                  "of effect)")
    dom["publication bias"] = _publication_bias(a, d, harm)
    down = sum(v[0] for v in dom.values())
    start = "high" if randomised else "low"
    return {"studies": a.k, "patients": a.n_patients,
            "design": "randomised comparison" if randomised else "single-arm (uncontrolled) evidence",
            "starting certainty": start, "downgrades": down,
            "certainty": LEVELS[max(0, LEVELS.index(start) - down)],
            **{k: v[1] for k, v in dom.items()},
            "domains": {k: {"levels": v[0], "reason": v[1]} for k, v in dom.items()},
            "footnotes": [f"{k}: {v[1]}" for k, v in dom.items() if v[0] > 0]}


def apply(suggestion: dict, judgements: pd.DataFrame | None, population: str, outcome: str) -> dict:
    """The certainty of one summary-of-findings outcome from the rules' ``suggestion`` (a dict with
    'starting certainty' and 'domains': {name: {'levels', 'reason'}}) and the recorded ``judgements``.

    Returns the suggestion's fields plus: 'certainty', 'footnotes' (one per domain rated down or up, and one per
    disagreement with the rule), 'judged' (every downgrading domain has a recorded judgement), 'differs' (the
    domains where the judgement differs from the rule), 'stale' (judgements made when the rule suggested
    something else than it does now: re-judge), and per domain the recorded and the suggested judgement."""
    if not suggestion or not suggestion.get("domains"):
        return {**(suggestion or {}), "judged": False, "differs": [], "stale": [], "recorded": {}}
    rec = {}
    if judgements is not None and len(judgements):
        j = judgements[(judgements["population"] == population) & (judgements["outcome"] == outcome)]
        rec = {r["domain"]: r for _, r in j.iterrows()}
    start = suggestion.get("starting certainty", "high")
    total, notes, differs, stale, per = 0, [], [], [], {}
    for key in DOWN + UP:
        name = NAMES[key]
        rule = suggestion["domains"].get(name)
        rule_lv = rule["levels"] if rule else 0
        rule_word = WORDS[key].get(min(rule_lv, max(WORDS[key]))) if key in DOWN else "no"
        r = rec.get(key)
        if r is None:
            if key in UP:
                continue
            lv = rule_lv
            per[key] = {"judgement": None, "rule": rule_word, "levels": lv}
            if lv:
                notes.append(f"{name}: {rule_word.replace('_', ' ')} (the rule's suggestion; not yet judged): "
                             f"{_bare(rule['reason'])}")
        else:
            lv = JUDGEMENTS[key][r["judgement"]]
            per[key] = {"judgement": r["judgement"], "rule": rule_word, "levels": lv, "reason": r["reason"]}
            txt = f"{name}: {r['judgement'].replace('_', ' ')}: {r['reason']}"
            if key in DOWN and r["judgement"] != rule_word:
                differs.append(key)
                txt += (f" (recorded judgement; the rule suggested {rule_word.replace('_', ' ')}"
                        + (f": {_bare(rule['reason'])}" if rule else "") + ")")
            if r["rule_suggestion"] and key in DOWN and r["rule_suggestion"] != rule_word:
                stale.append(key)
                txt += (f" [the rule's suggestion has changed since this judgement ({r['rule_suggestion'].replace('_', ' ')}"
                        f" then, {rule_word.replace('_', ' ')} now): re-judge]")
            if lv or key in differs or key in stale:
                notes.append(txt)
        total += lv
    judged = all(k in rec for k in DOWN)
    if not judged:
        notes.append("not yet judged by the review team for "
                     + ", ".join(NAMES[k] for k in DOWN if k not in rec) + ": the rule's suggestion is used")
    idx = max(0, min(3, LEVELS.index(start) - total))
    return {**suggestion, "certainty": LEVELS[idx], "downgrades": total, "footnotes": notes, "judged": judged,
            "differs": differs, "stale": stale, "recorded": per,
            "rule_certainty": suggestion.get("certainty")}


# ---------------------------------------------------------------------------------------------
# helpers

def _bare(reason: str) -> str:
    """A rule's reason without its leading severity word ('serious: 58 events' -> '58 events')."""
    for w in ("extremely serious: ", "very serious: ", "not serious: ", "serious: ", "suspected: ", "undetected: "):
        if reason.startswith(w):
            return reason[len(w):]
    return reason


def _publication_bias(a, d, harm) -> tuple[int, str]:
    eg = a.small_study.get("egger_pval") if a.small_study else None
    if a.k >= 10 and eg is not None:
        return (1, f"suspected: Egger p = {eg:.3f}") if eg < 0.10 else (0, f"undetected: Egger p = {eg:.3f}")
    if a.kind == "proportion" and not harm and a.k >= 3 and "n" in d:
        small = float(d["n"].astype(float).median()) < 20
        favourable = bool((d["est"] >= 0.5).all()) if "est" in d else False
        abstracts = float((d["extraction_level"] == "abstract").mean()) if "extraction_level" in d else 0.0
        if small and (favourable or abstracts > 0.5):
            why = []
            if favourable:
                why.append(f"every one of {a.k} small series reports at least half of its patients improved")
            if abstracts > 0.5:
                why.append(f"{100 * abstracts:.0f}% read as abstracts (conference reports favour positive series)")
            return 1, (f"suspected: {'; '.join(why)}; median n = {float(d['n'].astype(float).median()):.0f}; "
                       f"k = {a.k} < 10, so no funnel test")
    return 0, f"not assessed: k = {a.k} < 10 (too few for a funnel test) and no other sign of selective publication"
