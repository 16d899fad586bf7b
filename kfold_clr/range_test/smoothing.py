"""Smoothing of range-test curves: pure functions of arrays.

Two rules a person can check by hand:

- `ema`: exponential moving average with bias correction (fastai, Smith).
- `window_average`: means over non-overlapping windows of the values *and* of
  the learning rates, so that a smoothed point sits at the LR it summarises
  (an EMA lags behind the sweep; a window mean does not).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from kfold_clr.schedules._common import check_choice, check_int, check_number

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

SMOOTHING_METHODS = ("ema", "window")


def check_beta(beta: float) -> None:
    check_number("beta", beta, low=0, high=1, low_open=True, high_open=True)


def fitted_beta(iterations: int) -> float:
    """EMA factor whose memory (~1/(1-beta) points) is 5% of the sweep, within [0.6, 0.98].

    A fixed 0.98 remembers ~50 points: on a short sweep the smoothed curve lags
    the raw one by a large part of the LR range and the bounds come out too high.

    ```
    beta = clip(1 - 20 / iterations, 0.6, 0.98)
    ```
    """
    return float(min(0.98, max(0.6, 1.0 - 20.0 / iterations)))


def check_window(window: int) -> None:
    check_int("window", window, low=1)


def ema(values: ArrayLike, *, beta: float = 0.98) -> np.ndarray:
    """Exponential moving average with bias correction.

    A NaN or infinite value propagates to every later point, which is what a
    divergence check wants.

    ```python
    s[-1] = 0
    s[i] = beta * s[i-1] + (1 - beta) * v[i]
    smoothed[i] = s[i] / (1 - beta ** (i + 1))
    ```

    Args:
        values: 1-D array-like of floats.
        beta: Float in (0, 1). Weight of the past; higher is smoother.

    Returns:
        Float64 array of the same length.

    Example:

    >>> ema([1.0, 3.0], beta=0.5).tolist()   # [0.5 / 0.5, (0.25 + 1.5) / 0.75]
    [1.0, 2.3333333333333335]
    """
    check_beta(beta)
    values = np.asarray(values, dtype="float64")
    smoothed = np.empty_like(values)
    avg = 0.0
    for i, value in enumerate(values):
        avg = beta * avg + (1.0 - beta) * value
        smoothed[i] = avg / (1.0 - beta ** (i + 1))
    return smoothed


def window_average(lrs: ArrayLike, values: ArrayLike, *, window: int,
                   mode: str = "exponential") -> tuple[np.ndarray, np.ndarray]:
    """Averages the curve over non-overlapping windows of `window` points.

    Each window gives one point: the arithmetic mean of its values and the mean
    of its learning rates, arithmetic for a linear sweep and geometric for an
    exponential one (the middle of the window in log scale). A last, shorter
    window keeps the points that remain.

    ```python
    window k = points [k * window, min((k + 1) * window, n))
    value_k = mean(values[window k])
    lr_k    = mean(lrs[window k])              # linear sweep
    lr_k    = exp(mean(log(lrs[window k])))    # exponential sweep
    ```

    Args:
        lrs: 1-D array-like of positive floats, the learning rates.
        values: 1-D array-like of floats of the same length.
        window: Int >= 1. Points per window.
        mode: String. `"exponential"` or `"linear"`, the sweep's mode.

    Returns:
        A tuple `(lrs, values)` of float64 arrays of length `ceil(n / window)`.

    Example:

    >>> lrs, vals = window_average([1e-3, 1e-1, 1.0], [4.0, 2.0, 1.0], window=2)
    >>> lrs.round(6).tolist(), vals.tolist()
    ([0.01, 1.0], [3.0, 1.0])
    """
    check_window(window)
    check_choice("mode", mode, ("exponential", "linear"))
    lrs = np.asarray(lrs, dtype="float64")
    values = np.asarray(values, dtype="float64")
    if lrs.shape != values.shape or lrs.ndim != 1:
        raise ValueError(
            f"`lrs` and `values` must be 1-D arrays of the same length. "
            f"Received: shapes {lrs.shape} and {values.shape}"
        )
    starts = np.arange(0, len(values), window)
    if len(starts) == 0:
        return np.empty(0), np.empty(0)
    counts = np.diff(np.append(starts, len(values)))
    mean_values = np.add.reduceat(values, starts) / counts
    if mode == "linear":
        mean_lrs = np.add.reduceat(lrs, starts) / counts
    else:
        mean_lrs = np.exp(np.add.reduceat(np.log(lrs), starts) / counts)
    return mean_lrs, mean_values


def broadcast_windows(window_values: ArrayLike, n: int, window: int) -> np.ndarray:
    """Repeats each window's value over the `window` rows it summarises (length `n`)."""
    return np.repeat(np.asarray(window_values, dtype="float64"), window)[:n]


def default_window(n: int) -> int:
    """Window used when `window=None`: about 50 windows over the sweep, at least 2 points each."""
    return max(1, min(n, max(2, n // 50)))


def smooth_curve(lrs: ArrayLike, values: ArrayLike, *, smoothing: str = "ema", beta: float = 0.98,
                 window: int | None = None, mode: str = "exponential") -> tuple[np.ndarray, np.ndarray]:
    """Smoothed curve `(lrs, values)` for the given smoothing rule.

    `"ema"` keeps one point per iteration (the LRs unchanged); `"window"` gives
    one point per window (see `window_average`).

    Args:
        lrs: 1-D array-like of positive floats.
        values: 1-D array-like of floats.
        smoothing: String. `"ema"` or `"window"`.
        beta: Float in (0, 1). EMA weight of the past.
        window: Int or None. Points per window; None picks `default_window(n)`.
        mode: String. The sweep's mode, for the mean of the LRs of a window.

    Returns:
        A tuple `(lrs, values)` of float64 arrays.
    """
    check_choice("smoothing", smoothing, SMOOTHING_METHODS)
    lrs = np.asarray(lrs, dtype="float64")
    if smoothing == "ema":
        return lrs, ema(values, beta=beta)
    window = default_window(len(lrs)) if window is None else window
    return window_average(lrs, values, window=window, mode=mode)


class OnlineSmoother:
    """Feeds points one at a time and gives the smoothed value when one is complete.

    Matches `ema` (a value at every point) and `window_average` (a value when a
    window closes, None in between), so that the divergence check during the
    sweep sees the same numbers as the recorded curve.
    """

    def __init__(self, *, smoothing: str = "ema", beta: float = 0.98, window: int = 1) -> None:
        self.smoothing = smoothing
        self.beta = beta
        self.window = window
        self._count = 0
        self._avg = 0.0
        self._sum = 0.0

    def update(self, value: float) -> float | None:
        self._count += 1
        if self.smoothing == "ema":
            self._avg = self.beta * self._avg + (1.0 - self.beta) * value
            return self._avg / (1.0 - self.beta**self._count)
        self._sum += value
        if self._count % self.window:
            return None
        mean, self._sum = self._sum / self.window, 0.0
        return mean


def is_diverged(smoothed: float, best: float | None, threshold: float) -> bool:
    """True when a smoothed loss is NaN/inf or above `threshold` times the best one (best > 0)."""
    if not math.isfinite(smoothed):
        return True
    return best is not None and best > 0 and smoothed > threshold * best
