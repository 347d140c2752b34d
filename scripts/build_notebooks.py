"""Write the domain notebooks (notebooks/NN_<domain>.ipynb) from the cell texts below.

The notebooks hold narrative and calls only; `make notebooks` then executes them in place with papermill
so that the committed copies carry their outputs (nbval compares against them).
"""

from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parent.parent

PARAMS = '''# Parameters (papermill injects overrides after this cell; the next cell checks every value)
method: str = "REML"          # tau2 estimator: FE, DL, REML, ML, PM, HS, SJ, HE, EB
test: str = "z"               # CI method: "z" (normal) or "knha" (Knapp-Hartung, t on k-1 df)
level: float = 0.95           # confidence level, in (0, 1)
transform: str = "{transform}"        # proportions: PLO (logit), PFT (Freeman-Tukey), PAS, PR (raw), GLMM (exact binomial)
ri: float = 0.5               # assumed pre-post correlation for change scores, in [-1, 1]
add: float = 0.5              # continuity correction for zero cells (not used by GLMM or PFT)
to: str = "only0"             # where to add it: only0, all, if0all, none
designs: str | list = "all"   # "all" or a list of rct, crossover_rct, prospective_open, retrospective_cohort, case_series, nonrandomized_controlled, registry
subtypes: str | list = "all"  # "all" or a list of dm, pm, ibm, imnm, asyns, jdm, cadm, other
route: str = "all"            # all, IVIG, SCIg
line: str = "all"             # all, first_line, refractory, maintenance, mixed, unclear
population: str = "all"       # all, adult, juvenile, mixed, unclear
year_min: int = 1900          # publication year from
year_max: int = 2100          # publication year to
min_n: int = 1                # minimum number of Ig-treated patients per study
exclude_high_rob: bool = False  # drop studies at high/serious/critical overall risk of bias
exclude_derived: bool = False   # drop values derived by ivighelpers.derive (counts from %, SDs from p/CI)
run_name: str = ""            # "" = the default run; otherwise outputs go to reports/runs/<run_name>/'''

START = '''from ivighelpers import analysis as an, notebook as nb
ctx = nb.start("{domain}", globals())
ev = ctx.ev'''

NOTEBOOKS = {
    "00_evidence_base": ("evidence", "PLO", [
        ("md", "# The evidence base\n\nWhich studies were found, which were included and why, what they report, and how "
               "trustworthy they are. Every number below is computed from `data/`."),
        ("code", "nb.evidence_overview(ctx)"),
    ]),
    "01_strength": ("strength", "PLO", [
        ("md", "# Muscle strength\n\n**Question:** in patients with idiopathic inflammatory myopathy, how often does "
               "muscle strength improve with immunoglobulin (IVIG or SCIg), and by how much do strength scores change? "
               "Randomised comparisons against placebo are shown apart from the single-arm evidence."),
        ("md", "## Responders (single-arm proportion)\n\nStudies' own definitions of improvement in muscle strength; where a "
               "study reports only overall clinical response, that is used and its definition shown."),
        ("code", 'a = an.proportion_analysis(ev, "strength_responders", "Muscle strength response",\n'
                 '                           [("strength", "responders"), ("response", "responders")], label="proportion of responders")\n'
                 'nb.show(ctx, a, published=["PE-D-02", "PE-D-03", "PE-D-04", "PE-D-19"])'),
        ("md", "## Change in strength scores (pre-post, standardised by the baseline SD)"),
        ("code", 'b = an.prepost_analysis(ev, "strength_scores", "Change in strength score (SMCR)",\n'
                 '                         [("strength", "mmt8"), ("strength", "mmt"), ("strength", "mrc_sum"), ("strength", "strength_score")],\n'
                 '                         measure="SMCR")\n'
                 'nb.show(ctx, b, published=["PE-D-13", "PE-D-14"])'),
        ("md", "## Randomised comparisons: immunoglobulin vs placebo"),
        ("code", 'c = an.comparison_analysis(ev, "rct_response", "Response, immunoglobulin vs placebo (randomised)",\n'
                 '                            [("response", "responders"), ("strength", "responders")])\n'
                 'nb.show_comparison(ctx, c)'),
    ]),
    "02_ck": ("ck", "PLO", [
        ("md", "# Creatine kinase\n\n**Question:** how much does serum creatine kinase fall during immunoglobulin therapy? "
               "Ratio of means after/before (log scale, ROMC) and the standardised mean change (SMCR)."),
        ("code", 'a = an.prepost_analysis(ev, "ck_ratio", "CK, ratio of means after/before (ROMC)", [("ck", "ck")],\n'
                 '                         measure="ROMC", label="ratio of means (after/before)")\n'
                 'nb.show(ctx, a)'),
        ("code", 'b = an.prepost_analysis(ev, "ck_smcr", "CK, standardised mean change (SMCR)", [("ck", "ck")], measure="SMCR")\n'
                 'nb.show(ctx, b, published=["PE-D-12", "PE-D-16", "PE-D-17", "PE-D-20"])'),
    ]),
    "03_steroid_sparing": ("steroid", "PLO", [
        ("md", "# Steroid-sparing effect\n\n**Question:** how often can glucocorticoids (and other immunosuppressants) be "
               "reduced during immunoglobulin therapy, and by how much does the prednisone dose fall?"),
        ("code", 'a = an.proportion_analysis(ev, "steroid_reduced", "Glucocorticoid dose reduced", [("steroid", "steroid_reduced")])\n'
                 'nb.show(ctx, a, published=["PE-D-07", "PE-D-23"])'),
        ("code", 'b = an.proportion_analysis(ev, "is_reduced", "Immunosuppressant reduced or stopped", [("immunosuppressant", "is_reduced")])\n'
                 'nb.show(ctx, b, published=["PE-D-08"])'),
        ("code", 'c = an.prepost_analysis(ev, "prednisone_ratio", "Prednisone dose, ratio of means after/before (ROMC)",\n'
                 '                         [("steroid", "prednisone_dose")], measure="ROMC", label="ratio of means (after/before)")\n'
                 'nb.show(ctx, c)'),
    ]),
    "04_safety": ("safety", "GLMM", [
        ("md", "# Safety\n\n**Question:** how many patients treated with immunoglobulin have adverse events, by type? "
               "Proportions of patients with at least one event; the default model is the binomial-normal GLMM, which "
               "uses the exact likelihood, so studies with no events count without any 0.5 correction."),
        ("code", 'for key, title in [("ae_any", "Any adverse event"), ("ae_serious", "Serious adverse events"),\n'
                 '                   ("ae_infusion", "Infusion-related reactions"), ("ae_headache", "Headache"),\n'
                 '                   ("ae_thromboembolic", "Thromboembolic events"), ("ae_infection", "Infection"),\n'
                 '                   ("discontinued_ae", "Stopped because of adverse events")]:\n'
                 '    a = an.proportion_analysis(ev, key, title, [("safety", key)], label="proportion of patients")\n'
                 '    nb.show(ctx, a, published=["PE-D-09"] if key == "ae_infection" else None, subgroups=False)'),
        ("md", "## Per-infusion rates, where reported"),
        ("code", 'nb.show_rates(ctx)'),
    ]),
    "05_response_course": ("response_course", "PLO", [
        ("md", "# Response course and extramuscular domains\n\n**Questions:** how quickly do patients respond, how often "
               "do they relapse, and what happens to skin disease, dysphagia and interstitial lung disease?"),
        ("code", 'nb.show_reported(ctx, "time_to_response", "Time to response, as reported", published=["PE-D-05"])'),
        ("code", 'a = an.proportion_analysis(ev, "relapse", "Relapse or waning response", [("relapse", "relapsed")])\n'
                 'nb.show(ctx, a, published=["PE-D-06"])'),
        ("code", 'b = an.proportion_analysis(ev, "complete_response", "Complete response", [("response", "complete_response")])\n'
                 'nb.show(ctx, b)'),
        ("code", 'c = an.proportion_analysis(ev, "skin", "Skin disease improved", [("skin", "skin_responders")])\n'
                 'nb.show(ctx, c)'),
        ("code", 'd = an.proportion_analysis(ev, "dysphagia", "Dysphagia improved", [("dysphagia", "dysphagia_improved")])\n'
                 'nb.show(ctx, d, published=["PE-D-21"])'),
        ("code", 'e = an.proportion_analysis(ev, "lung", "Interstitial lung disease improved", [("lung", "ild_improved")])\n'
                 'nb.show(ctx, e)'),
    ]),
}


def build():
    for name, (domain, transform, cells) in NOTEBOOKS.items():
        nb = nbf.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        out = [nbf.v4.new_markdown_cell(cells[0][1])]
        p = nbf.v4.new_code_cell(PARAMS.format(transform=transform))
        p.metadata["tags"] = ["parameters"]
        out.append(p)
        out.append(nbf.v4.new_code_cell(START.format(domain=domain)))
        for kind, text in cells[1:]:
            out.append(nbf.v4.new_markdown_cell(text) if kind == "md" else nbf.v4.new_code_cell(text))
        out.append(nbf.v4.new_code_cell("nb.finish(ctx)"))
        for i, c in enumerate(out):
            c["id"] = f"{name}-{i:02d}"
        nb.cells = out
        nbf.write(nb, ROOT / "notebooks" / f"{name}.ipynb")
        print("wrote", name)


if __name__ == "__main__":
    build()
