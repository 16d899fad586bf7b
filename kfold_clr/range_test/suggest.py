"""Learning-rate bounds read from a range-test curve: interchangeable pure functions.

Every method takes the smoothed curve, already cut where the test diverged,
as `(lrs, values, *, higher_is_better=False)` and returns a `Suggestion`, or
raises `RangeTestInconclusive` with the reason when the curve gives it too
little to go on. `SUGGESTION_METHODS` maps their names to them.

Common reading of a curve (values turned so that lower is better):

- start level: the median of the first 10% of the points (robust to a noisy start);
- best point: the lowest value; the gain is `start level - best value`;
- a curve whose gain is under `min_improvement` (5%) of the larger of
  |start level| and |best value|, or whose best point lies in the first 10%,
  has no clear improvement and is refused.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from kfold_clr.errors import KfoldClrError
from kfold_clr.schedules._common import check_choice

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


class RangeTestInconclusive(KfoldClrError):
    """The range-test curve does not support a suggestion; the message says why."""


@dataclasses.dataclass(frozen=True)
class Suggestion:
    """Learning-rate bounds suggested by a range test.

    Args:
        base_lr: Float. Lower bound of the cycle, > 0.
        max_lr: Float. Upper bound of the cycle, > `base_lr`.
        method: String. Name of the method that read the curve.
        note: String. How the bounds were read, for a person.
    """

    base_lr: float
    max_lr: float
    method: str
    note: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.base_lr) and math.isfinite(self.max_lr) and 0 < self.base_lr < self.max_lr):
            raise ValueError(
                f"A suggestion needs 0 < base_lr < max_lr. "
                f"Received: base_lr={self.base_lr!r}, max_lr={self.max_lr!r}"
            )

    def __str__(self) -> str:
        return f"{self.method}: base_lr={self.base_lr:.3g}, max_lr={self.max_lr:.3g} ({self.note})"


def is_higher_better(name: str) -> bool:
    """Whether a larger value of the named loss or metric is better (one rule for the whole
    package: :func:`kfold_clr.analysis.stats.higher_is_better`)."""
    from kfold_clr.analysis.stats import higher_is_better

    return higher_is_better(name)


# ---------------------------------------------------------------- helpers


def _prepare(lrs: ArrayLike, values: ArrayLike, *, higher_is_better: bool, method: str,
             min_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Checks the arrays; returns them with the values turned lower-is-better."""
    lrs = np.asarray(lrs, dtype="float64")
    values = np.asarray(values, dtype="float64")
    if lrs.ndim != 1 or lrs.shape != values.shape:
        raise ValueError(
            f"`lrs` and `values` must be 1-D arrays of the same length. "
            f"Received: shapes {lrs.shape} and {values.shape}"
        )
    if not np.all(np.isfinite(lrs)) or np.any(lrs <= 0):
        raise ValueError("`lrs` must be finite and > 0.")
    if np.any(np.diff(lrs) <= 0):
        raise ValueError("`lrs` must be strictly increasing.")
    if not np.all(np.isfinite(values)):
        raise ValueError("`values` must be finite; cut the curve where the test diverged.")
    if len(values) < min_points:
        raise RangeTestInconclusive(
            f"{method}: the curve has {len(values)} usable points, fewer than the {min_points} it needs; "
            "run more iterations (or raise min_lr if the test diverged early)"
        )
    return lrs, (-values if higher_is_better else values)


def _gain(v: np.ndarray, *, method: str, min_improvement: float, higher_is_better: bool) -> tuple[float, int, float]:
    """Start level, index of the best point and gain of a lower-is-better curve, or refuses the curve."""
    n_start = max(1, len(v) // 10)
    start = float(np.median(v[:n_start]))
    i_best = int(np.argmin(v))
    gain = start - float(v[i_best])
    scale = max(abs(start), abs(float(v[i_best])), 1e-12)
    sign = -1.0 if higher_is_better else 1.0
    if i_best < n_start or gain <= min_improvement * scale:
        raise RangeTestInconclusive(
            f"{method}: no clear improvement over the sweep (from {sign * start:.4g} at the start to "
            f"{sign * v[i_best]:.4g} at best, {max(gain, 0.0) / scale:.1%}; needs "
            f"{min_improvement:.0%} beyond the first {n_start} points); widen the LR range"
        )
    return start, i_best, gain


def _decreasing_lengths(v: ArrayLike) -> np.ndarray:
    """Length of the longest strictly decreasing subsequence ending at each point (O(n log n))."""
    tails, lengths = [], np.empty(len(v), dtype=int)
    for i, x in enumerate(-np.asarray(v)):
        k = bisect.bisect_left(tails, x)
        if k == len(tails):
            tails.append(x)
        else:
            tails[k] = x
        lengths[i] = k + 1
    return lengths


# ---------------------------------------------------------------- methods


def regime(lrs: ArrayLike, values: ArrayLike, *, higher_is_better: bool = False, min_improvement: float = 0.05,
           start_fraction: float = 0.1, stop_fraction: float = 0.9, setback: float = 0.05) -> Suggestion:
    """Smith's reading: from where the curve starts to improve to where it stops.

    `base_lr` is where the curve has made `start_fraction` (10%) of its gain for
    good (the point after the last one, before the best, still above that
    level, so early wiggles do not count). `max_lr` is where it stops improving:
    the first point with `stop_fraction` (90%) of the gain, or, if earlier, the
    best point before the first setback of more than `setback` (5%) of the gain
    (the curve turns ragged or gets worse).

    ```python
    gain = start - best
    base = first point after the last v[i] > start - 0.1 * gain  (i before best)
    max  = min(first v[i] <= start - 0.9 * gain,
               argmin before the first v[i] - min(v[base:i]) > 0.05 * gain)
    ```

    Args:
        lrs: 1-D array of increasing learning rates.
        values: 1-D array of the smoothed monitored quantity.
        higher_is_better: Bool. True for accuracy-like quantities.
        min_improvement: Float. Smallest relative gain that counts as clear.
        start_fraction: Float. Share of the gain that marks `base_lr`.
        stop_fraction: Float. Share of the gain that marks `max_lr`.
        setback: Float. Rise, as a share of the gain, that ends the improvement.

    Returns:
        A `Suggestion`.

    Raises:
        RangeTestInconclusive: fewer than 10 points, no clear improvement, or
            an improvement too abrupt to separate the two bounds.
    """
    lrs, v = _prepare(lrs, values, higher_is_better=higher_is_better, method="regime", min_points=10)
    start, i_best, gain = _gain(v, method="regime", min_improvement=min_improvement,
                                higher_is_better=higher_is_better)
    still_high = np.nonzero(v[:i_best] > start - start_fraction * gain)[0]
    i_base = int(still_high[-1]) + 1 if len(still_high) else 0
    segment = v[i_base:i_best + 1]
    i_stop = int(np.nonzero(segment <= start - stop_fraction * gain)[0][0])
    setbacks = np.nonzero(segment - np.minimum.accumulate(segment) > setback * gain)[0]
    if len(setbacks):
        i_stop = min(i_stop, int(np.argmin(segment[:setbacks[0]])))
    i_max = i_base + i_stop
    if i_max <= i_base:
        raise RangeTestInconclusive(
            f"regime: the curve improves too abruptly (within one point at lr={lrs[i_base]:.3g}) to separate "
            "base_lr from max_lr; run more iterations or narrow the LR range"
        )
    note = (f"improving from {start_fraction:.0%} of the gain to {stop_fraction:.0%} of it or the first setback; "
            f"best at lr={lrs[i_best]:.3g}")
    return Suggestion(float(lrs[i_base]), float(lrs[i_max]), "regime", note)


def steepest(lrs: ArrayLike, values: ArrayLike, *, higher_is_better: bool = False, margin: float = 3.0,
             min_improvement: float = 0.05) -> Suggestion:
    """Steepest descent for `base_lr`, the best point divided by a margin for `max_lr`.

    The slope is taken per unit of log LR (central differences). The margin of
    3 (not fastai's 10) keeps `max_lr` within the improving regime while leaving
    a usable cycle; a divisor of 10 usually lands below the steepest point.

    ```python
    slope = d value / d log(lr)
    base_lr = lr[argmin(slope[n_start : i_best + 1])]   # n_start: first 10% skipped
    max_lr  = lr[i_best] / margin
    ```

    Args:
        lrs: 1-D array of increasing learning rates.
        values: 1-D array of the smoothed monitored quantity.
        higher_is_better: Bool. True for accuracy-like quantities.
        margin: Float > 1. Divisor of the LR at the best point.
        min_improvement: Float. Smallest relative gain that counts as clear.

    Returns:
        A `Suggestion`.

    Raises:
        RangeTestInconclusive: fewer than 5 points, no clear improvement, or a
            steepest point within `margin` of the best one.
    """
    lrs, v = _prepare(lrs, values, higher_is_better=higher_is_better, method="steepest", min_points=5)
    _, i_best, _ = _gain(v, method="steepest", min_improvement=min_improvement, higher_is_better=higher_is_better)
    slope = np.gradient(v, np.log(lrs))
    n_start = max(1, len(v) // 10)  # the first 10% (a noisy start) do not count
    i_steep = n_start + int(np.argmin(slope[n_start:i_best + 1]))
    base_lr, max_lr = float(lrs[i_steep]), float(lrs[i_best] / margin)
    if base_lr >= max_lr:
        raise RangeTestInconclusive(
            f"steepest: the steepest descent (lr={base_lr:.3g}) is within a factor {margin:g} of the best point "
            f"(lr={lrs[i_best]:.3g}); use another method or a finer sweep"
        )
    return Suggestion(base_lr, max_lr, "steepest",
                      f"steepest descent per log LR; best at lr={lrs[i_best]:.3g} divided by {margin:g}")


def valley(lrs: ArrayLike, values: ArrayLike, *, higher_is_better: bool = False, div: float = 5.0,
           min_improvement: float = 0.05) -> Suggestion:
    """fastai's default: a point part-way down the longest valley, as `max_lr`.

    The longest valley is the longest strictly decreasing subsequence of the
    curve; as in fastai, `max_lr` sits half-way along it (a third plus a sixth of
    its length after its start) and `base_lr = max_lr / div` (Smith's rule of
    thumb of a cycle 4 to 6 times narrower than its top; default 5).

    ```python
    end = first point where the longest decreasing subsequence ends; length = its length
    start = end - length;  sections = (end - start) / 3
    max_lr = lr[start + int(sections) + int(sections / 2)];  base_lr = max_lr / div
    ```

    Args:
        lrs: 1-D array of increasing learning rates.
        values: 1-D array of the smoothed monitored quantity.
        higher_is_better: Bool. True for accuracy-like quantities.
        div: Float > 1. Ratio of `max_lr` to `base_lr`.
        min_improvement: Float. Smallest relative gain that counts as clear.

    Returns:
        A `Suggestion`.

    Raises:
        RangeTestInconclusive: fewer than 5 points, no clear improvement, or a
            valley shorter than 3 points or shallower than `min_improvement`.
    """
    lrs, v = _prepare(lrs, values, higher_is_better=higher_is_better, method="valley", min_points=5)
    _gain(v, method="valley", min_improvement=min_improvement, higher_is_better=higher_is_better)
    lengths = _decreasing_lengths(v)
    end = int(np.argmax(lengths))
    start = end - int(lengths[end])
    sections = (end - start) / 3
    idx = min(max(start + int(sections) + int(sections / 2), 0), end)
    first = max(start, 0)
    depth = v[first] - v[end]
    scale = max(abs(v[first]), abs(v[end]), 1e-12)
    if lengths[end] < 3 or depth <= min_improvement * scale:
        raise RangeTestInconclusive(
            f"valley: the longest valley ({int(lengths[end])} points, {depth / scale:.1%} deep) is too short "
            "or too shallow to read"
        )
    max_lr = float(lrs[idx])
    return Suggestion(max_lr / div, max_lr, "valley",
                      f"half-way down the longest valley (lr={lrs[first]:.3g} to {lrs[end]:.3g}); base = max / {div:g}")


def min_div(lrs: ArrayLike, values: ArrayLike, *, higher_is_better: bool = False, div: float = 10.0,
            base_div: float = 5.0, min_improvement: float = 0.05) -> Suggestion:
    """The LR of the best point divided by 10 as `max_lr`, and `base_lr = max_lr / 5`.

    The common rule of thumb: the best point is already too hot to train at,
    a tenth of it is safe, and a cycle 4 to 6 times narrower than its top
    (Smith) gives `base_lr`.

    ```python
    max_lr = lr[argmin(value)] / div;  base_lr = max_lr / base_div
    ```

    Args:
        lrs: 1-D array of increasing learning rates.
        values: 1-D array of the smoothed monitored quantity.
        higher_is_better: Bool. True for accuracy-like quantities.
        div: Float > 1. Divisor of the LR at the best point.
        base_div: Float > 1. Ratio of `max_lr` to `base_lr`.
        min_improvement: Float. Smallest relative gain that counts as clear.

    Returns:
        A `Suggestion`.

    Raises:
        RangeTestInconclusive: fewer than 5 points or no clear improvement.
    """
    lrs, v = _prepare(lrs, values, higher_is_better=higher_is_better, method="min_div", min_points=5)
    _, i_best, _ = _gain(v, method="min_div", min_improvement=min_improvement, higher_is_better=higher_is_better)
    max_lr = float(lrs[i_best] / div)
    return Suggestion(max_lr / base_div, max_lr, "min_div",
                      f"best at lr={lrs[i_best]:.3g} divided by {div:g}; base = max / {base_div:g}")


SUGGESTION_METHODS = {
    "regime": regime,
    "steepest": steepest,
    "valley": valley,
    "min_div": min_div,
}


def check_method(method: str) -> None:
    """Raises a ValueError listing the valid names when `method` is unknown."""
    check_choice("method", method, tuple(SUGGESTION_METHODS))


def suggest(lrs: ArrayLike, values: ArrayLike, *, method: str = "regime", higher_is_better: bool = False) -> Suggestion:
    """Bounds from a smoothed, divergence-cut curve with the named method.

    Args:
        lrs: 1-D array of increasing learning rates.
        values: 1-D array of the smoothed monitored quantity.
        method: String. A key of `SUGGESTION_METHODS`.
        higher_is_better: Bool. True for accuracy-like quantities.

    Returns:
        A `Suggestion`.
    """
    check_method(method)
    return SUGGESTION_METHODS[method](lrs, values, higher_is_better=higher_is_better)
