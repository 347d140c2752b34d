"""Vote counting says what every study found (no study dropped from the sentence), and a test for subgroup
differences is only reported when each subgroup has at least two studies."""
import numpy as np

from ivighelpers import rma_subgroups
from ivighelpers.swim import vote_count


def test_vote_tally_counts_every_study_including_no_change():
    vc = vote_count([-1.0, -2.0, -0.5, -3.0, -1.0, 0.0], direction="fall")
    assert vc.tally() == "5 of 6 studies show a fall, 1 no change"
    assert vc.voting == 5 and "1 study showed no change" in vc.sentence()
    assert vote_count([1.0, -1.0], direction="rise").tally() == "1 of 2 studies show a rise, 1 a fall"


def test_subgroup_test_needs_two_studies_in_every_subgroup():
    yi = np.array([0.1, 0.3, 0.2, 0.8, 0.5])
    vi = np.array([0.04, 0.05, 0.03, 0.06, 0.05])
    one = rma_subgroups(yi, vi, np.array(["a", "a", "a", "a", "b"]), method="REML")
    two = rma_subgroups(yi, vi, np.array(["a", "a", "a", "b", "b"]), method="REML")
    assert not one.testable and two.testable
