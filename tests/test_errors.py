"""Bad input raises a ValueError subclass naming the argument and what is allowed."""
import numpy as np
import pytest

from ivighelpers import InputError, escalc, rma, rma_glmm


@pytest.mark.parametrize("call,pattern", [
    (lambda: rma([0.1, 0.2], [0.1]), r"yi and vi have different lengths \(2 and 1\)"),
    (lambda: rma([0.1, 0.2], [0.1, 0.0]), r"vi \(sampling variance\) must be > 0; got 0 at position 1"),
    (lambda: rma([0.1, 0.2], [0.1, -1]), r"vi .* must be > 0"),
    (lambda: rma([0.1, np.inf], [0.1, 0.1]), r"yi has a missing or non-finite value at position 1"),
    (lambda: rma([0.1, 0.2], [0.1, -np.inf]), r"vi has a missing or non-finite value"),
    (lambda: rma([np.nan, 0.2], [0.1, np.nan], slab=["A", "B"]), r"missing for every study \(A, B\)"),
    (lambda: rma([0.1, 0.2], [0.1, 0.1], method="XX"), r"method='XX' is not supported; allowed: FE, DL, REML"),
    (lambda: rma([0.1, 0.2], [0.1, 0.1], test="q"), r"test='q' is not supported; allowed: z, knha"),
    (lambda: rma([0.1, 0.2], [0.1, 0.1], level=1.5), r"level must lie in \(0, 1\)"),
    (lambda: rma([0.1, 0.2], [0.1, 0.1], level=0), r"level must lie in \(0, 1\)"),
    (lambda: rma([0.1, 0.2], [0.1, 0.1], control={"tol": 1}), r"unknown control option"),
    (lambda: rma([], []), r"empty"),
    (lambda: escalc("PLO", xi=[5, 12], ni=[10, 10]), r"xi \(events\) > ni at position 1: xi=12, ni=10"),
    (lambda: escalc("PLO", xi=[-1, 2], ni=[10, 10]), r"xi must be non-negative counts; got -1"),
    (lambda: escalc("PLO", xi=[1, 2], ni=[10]), r"input lengths differ: xi=2, ni=1"),
    (lambda: escalc("XYZ", xi=[1], ni=[2]), r"measure='XYZ' is not supported; allowed: PR, PLO"),
    (lambda: escalc("PLO", xi=[1]), r"measure PLO needs argument\(s\) ni"),
    (lambda: escalc("PLO", xi=[1], ni=[2], foo=[1]), r"unknown argument\(s\) \['foo'\]"),
    (lambda: escalc("PLO", xi=[1], ni=[2], to="sometimes"), r"to='sometimes' is not allowed"),
    (lambda: escalc("SMCR", m1i=[2], m2i=[1], sd1i=[-1], sd2i=[1], ni=[10], ri=[0.5]), r"sd1i \(standard deviation\) must be >= 0; got -1"),
    (lambda: escalc("SMCR", m1i=[2], m2i=[1], sd1i=[1], sd2i=[1], ni=[10], ri=[1.5]), r"ri .* must lie in \[-1, 1\]"),
    (lambda: escalc("ROMC", m1i=[0], m2i=[1], sd1i=[1], sd2i=[1], ni=[10], ri=[0.5]), r"m1i must be > 0 for ROMC"),
    (lambda: escalc("RR", ai=[12], n1i=[10], ci=[1], n2i=[10]), r"ai \(events\) > n1i at position 0"),
    (lambda: escalc("OR", ai=[1], bi=[-2], ci=[1], di=[3]), r"bi must be non-negative counts"),
    (lambda: rma_glmm(xi=[1, 2], ni=[5, 5], nAGQ=0), r"nAGQ must be .auto. or a positive integer"),
    (lambda: rma_glmm(xi=[1, 2], ni=[5, 5], nAGQ=500), r"positive integer up to 300; got 500"),
    (lambda: rma_glmm(xi=[1, 7], ni=[5, 5]), r"xi \(events\) > ni at position 1: xi=7, ni=5"),
])
def test_bad_input_message(call, pattern):
    with pytest.raises(InputError, match=pattern):
        call()


def test_errors_are_value_errors():
    assert issubclass(InputError, ValueError)
