"""The outcome vocabulary: one code per outcome that means one thing.

Every row of ``data/outcomes.csv`` carries an ``outcome_code`` from ``OUTCOMES`` beside the study's own
wording (``definition``). Analyses pool only rows with the same code; a broader pool across codes
(``BROAD_POOLS``) is allowed only when labelled as such, with a test of the definition as moderator.

Definitions follow the field's usage:
- 2016 ACR/EULAR response criteria (Aggarwal et al. 2017, Arthritis Rheumatol 69:898): Total Improvement
  Score (TIS, 0-100) >= 20 minimal, >= 40 moderate, >= 60 major improvement;
- IMACS preliminary definition of improvement (DOI; Rider et al. 2004, Arthritis Rheum 50:2281): >= 3 of 6
  core set measures improved by >= 20%, with no more than 2 worse by >= 25% (MMT not among them);
- manual muscle testing of 8 muscle groups (MMT-8, 0-80 or 0-150) and the MRC sum score (0-60 or 0-100);
- adverse events: treatment-emergent (TEAE, any event starting or worsening on treatment in a trial),
  infusion-related (within 72 h of an infusion), serious (ICH E2A: death, life-threatening,
  hospitalisation, disability, anomaly or medically important).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    domain: str
    kind: str          # binary | continuous | time | other
    label: str         # human label used in tables
    definition: str    # what the code means


OUTCOMES = {
    # ---- response and strength (binary) ----
    "tis_minimal": Outcome("response", "binary", "TIS ≥ 20 (at least minimal improvement)",
                           "2016 ACR/EULAR Total Improvement Score >= 20"),
    "tis_moderate": Outcome("response", "binary", "TIS ≥ 40 (at least moderate improvement)",
                            "2016 ACR/EULAR Total Improvement Score >= 40"),
    "tis_major": Outcome("response", "binary", "TIS ≥ 60 (major improvement)",
                         "2016 ACR/EULAR Total Improvement Score >= 60"),
    "imacs_doi": Outcome("response", "binary", "IMACS definition of improvement",
                         ">= 3 of 6 IMACS core set measures improved >= 20%, <= 2 worse >= 25%, MMT not worse"),
    "strength_improved": Outcome("strength", "binary", "muscle strength improved",
                                 "improvement of muscle strength specifically: a stated gain on MMT/MRC/QMT or "
                                 "investigator-judged improvement of strength"),
    "clinical_improved": Outcome("response", "binary", "clinical improvement (physician-judged)",
                                 "global clinical improvement or response as judged by the treating physicians, "
                                 "not restricted to strength and not a validated index"),
    "complete_response": Outcome("response", "binary", "complete response or remission",
                                 "complete response, remission or clinically inactive disease (study's definition)"),
    "partial_response": Outcome("response", "binary", "partial response", "partial response (study's definition)"),
    "no_response": Outcome("response", "binary", "no response", "no response or treatment failure"),
    "retreatment_response": Outcome("response", "binary", "response to retreatment after relapse",
                                    "response to a new immunoglobulin course given after a relapse"),
    "worsened": Outcome("response", "binary", "worsened", "clinical worsening during immunoglobulin therapy"),
    "relapse": Outcome("relapse", "binary", "relapse or flare",
                       "relapse, flare or loss of response after an initial response or on withdrawal"),
    "ck_normalised": Outcome("ck", "binary", "CK normalised or fell", "CK returned to normal or fell by a stated amount"),
    "gc_reduced": Outcome("steroid", "binary", "glucocorticoid dose reduced",
                          "glucocorticoid dose reduced (any or a stated amount)"),
    "gc_discontinued": Outcome("steroid", "binary", "glucocorticoid stopped", "glucocorticoids discontinued"),
    "is_reduced": Outcome("immunosuppressant", "binary", "immunosuppressant reduced or stopped",
                          "other immunosuppressant reduced, de-escalated or discontinued"),
    "skin_improved": Outcome("skin", "binary", "skin disease improved",
                             "improvement of cutaneous dermatomyositis (study's definition; major or any response)"),
    "dysphagia_improved": Outcome("dysphagia", "binary", "dysphagia improved or resolved",
                                  "improvement or resolution of dysphagia / oesophageal involvement"),
    "ild_improved": Outcome("lung", "binary", "interstitial lung disease improved",
                            "improvement of interstitial lung disease (e.g. FVC gain > 10%, study's definition)"),
    "function_improved": Outcome("function", "binary", "function or disability improved",
                                 "improvement on a disability, function or symptom scale"),
    "death": Outcome("mortality", "binary", "death", "death during follow-up"),
    # ---- safety (binary, patients with >= 1 event) ----
    "ae_any_te": Outcome("safety", "binary", "any treatment-emergent adverse event",
                         "patients with >= 1 treatment-emergent adverse event (trial definition)"),
    "ae_any_reported": Outcome("safety", "binary", "any adverse event reported (observational)",
                               "patients with >= 1 adverse event or side effect as recorded in an observational "
                               "series (definition and ascertainment vary)"),
    "ae_infusion": Outcome("safety", "binary", "infusion-related reactions",
                           "patients with >= 1 infusion-related reaction"),
    "ae_serious": Outcome("safety", "binary", "serious adverse events", "patients with >= 1 serious adverse event"),
    "ae_headache": Outcome("safety", "binary", "headache", "patients with headache"),
    "ae_fever": Outcome("safety", "binary", "fever or chills", "patients with fever or chills"),
    "ae_thromboembolic": Outcome("safety", "binary", "thromboembolic events",
                                 "patients with a venous or arterial thromboembolic event"),
    "ae_renal": Outcome("safety", "binary", "renal adverse events", "patients with renal impairment"),
    "ae_infection": Outcome("safety", "binary", "infections", "patients with an infection"),
    "ae_other": Outcome("safety", "binary", "other adverse events", "another named adverse event"),
    "discontinued_ae": Outcome("safety", "binary", "stopped because of adverse events",
                               "patients who stopped immunoglobulin because of an adverse event"),
    # ---- continuous ----
    "mmt8": Outcome("strength", "continuous", "MMT-8 score", "manual muscle testing of 8 muscle groups"),
    "mrc_sum": Outcome("strength", "continuous", "MRC sum score", "Medical Research Council sum score"),
    "strength_score_other": Outcome("strength", "continuous", "other strength score",
                                    "other strength score (MMT of other muscle sets, QMT, neuromuscular score)"),
    "ck_level": Outcome("ck", "continuous", "serum creatine kinase", "serum CK (IU/L)"),
    "gc_dose": Outcome("steroid", "continuous", "glucocorticoid dose", "daily prednisone-equivalent dose (mg/day)"),
    "tis_score": Outcome("response", "continuous", "Total Improvement Score", "mean 2016 ACR/EULAR TIS"),
    "disease_activity": Outcome("response", "continuous", "disease activity score", "MITAX, MYOACT or similar"),
    "cdasi": Outcome("skin", "continuous", "CDASI activity", "Cutaneous Dermatomyositis Disease Area and Severity Index"),
    "dysphagia_score": Outcome("dysphagia", "continuous", "dysphagia score", "dysphagia scale (VAS, EAT-10, FEES)"),
    "lung_function": Outcome("lung", "continuous", "lung function", "FVC or DLCO (% predicted)"),
    "function_score": Outcome("function", "continuous", "function score", "disability, fatigue or ADL scale"),
    "time_to_response": Outcome("time_to_response", "time", "time to response", "months or cycles to response"),
    "other": Outcome("other", "other", "other", "reported result not used in any pool (e.g. an odds ratio for "
                     "a predictor of response)"),
}

# broader pools across codes: allowed only with this label and a test of the definition as moderator
BROAD_POOLS = {
    "any_improvement": (("tis_minimal", "imacs_doi", "strength_improved", "clinical_improved"),
                        "any improvement (mixed definitions: TIS >= 20, IMACS DOI, strength, physician-judged)"),
}

SUBGROUPS = ("all", "dm", "pm", "ibm", "imnm", "asyns", "jdm", "cadm", "non_ibm", "other")
EXTRACTION_LEVELS = ("abstract", "tables", "full_text")


def label(code: str) -> str:
    return OUTCOMES[code].label if code in OUTCOMES else code
