"""What the evidence base holds and lacks (ivighelpers.evidence), and the value filter on secondary pages."""

import pandas as pd
import pytest

from ivighelpers import analysis as an
from ivighelpers import evidence as evb
from ivighelpers import trials as tr
from ivighelpers.data import SECONDARY_SOURCES


@pytest.fixture(scope="module")
def ev():
    return an.load_evidence({})


def test_read_labels_say_what_was_read_for_the_rows_used(ev):
    lab = evb.read_labels(ev.tables)
    oc = ev.tables["outcomes"]
    pro = oc[oc["study_id"] == "aggarwal2022"]
    n_full = int((pro["extraction_level"] == "full_text").sum())
    n_sec = int(pro["source_type"].isin(SECONDARY_SOURCES).sum())
    assert f"full text {n_full}" in lab["aggarwal2022"] and f"{n_sec} of {len(pro)} rows from secondary pages" in lab["aggarwal2022"]
    assert n_full < len(pro) / 5                         # ProDERM is not "full text": one companion paper was
    assert lab["cherin2002"] == "abstract"


def test_full_text_priorities_put_randomised_trials_first_then_weight(ev):
    pr = evb.full_text_priorities(ev)
    rand = pr["design"].isin(["rct", "crossover_rct"])
    assert rand.sum() >= 5 and rand.iloc[:rand.sum()].all()          # every randomised trial before any other
    assert pr["score"].is_monotonic_decreasing
    # the share of patients is computed from the pool: Marie 2010's largest share, checked by hand
    marie = pr.set_index("study_id").loc["marie2010"]
    oc = ev.outcomes
    pool = oc[(oc["outcome_code"] == "dysphagia_improved") & (oc["arm"] == "ig") & oc["events"].notna() & oc["n"].notna()
              & ~oc["study_id"].isin(ev.studies.loc[ev.studies["design"].isin(["rct", "crossover_rct"]), "study_id"])]
    per = pool.groupby("study_id")["n"].max().astype(float)
    assert f"{100 * per['marie2010'] / per.sum():.0f}% of the patients of the pool 'dysphagia improved" in marie["why"]
    assert pr["rank"].tolist() == list(range(1, len(pr) + 1))


def test_registered_trials_group_their_pages(ev):
    rt = evb.registered_trials(ev.tables).set_index("trial")
    rec = rt.loc["RECLAIIM"]
    assert "NCT04044690" in rec["registry"] and rec["pages"] == 5
    assert "Completed" in rec["status"] and "Active, not recruiting" in rec["status"]
    assert set(rt["results"]) == {"none found"} and set(rt["searched"]) == {"2026-12-01"}
    assert {"MIGHT", "TIME IS MUSCLE"} <= set(rt.index)


def test_excluding_secondary_pages_removes_their_rows_and_the_comparisons_that_need_them(ev):
    ev2 = an.load_evidence({"exclude_secondary": True})
    assert not ev2.outcomes["source_type"].isin(SECONDARY_SOURCES).any()
    kept = {t.comparison_id for t in tr.randomised_evidence(ev2)}
    assert "proderm_tis20" not in kept and "dalakas1993_strength" not in kept
    assert kept                                       # comparisons read on the trials' own pages remain
    left = {x["comparison_id"]: x for x in tr.left_out_by_value_filters(ev2)}
    assert "news page" in left["proderm_tis20"]["why"] and left["proderm_tis20"]["rows"] == ["aggarwal2022-01", "aggarwal2022-02"]
    assert tr.left_out_by_value_filters(ev) == []
    full = {t.comparison_id: t for t in tr.randomised_evidence(ev)}
    assert full["proderm_tis20"].secondary_source and full["proderm_tis20"].source_types == ["news"]


@pytest.mark.parametrize("k", [2, 30])
def test_evidence_map_keeps_study_names_horizontal_however_few(ev, k):
    import matplotlib.pyplot as plt

    from ivighelpers import plots
    ids = list(ev.studies["study_id"][:k])
    fig = plots.evidence_map(ev.outcomes[ev.outcomes["study_id"].isin(ids)], ev.studies[ev.studies["study_id"].isin(ids)])
    try:
        labels = fig.axes[0].get_yticklabels()
        assert len(labels) == k and {t.get_rotation() for t in labels} == {0.0}
    finally:
        plt.close(fig)


@pytest.mark.parametrize("tool", ["RoB2", "ROBINS-I", "JBI-CS"])
def test_traffic_light_puts_each_judgements_symbol_in_its_cell(ev, tool):
    import matplotlib.pyplot as plt

    from ivighelpers import plots
    rob = ev.tables["risk_of_bias"]
    sub = rob[(rob["tool"] == tool) & rob["study_id"].isin(ev.studies["study_id"])]
    fig = plots.rob_traffic_light(sub, ev.studies, tool)
    try:
        ax = fig.axes[0]
        circles, *marks = ax.collections
        cells = sub.drop_duplicates(["study_id", "domain"])
        assert len(circles.get_offsets()) == len(cells)
        want = cells["judgement"].map(lambda j: plots.ROB_STYLE[j][1]).value_counts().to_dict()
        want.pop("", None)
        got = {}
        for sym, (m, _) in plots._ROB_MARKER.items():      # each symbol's collection holds one point per cell
            n = sum(len(c.get_offsets()) for c in marks if _same_marker(c, m))
            if n:
                got[sym] = n
        assert got == want and set(want) <= set("+-?x!")
        assert not ax.texts                            # no text object per cell
    finally:
        plt.close(fig)


def _same_marker(collection, marker):
    from matplotlib.markers import MarkerStyle
    style = MarkerStyle(marker)
    ref = style.get_path().transformed(style.get_transform()).vertices
    path = collection.get_paths()[0].vertices
    return path.shape == ref.shape and (abs(path - ref) < 1e-9).all()
