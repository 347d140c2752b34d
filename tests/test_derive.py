"""Derivation methods: each checked against an independent computation."""
import math

import numpy as np
import pytest
from scipy import stats

from ivighelpers.derive import count_from_percent, parse_exact_p, sd_from_ci, sd_from_p, wan_iqr, wan_range
from ivighelpers.errors import InputError


def test_count_from_percent_rounds_half_up():
    assert count_from_percent(87.5, 8) == 7
    assert count_from_percent(43.5, 23) == 10      # 10.005
    assert count_from_percent(12.5, 4) == 1        # 0.5 -> 1
    with pytest.raises(InputError, match="percent"):
        count_from_percent(120, 10)


def test_sd_from_p_inverts_a_paired_t_test():
    rng = np.random.default_rng(1)
    d = rng.normal(2.0, 3.0, 15)
    p = stats.ttest_1samp(d, 0).pvalue
    assert sd_from_p(d.mean(), p, 15) == pytest.approx(d.std(ddof=1), rel=1e-9)


def test_sd_from_ci_inverts_a_t_interval():
    rng = np.random.default_rng(2)
    d = rng.normal(-5, 4, 20)
    lo, hi = stats.t.interval(0.95, 19, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(20))
    assert sd_from_ci(lo, hi, 20) == pytest.approx(d.std(ddof=1), rel=1e-9)


def test_wan_estimators_recover_normal_parameters():
    # quartiles of N(mu, sigma) with large n: the IQR method returns sigma (Wan 2014, scenario S3)
    mu, sigma, n = 10.0, 2.0, 10 ** 6
    q1, q3 = stats.norm.ppf([0.25, 0.75], mu, sigma)
    m, sd = wan_iqr(mu, q1, q3, n)
    assert m == pytest.approx(mu) and sd == pytest.approx(sigma, rel=1e-4)
    # range method: xi(n) = 2 Phi^-1((n - 0.375) / (n + 0.25)) is the expected range of n normals / sigma
    n = 25
    lo, hi = mu - 1.9655 * sigma, mu + 1.9655 * sigma
    m, sd = wan_range(mu, lo, hi, n)
    assert m == pytest.approx(mu) and sd == pytest.approx(sigma, rel=1e-3)
    with pytest.raises(InputError, match="min <= median <= max"):
        wan_range(5, 6, 7, 10)


def test_parse_exact_p():
    assert parse_exact_p("0.03") == 0.03
    assert parse_exact_p("p = .001") == 0.001
    assert parse_exact_p("<0.05") is None
    assert parse_exact_p("NS") is None


def test_luo_means_match_published_example_and_meta_formula():
    from ivighelpers.derive import luo_mean_iqr, luo_mean_range
    # metaBLUE's documented example: Luo.mean(c(1, 4, 10), n = 30, "S1") -> 4.356748
    assert luo_mean_range(4, 1, 10, 30) == pytest.approx(4.356748, abs=5e-7)
    # R meta::mean_sd_iqr (method.mean = "Luo"): (0.7 + 0.39/n)(q1 + q3)/2 + (0.3 - 0.39/n) median
    n, q1, m, q3 = 25, 10.0, 14.0, 22.0
    assert luo_mean_iqr(m, q1, q3, n) == pytest.approx((0.7 + 0.39 / n) * 16 + (0.3 - 0.39 / n) * 14, rel=1e-12)


def test_sd_from_se_t_and_threshold_p():
    from scipy import stats

    from ivighelpers.derive import parse_threshold_p, sd_from_se, sd_from_t
    assert sd_from_se(2.0, 25) == pytest.approx(10.0)
    # t from a paired sample: SD of the change recovered exactly
    rng = np.random.default_rng(1)
    d = rng.normal(3, 2, 12)
    t = stats.ttest_1samp(d, 0).statistic
    assert sd_from_t(d.mean(), t, 12) == pytest.approx(d.std(ddof=1), rel=1e-10)
    assert parse_threshold_p("<0.05") == 0.05 and parse_threshold_p("p < 0.001") == 0.001
    assert parse_threshold_p("0.03") is None
    # a threshold used as if exact gives a larger SD than the (smaller) true p would
    true_p = 2 * stats.t.sf(abs(t), 11)
    assert sd_from_p(d.mean(), 0.05, 12) >= sd_from_p(d.mean(), min(true_p, 0.049), 12)
