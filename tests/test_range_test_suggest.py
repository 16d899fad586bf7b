"""Suggestion methods on synthetic curves with known regime changes."""

import dataclasses

import numpy as np
import pytest

from kfold_clr.errors import KfoldClrError
from kfold_clr.range_test.smoothing import ema, window_average
from kfold_clr.range_test.suggest import (
    SUGGESTION_METHODS,
    RangeTestInconclusive,
    Suggestion,
    is_higher_better,
    min_div,
    regime,
    steepest,
    suggest,
    valley,
)

X = np.round(np.linspace(-6.0, 1.0, 701), 10)  # log10(lr), step 0.01
LRS = 10.0**X


def _curve(x):
    """Flat at 1 up to lr 1e-4, a cosine fall to 0.2 at lr 1e-1, then a rise to 3 at lr 10.

    Closed forms: 10% of the gain (v = 0.92) at x = -4 + 3 * acos(0.8) / pi = -3.386,
    90% (v = 0.28) at x = -4 + 3 * acos(-0.8) / pi = -1.614, steepest at x = -2.5, best at x = -1.
    """
    v = np.ones_like(x)
    fall = (x >= -4) & (x <= -1)
    v[fall] = 0.6 + 0.4 * np.cos(np.pi * (x[fall] + 4) / 3)
    rise = x > -1
    v[rise] = 0.2 + 2.8 * ((x[rise] + 1) / 2) ** 2
    return v


X10 = -4 + 3 * np.arccos(0.8) / np.pi
X90 = -4 + 3 * np.arccos(-0.8) / np.pi


def _noisy(seed, sigma=0.05, window=10):
    rng = np.random.default_rng(seed)
    raw = _curve(X) + rng.normal(0, sigma, size=len(X))
    return window_average(LRS, raw, window=window)


def test_regime_on_a_clean_curve_matches_the_closed_form():
    s = regime(LRS, _curve(X))
    assert np.log10(s.base_lr) == pytest.approx(X10, abs=0.011)
    assert np.log10(s.max_lr) == pytest.approx(X90, abs=0.011)
    assert s.method == "regime" and s.base_lr < s.max_lr


@pytest.mark.parametrize("seed", range(5))
def test_regime_with_noise_stays_near_the_regime_changes(seed):
    s = regime(*_noisy(seed))
    assert np.log10(s.base_lr) == pytest.approx(X10, abs=0.25)
    assert np.log10(s.max_lr) == pytest.approx(X90, abs=0.25)


def test_regime_is_robust_to_a_noisy_start():
    values = _curve(X)
    values[:15] = [3.0, 0.5, 2.5, 0.6, 2.0, 0.7, 1.8, 0.8, 1.5, 0.9, 1.2, 0.95, 1.1, 0.97, 1.05]
    s = regime(LRS, values)
    assert np.log10(s.base_lr) == pytest.approx(X10, abs=0.011)


def test_regime_stops_at_the_first_setback():
    values = _curve(X)
    bump = (X > -2.0) & (X < -1.8)
    values[bump] += 0.2  # the curve turns ragged before reaching 90% of its gain
    s = regime(LRS, values)
    assert np.log10(s.max_lr) == pytest.approx(-2.0, abs=0.011)


def test_steepest_on_a_clean_curve():
    s = steepest(LRS, _curve(X))
    assert np.log10(s.base_lr) == pytest.approx(-2.5, abs=0.011)
    assert s.max_lr == pytest.approx(0.1 / 3, rel=1e-9)


def test_min_div_is_the_best_lr_over_ten_and_base_a_fifth_of_it():
    s = min_div(LRS, _curve(X))
    assert s.max_lr == pytest.approx(0.01, rel=1e-9)
    assert s.base_lr == pytest.approx(0.002, rel=1e-9)


def test_valley_is_half_way_down_the_longest_valley():
    s = valley(LRS, _curve(X))
    # The valley runs from x = -4 to x = -1 (the flat part is not strictly decreasing).
    assert np.log10(s.max_lr) == pytest.approx(-2.5, abs=0.03)
    assert s.base_lr == pytest.approx(s.max_lr / 5, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("method", sorted(SUGGESTION_METHODS))
def test_every_method_gives_ordered_bounds_within_the_sweep_on_noisy_curves(method, seed):
    lrs, values = _noisy(seed)
    s = suggest(lrs, values, method=method)
    assert 0 < s.base_lr < s.max_lr <= 0.1  # never beyond the best point


def test_accuracy_like_curves_read_the_same_way():
    accuracy = 1.0 - _curve(X) / 3  # rises, peaks at lr 0.1, falls
    for method in SUGGESTION_METHODS:
        a = suggest(LRS, accuracy, method=method, higher_is_better=True)
        b = suggest(LRS, _curve(X), method=method)
        assert a.base_lr == pytest.approx(b.base_lr) and a.max_lr == pytest.approx(b.max_lr)


@pytest.mark.parametrize("method", sorted(SUGGESTION_METHODS))
def test_flat_noisy_curve_is_refused(method):
    rng = np.random.default_rng(3)
    values = ema(1.0 + rng.normal(0, 0.05, size=500), beta=0.9)
    with pytest.raises(RangeTestInconclusive, match=f"{method}: no clear improvement"):
        suggest(np.geomspace(1e-6, 1, 500), values, method=method)


@pytest.mark.parametrize("method", sorted(SUGGESTION_METHODS))
def test_rising_curve_is_refused(method):
    with pytest.raises(RangeTestInconclusive, match="no clear improvement"):
        suggest(LRS, np.linspace(1.0, 5.0, len(LRS)), method=method)


@pytest.mark.parametrize("method", sorted(SUGGESTION_METHODS))
def test_too_few_points_are_refused(method):
    with pytest.raises(RangeTestInconclusive, match=r"has 3 usable points, fewer than the \d+ it needs"):
        suggest([1e-3, 1e-2, 1e-1], [1.0, 0.5, 2.0], method=method)


def test_steepest_refuses_when_the_fall_is_within_the_margin_of_the_best():
    lrs = np.geomspace(1e-4, 1.0, 40)
    values = np.where(lrs < 0.05, 1.0, 0.2)  # a cliff right before the best point
    values[lrs > 0.2] = 2.0
    with pytest.raises(RangeTestInconclusive, match="within a factor 3"):
        steepest(lrs, values)


def test_regime_refuses_a_one_step_cliff():
    lrs = np.geomspace(1e-4, 1.0, 20)
    values = np.where(np.arange(20) < 10, 1.0, 0.2)
    with pytest.raises(RangeTestInconclusive, match="too abruptly"):
        regime(lrs, values)


def test_inconclusive_is_a_kfold_clr_error():
    assert issubclass(RangeTestInconclusive, KfoldClrError) and RangeTestInconclusive.exit_code == 2


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"one of 'regime', 'steepest', 'valley', 'min_div'. Received: method='fast'"):
        suggest(LRS, _curve(X), method="fast")


def test_bad_arrays():
    with pytest.raises(ValueError, match="strictly increasing"):
        regime(LRS[::-1], _curve(X))
    with pytest.raises(ValueError, match="finite"):
        regime(LRS, np.full(len(LRS), np.nan))
    with pytest.raises(ValueError, match="same length"):
        regime(LRS[:-1], _curve(X))


def test_suggestion_is_frozen_and_ordered():
    s = Suggestion(1e-3, 1e-2, "regime", "n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.base_lr = 1.0
    with pytest.raises(ValueError, match="0 < base_lr < max_lr"):
        Suggestion(1e-2, 1e-3, "regime", "")


@pytest.mark.parametrize("name, expected", [
    ("loss", False), ("mse", False), ("mae", False), ("sparse_categorical_crossentropy", False),
    ("accuracy", True), ("sparse_categorical_accuracy", True), ("auc", True), ("holdout_accuracy", True),
    ("holdout_loss", False), ("precision", True), ("mean_absolute_error", False),
])
def test_direction_of_quantities(name, expected):
    assert is_higher_better(name) is expected


def _result(losses, max_lr=1.0, diverged_at=None):
    import pandas as pd

    from kfold_clr.range_test.result import RangeTestResult

    n = len(losses)
    history = pd.DataFrame({"iteration": np.arange(n), "lr": np.geomspace(1e-5, max_lr, n), "loss": losses})
    if diverged_at is not None:
        history["used"] = np.arange(n) < diverged_at
    return RangeTestResult(history, {"max_lr": max_lr, "smoothing": "ema", "beta": 0.8, "monitor": "loss"})


def test_a_curve_still_falling_at_the_end_did_not_turn_up():
    result = _result(2.3 - 0.015 * np.arange(100))
    assert not result.turned_up and result.next_max_lr == 10.0
    assert "had not turned up" in result.top_note() and "try range_test.max_lr: 10.0" in result.top_note()
    assert "warning: the smoothed loss had not turned up" in result.summary()


def test_a_flat_noisy_curve_did_not_turn_up():
    noise = np.random.default_rng(0).normal(scale=0.08, size=100)
    assert not _result(1.7 + noise).turned_up


def test_a_curve_that_rises_after_its_best_point_turned_up():
    losses = np.concatenate([2.3 - 0.02 * np.arange(70), 0.9 + 0.05 * np.arange(30)])
    result = _result(losses)
    assert result.turned_up and result.next_max_lr is None and result.top_note() == ""


def test_a_diverged_sweep_saw_the_top():
    losses = np.concatenate([2.3 - 0.02 * np.arange(60), np.full(40, 50.0)])
    assert _result(losses, diverged_at=60).turned_up


def test_a_curve_that_never_turns_up_on_a_small_sample_blames_memorisation():
    losses = 2.3 - 0.015 * np.arange(100)
    small = _result(losses)
    small.settings.update(n_train=50, batch_size=16, iterations=100)  # 4 batches: 25 passes
    assert "went 25 times through its 50 rows" in small.top_note() and "range_test.reserve" in small.top_note()
    assert small.describe_sweep() == "100 updates (25 epochs of 4 batches of 16 rows)"
    large = _result(losses)
    large.settings.update(n_train=1600, batch_size=32, iterations=100)  # 50 batches: 2 passes
    assert "had not turned up" in large.top_note() and "times through" not in large.top_note()
