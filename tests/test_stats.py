import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from kfold_clr.analysis.stats import (
    bayesian_correlated_t_test,
    corrected_resampled_t_test,
    corrected_variance,
    higher_is_better,
    holm,
    t_interval,
    wilcoxon_p,
)

DIFFS = [0.02, -0.01, 0.03, 0.01, 0.00, 0.04]


def _by_hand(diffs, n_train, n_val):
    n = len(diffs)
    mean = sum(diffs) / n
    s2 = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    scale = math.sqrt((1 / n + n_val / n_train) * s2)
    return mean, scale, n - 1


def test_corrected_t_matches_closed_form():
    mean, scale, df = _by_hand(DIFFS, 90, 10)
    t = mean / scale
    result = corrected_resampled_t_test(DIFFS, n_train=90, n_val=10)
    assert result.n == 6 and result.df == df and result.reason == ""
    assert result.mean_diff == pytest.approx(mean, rel=1e-12)
    assert result.t == pytest.approx(t, rel=1e-12)
    assert result.p == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-10)
    half = scipy_stats.t.ppf(0.975, df) * scale
    assert result.ci_low == pytest.approx(mean - half, rel=1e-10)
    assert result.ci_high == pytest.approx(mean + half, rel=1e-10)


def test_corrected_t_is_wider_than_naive_t():
    naive = scipy_stats.ttest_1samp(DIFFS, 0.0)
    corrected = corrected_resampled_t_test(DIFFS, n_train=90, n_val=10)
    assert abs(corrected.t) < abs(naive.statistic)
    assert corrected.p > naive.pvalue


def test_corrected_variance_closed_form():
    _, scale, _ = _by_hand(DIFFS, 40, 20)
    assert corrected_variance(DIFFS, n_train=40, n_val=20) == pytest.approx(scale**2, rel=1e-12)
    assert math.isnan(corrected_variance([0.1], n_train=40, n_val=20))


@pytest.mark.parametrize(("diffs", "fragment"), [([0.02], "too few splits"), ([], "too few splits")])
def test_corrected_t_undefined_cases_return_nan_and_reason(diffs, fragment):
    result = corrected_resampled_t_test(diffs, n_train=80, n_val=20)
    assert math.isnan(result.t) and math.isnan(result.p)
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)
    assert fragment in result.reason


def test_identical_scores_give_p_one_and_a_zero_interval():
    result = corrected_resampled_t_test([0.0, 0.0, 0.0, 0.0], n_train=80, n_val=20)
    assert (result.t, result.p, result.ci_low, result.ci_high) == (0.0, 1.0, 0.0, 0.0)
    assert "identical scores" in result.reason


def test_a_constant_difference_is_the_limit_of_the_test():
    result = corrected_resampled_t_test([0.01] * 4, n_train=80, n_val=20)
    assert result.t == math.inf and result.p == 0.0
    assert result.ci_low == result.ci_high == pytest.approx(0.01)
    assert "zero variance" in result.reason
    assert corrected_resampled_t_test([-0.01] * 4, n_train=80, n_val=20).t == -math.inf


def test_equal_differences_up_to_rounding_count_as_zero_variance():
    diffs = [0.1 + 0.2, 0.3, 0.3]  # 0.30000000000000004, 0.3, 0.3
    assert np.var(diffs, ddof=1) > 0
    result = corrected_resampled_t_test(diffs, n_train=80, n_val=20)
    assert result.p == 0.0 and "zero variance" in result.reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_train": 0, "n_val": 10}, "Argument `n_train` must be > 0. Received: n_train=0"),
        ({"n_train": 10, "n_val": -1}, "Argument `n_val` must be > 0. Received: n_val=-1"),
        ({"n_train": 10, "n_val": 1, "confidence": 1.0}, "Argument `confidence` must be in (0, 1)"),
    ],
)
def test_corrected_t_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        corrected_resampled_t_test(DIFFS, **kwargs)
    assert message in str(info.value)


def test_non_finite_differences_are_rejected():
    with pytest.raises(ValueError, match="finite"):
        corrected_resampled_t_test([0.1, float("nan"), 0.2], n_train=8, n_val=2)


def test_bayesian_probabilities_match_student_t_cdf():
    rope = 0.01
    mean, scale, df = _by_hand(DIFFS, 90, 10)
    left = scipy_stats.t.cdf(-rope, df, loc=mean, scale=scale)
    right = 1 - scipy_stats.t.cdf(rope, df, loc=mean, scale=scale)
    result = bayesian_correlated_t_test(DIFFS, n_train=90, n_val=10, rope=rope)
    assert result.prob_a_better == pytest.approx(right, rel=1e-9)
    assert result.prob_b_better == pytest.approx(left, rel=1e-9)
    assert result.prob_equivalent == pytest.approx(1 - left - right, rel=1e-9)
    total = result.prob_a_better + result.prob_equivalent + result.prob_b_better
    assert total == pytest.approx(1.0, abs=1e-12)


def test_bayesian_orientation_flips_for_lower_is_better():
    higher = bayesian_correlated_t_test(DIFFS, n_train=90, n_val=10, rope=0.01, higher_is_better=True)
    lower = bayesian_correlated_t_test(DIFFS, n_train=90, n_val=10, rope=0.01, higher_is_better=False)
    assert lower.prob_a_better == pytest.approx(higher.prob_b_better)
    assert lower.prob_b_better == pytest.approx(higher.prob_a_better)
    assert lower.prob_equivalent == pytest.approx(higher.prob_equivalent)


def test_bayesian_zero_rope_has_no_equivalence_mass():
    mean, scale, df = _by_hand(DIFFS, 90, 10)  # posterior scale from the corrected variance
    above = scipy_stats.t.sf(0.0, df, loc=mean, scale=scale)
    result = bayesian_correlated_t_test(DIFFS, n_train=90, n_val=10, rope=0.0)
    assert result.prob_equivalent == pytest.approx(0.0, abs=1e-12)
    assert result.prob_a_better == pytest.approx(above, rel=1e-9)
    assert result.prob_b_better == pytest.approx(1 - above, rel=1e-9)
    # the naive (uncorrected) scale would give a visibly different posterior
    naive = scipy_stats.t.sf(0.0, df, loc=mean, scale=np.std(DIFFS, ddof=1) / math.sqrt(len(DIFFS)))
    assert abs(naive - above) > 0.01


def _baycomp_degenerate(d, rope):
    """baycomp's CorrelatedTTest with var == 0: a point mass at the mean difference d."""
    return float(d < -rope), float(-rope <= d <= rope), float(d > rope)


@pytest.mark.parametrize("diffs, rope", [([0.0] * 5, 0.01), ([0.2] * 3, 0.01), ([-0.2] * 3, 0.01),
                                         ([0.005] * 4, 0.01), ([0.0] * 3, 0.0)])
@pytest.mark.parametrize("higher", [True, False])
def test_bayesian_zero_variance_is_baycomps_point_mass(diffs, rope, higher):
    left, inside, right = _baycomp_degenerate(diffs[0], rope)
    result = bayesian_correlated_t_test(diffs, n_train=9, n_val=1, rope=rope, higher_is_better=higher)
    a_better, b_better = (right, left) if higher else (left, right)
    assert (result.prob_a_better, result.prob_equivalent, result.prob_b_better) == (a_better, inside, b_better)
    assert result.reason


def test_bayesian_with_variance_is_not_degenerate():
    result = bayesian_correlated_t_test(DIFFS, n_train=9, n_val=1, rope=0.01)
    assert result.reason == "" and 0 < result.prob_equivalent < 1


def test_bayesian_undefined_and_bad_rope():
    result = bayesian_correlated_t_test([0.2], n_train=9, n_val=1)
    assert math.isnan(result.prob_a_better) and "too few splits" in result.reason
    with pytest.raises(ValueError, match="Argument `rope` must be >= 0. Received: rope=-0.1"):
        bayesian_correlated_t_test(DIFFS, n_train=9, n_val=1, rope=-0.1)


def test_holm_known_vector():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)


def test_holm_passes_nan_through_and_caps_at_one():
    adjusted = holm([0.01, float("nan"), 0.04])  # m = 2 defined tests
    np.testing.assert_allclose(adjusted, [0.02, np.nan, 0.04], rtol=1e-12)
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    assert holm([]).size == 0
    with pytest.raises(ValueError, match="must lie in"):
        holm([0.2, 1.5])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_invariants(p_values):
    raw = np.asarray(p_values)
    adjusted = holm(raw)
    assert np.all(adjusted >= raw - 1e-15)
    assert np.all(adjusted <= 1.0)
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= -1e-15)


def test_wilcoxon_matches_scipy_and_refuses_tiny_samples():
    diffs = [0.01, 0.02, -0.03, 0.04, 0.05, 0.06, 0.015]
    p, reason = wilcoxon_p(diffs)
    assert reason == "" and p == pytest.approx(scipy_stats.wilcoxon(diffs).pvalue)
    p, reason = wilcoxon_p([0.01, 0.02, 0.03, 0.04, 0.05])
    assert math.isnan(p) and "too few" in reason
    p, reason = wilcoxon_p([0.0] * 8)
    assert math.isnan(p) and "all differences are zero" in reason


def test_t_interval_closed_form():
    scores = [0.80, 0.84, 0.79, 0.83]
    mean = sum(scores) / 4
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / 3)
    half = scipy_stats.t.ppf(0.975, 3) * sd / 2
    low, high = t_interval(scores)
    assert low == pytest.approx(mean - half) and high == pytest.approx(mean + half)
    low90, high90 = t_interval(scores, confidence=0.9)
    assert low < low90 < high90 < high
    assert all(math.isnan(v) for v in t_interval([0.8]))


@pytest.mark.parametrize(
    ("metric", "expected"),
    [("accuracy", True), ("val_accuracy", True), ("auc", True), ("snapshot_val_accuracy", True),
     ("r2", True), ("loss", False), ("val_loss", False), ("mse", False), ("mae", False),
     ("rmse", False), ("mean_absolute_percentage_error", False), ("binary_crossentropy", False)],
)
def test_higher_is_better(metric, expected):
    assert higher_is_better(metric) is expected


def test_null_false_positive_rate_corrected_vs_naive():
    """Two strategies that differ only by seed noise, over 10 x 5-fold CV.

    The seed noise of one strategy is correlated across the splits of one data
    set (training sets overlap; Nadeau-Bengio's rho = n_val / n = 1/k), and a
    per-split difficulty is shared by both strategies (it cancels in the
    pairing). The naive paired t-test treats the 50 differences as independent
    and rejects far too often; the corrected test stays near the 5% level.
    """
    rng = np.random.default_rng(20240501)
    simulations, repeats, k = 2000, 10, 5
    n, rho = repeats * k, 1.0 / k
    split_effect = rng.normal(0.0, 0.03, size=(simulations, n))

    def seed_noise():
        shared = rng.normal(size=(simulations, 1))
        return 0.01 * (math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.normal(size=(simulations, n)))

    scores_a = 0.8 + split_effect + seed_noise()
    scores_b = 0.8 + split_effect + seed_noise()
    diffs = scores_a - scores_b
    corrected = np.array([corrected_resampled_t_test(d, n_train=k - 1, n_val=1).p for d in diffs])
    naive = scipy_stats.ttest_1samp(diffs, 0.0, axis=1).pvalue
    corrected_rate = float(np.mean(corrected < 0.05))
    naive_rate = float(np.mean(naive < 0.05))
    assert 0.02 <= corrected_rate <= 0.08
    assert naive_rate > 0.3 > corrected_rate


def test_corrected_test_has_power_against_a_real_difference():
    rng = np.random.default_rng(7)
    simulations, n, k = 300, 50, 5
    diffs = 0.02 + 0.01 * (math.sqrt(0.2) * rng.normal(size=(simulations, 1))
                           + math.sqrt(0.8) * rng.normal(size=(simulations, n)))
    p = np.array([corrected_resampled_t_test(d, n_train=k - 1, n_val=1).p for d in diffs])
    assert np.mean(p < 0.05) > 0.8
