"""Smoothing of range-test curves against hand-computed values."""

import math

import numpy as np
import pytest

from kfold_clr.range_test.smoothing import (
    OnlineSmoother,
    broadcast_windows,
    default_window,
    ema,
    is_diverged,
    smooth_curve,
    window_average,
)


def test_ema_matches_hand_computation():
    # beta = 0.5: s = 0.5, 1.75, 3.375; bias corrections 0.5, 0.75, 0.875
    np.testing.assert_allclose(ema([1.0, 3.0, 5.0], beta=0.5), [1.0, 1.75 / 0.75, 3.375 / 0.875], rtol=1e-12)


def test_ema_of_a_constant_is_the_constant_thanks_to_bias_correction():
    np.testing.assert_allclose(ema(np.full(200, 2.5), beta=0.98), 2.5, rtol=1e-12)


def test_ema_closed_form_over_many_steps():
    rng = np.random.default_rng(0)
    values, beta = rng.normal(size=300), 0.9
    expected = [
        sum((1 - beta) * beta ** (i - j) * values[j] for j in range(i + 1)) / (1 - beta ** (i + 1))
        for i in range(len(values))
    ]
    np.testing.assert_allclose(ema(values, beta=beta), expected, rtol=1e-9, atol=1e-12)


def test_ema_propagates_nan():
    out = ema([1.0, np.nan, 1.0], beta=0.5)
    assert out[0] == 1.0 and np.isnan(out[1:]).all()


def test_window_average_means_values_and_geometric_lr_for_exponential_sweep():
    lrs, values = window_average([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0], window=2)
    np.testing.assert_allclose(values, [1.5, 3.5, 5.0])
    np.testing.assert_allclose(lrs, [10**-3.5, 10**-1.5, 1.0], rtol=1e-12)


def test_window_average_arithmetic_lr_for_linear_sweep():
    lrs, values = window_average([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [6.0, 4.0, 2.0, 0.0, 1.0, 2.0], window=3,
                                 mode="linear")
    np.testing.assert_allclose(lrs, [0.2, 0.5])
    np.testing.assert_allclose(values, [4.0, 1.0])


def test_smooth_curve_dispatches():
    lrs = np.geomspace(1e-5, 1.0, 10)
    values = np.arange(10.0)
    out_lrs, out = smooth_curve(lrs, values, smoothing="ema", beta=0.5)
    np.testing.assert_array_equal(out_lrs, lrs)
    np.testing.assert_allclose(out, ema(values, beta=0.5))
    out_lrs, out = smooth_curve(lrs, values, smoothing="window", window=5)
    np.testing.assert_allclose(out, [2.0, 7.0])
    assert len(smooth_curve(lrs, values, smoothing="window")[0]) == math.ceil(10 / default_window(10))


def test_online_smoother_matches_the_pure_functions():
    rng = np.random.default_rng(1)
    values = rng.uniform(1, 2, size=23)
    online = OnlineSmoother(smoothing="ema", beta=0.9)
    np.testing.assert_allclose([online.update(v) for v in values], ema(values, beta=0.9), rtol=1e-12)
    online = OnlineSmoother(smoothing="window", window=5)
    closed = [m for m in (online.update(v) for v in values) if m is not None]
    np.testing.assert_allclose(closed, window_average(np.ones(20), values[:20], window=5)[1], rtol=1e-12)


def test_broadcast_windows():
    np.testing.assert_array_equal(broadcast_windows([1.0, 2.0, 3.0], 7, 3), [1, 1, 1, 2, 2, 2, 3])


def test_divergence_rule():
    assert not is_diverged(3.9, 1.0, 4.0)
    assert is_diverged(4.1, 1.0, 4.0)
    assert is_diverged(float("nan"), 1.0, 4.0) and is_diverged(float("inf"), None, 4.0)
    assert not is_diverged(100.0, None, 4.0)


@pytest.mark.parametrize("beta", [0, 1, -0.5, 1.5, True])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match=r"Argument `beta` must be (in \(0, 1\)|a finite number)\. Received: beta="):
        ema([1.0], beta=beta)


@pytest.mark.parametrize("window", [0, -2, 1.5])
def test_bad_window(window):
    with pytest.raises(ValueError, match=r"Argument `window` must be (an integer )?>= 1\. Received: window="):
        window_average([1.0], [1.0], window=window)


def test_unknown_smoothing():
    with pytest.raises(ValueError, match=r"`smoothing` must be one of 'ema', 'window'. Received: smoothing='median'"):
        smooth_curve([1.0], [1.0], smoothing="median")
