"""Statistics for comparing strategies over shared cross-validation splits.

Pure functions on numpy arrays. Scores from k-fold cross-validation are not
independent: every pair of training sets shares most of its samples, so the
naive t-test on per-split differences is far too confident. The corrected
resampled t-test (Nadeau & Bengio, 2003) and the Bayesian correlated t-test
(Benavoli et al., 2017) inflate the variance of the mean difference by the
training/validation overlap:

```
d_i   = score_A(split i) - score_B(split i),   i = 1..n   (n = k * r splits)
s^2   = sample variance of d (ddof=1)
scale = sqrt((1/n + n_val/n_train) * s^2)
t     = mean(d) / scale,  with n - 1 degrees of freedom
```

With fewer than two splits the functions return NaN together with a
``reason`` string instead of a number. When every difference is the same (zero
variance, e.g. two strategies that are identical by construction) the posterior
degenerates to a point mass at that difference, as in the reference
implementation of the Bayesian test (baycomp): identical scores are practically
equivalent with probability 1 and their t-test says p = 1; a constant non-zero
difference gets t = +-inf and p = 0 (the limit), with a note saying so.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as _scipy_stats

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

# The smallest two-sided exact Wilcoxon p with m non-zero differences is 2 / 2**m,
# which is above 0.05 for m <= 5: with fewer differences the test can never reject.
MIN_WILCOXON_SPLITS = 6

# Differences that agree to this relative precision are equal up to rounding.
_EQUAL_TOLERANCE = 1e-12

_LOWER_IS_BETTER = (
    "loss",
    "mse",
    "mae",
    "rmse",
    "mape",
    "msle",
    "error",
    "crossentropy",
    "hinge",
    "logcosh",
    "log_cosh",
    "poisson",
    "kl_divergence",
    "kld",
    "huber",
    "deviance",
)
_METRIC_PREFIXES = ("snapshot_val_", "val_", "train_", "holdout_")


@dataclasses.dataclass(frozen=True)
class CorrectedTTestResult:
    """Outcome of `corrected_resampled_t_test`.

    Args:
        n: int. Number of paired splits.
        mean_diff: float. Mean of the differences A - B.
        t: float. Corrected t statistic (NaN when undefined).
        p: float. Two-sided p-value (NaN when undefined).
        ci_low: float. Lower end of the corrected confidence interval of the mean difference.
        ci_high: float. Upper end of that interval.
        df: int. Degrees of freedom, n - 1.
        reason: str. Why the numbers are NaN, or how they were obtained when
            every difference is equal (`IDENTICAL`, `CONSTANT`); empty otherwise.
    """

    n: int
    mean_diff: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    df: int
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class BayesianTestResult:
    """Outcome of `bayesian_correlated_t_test`.

    The three probabilities sum to 1 when defined. "A better" accounts for the
    direction of the metric (``higher_is_better``).

    Args:
        prob_a_better: float. Posterior probability that A is better by more than the rope.
        prob_equivalent: float. Posterior probability that the difference lies within the rope.
        prob_b_better: float. Posterior probability that B is better by more than the rope.
        reason: str. Why the probabilities are NaN, or `IDENTICAL` / `CONSTANT`
            for the point-mass posterior of equal differences; empty otherwise.
    """

    prob_a_better: float
    prob_equivalent: float
    prob_b_better: float
    reason: str = ""


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"Argument `{name}` must be one-dimensional. Received: shape={array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"Argument `{name}` must contain only finite values; drop diverged or failed "
            f"splits first. Received: {name}={array.tolist()}"
        )
    return array


def _check_sizes(n_train: float, n_val: float) -> None:
    if not n_train > 0:
        raise ValueError(f"Argument `n_train` must be > 0. Received: n_train={n_train}")
    if not n_val > 0:
        raise ValueError(f"Argument `n_val` must be > 0. Received: n_val={n_val}")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(
            f"Argument `confidence` must be in (0, 1). Received: confidence={confidence}"
        )


IDENTICAL = "all differences are zero: identical scores on every split"
CONSTANT = "all differences are equal (zero variance): the posterior is a point mass at that difference"


def _undefined_reason(diffs: np.ndarray) -> str:
    """Why a test on ``diffs`` is undefined, or "" when it is defined."""
    n = diffs.size
    if n < 2:
        return f"too few splits for a test (n = {n}; needs at least 2)"
    return ""


def _constant_difference(diffs: np.ndarray) -> float | None:
    """The common value when every difference is the same (0.0 for identical scores), else None.

    Differences that agree to a relative 1e-12 count as equal: their sample
    variance is rounding noise, and dividing by it would print a huge t.
    """
    size = max(1.0, float(np.max(np.abs(diffs))))
    if np.ptp(diffs) > _EQUAL_TOLERANCE * size:
        return None
    mean = float(np.mean(diffs))
    return 0.0 if abs(mean) <= _EQUAL_TOLERANCE * size else mean


def corrected_variance(diffs: ArrayLike, *, n_train: float, n_val: float) -> float:
    """Nadeau-Bengio corrected variance of the mean of per-split differences.

    ```
    var = (1/n + n_val/n_train) * s^2
    ```

    Args:
        diffs: array-like of float. Differences A - B, one per shared split.
        n_train: float. Training-set size of a split (or the mean over splits).
        n_val: float. Validation-set size of a split (or the mean over splits).

    Returns:
        float. The corrected variance; NaN when there are fewer than two differences.
    """
    diffs = _as_1d(diffs, "diffs")
    _check_sizes(n_train, n_val)
    n = diffs.size
    if n < 2:
        return math.nan
    return float((1.0 / n + n_val / n_train) * np.var(diffs, ddof=1))


def t_interval(scores: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of per-split scores.

    This is the usual interval, which treats the splits as independent; with
    repeated cross-validation it is narrower than it should be. Use it to
    describe one strategy; compare strategies with `corrected_resampled_t_test`.

    ```
    mean +- t_{(1+confidence)/2, n-1} * std(scores, ddof=1) / sqrt(n)
    ```

    Args:
        scores: array-like of float. One score per split.
        confidence: float. Coverage of the interval, in (0, 1).

    Returns:
        tuple (low, high) of float; (NaN, NaN) when there are fewer than two scores.

    Example:

    >>> t_interval([0.8, 0.9, 1.0])
    (0.6515..., 1.1484...)
    """
    scores = _as_1d(scores, "scores")
    _check_confidence(confidence)
    n = scores.size
    if n < 2:
        return (math.nan, math.nan)
    mean = float(np.mean(scores))
    half = _scipy_stats.t.ppf((1.0 + confidence) / 2.0, n - 1) * np.std(scores, ddof=1) / math.sqrt(n)
    return (mean - float(half), mean + float(half))


def corrected_resampled_t_test(diffs: ArrayLike, *, n_train: float, n_val: float,
                               confidence: float = 0.95) -> CorrectedTTestResult:
    """Corrected resampled t-test of paired per-split differences (Nadeau & Bengio).

    The same test as scikit-learn's "Statistical comparison of models using
    grid search" example, plus the corrected confidence interval of the mean
    difference.

    ```
    t  = mean(d) / sqrt((1/n + n_val/n_train) * s^2),   df = n - 1
    p  = 2 * (1 - T_{n-1}(|t|))
    CI = mean(d) +- T^{-1}_{n-1}((1+confidence)/2) * sqrt((1/n + n_val/n_train) * s^2)
    ```

    Args:
        diffs: array-like of float. Differences score_A - score_B on shared splits.
        n_train: float. Training-set size of a split (or the mean over splits).
        n_val: float. Validation-set size of a split (or the mean over splits).
        confidence: float. Coverage of the interval, in (0, 1).

    Returns:
        A `CorrectedTTestResult`. With fewer than two splits the statistic,
        p-value and interval are NaN and ``reason`` says why. With zero variance
        the limits: identical scores give t = 0, p = 1 and the interval [0, 0]; a
        constant difference d gives t = +-inf, p = 0 and [d, d]; ``reason`` notes it.

    Example:

    >>> result = corrected_resampled_t_test([0.01, 0.02, 0.00, 0.03, 0.01], n_train=80, n_val=20)
    >>> round(result.p, 3)
    0.141
    """
    diffs = _as_1d(diffs, "diffs")
    _check_sizes(n_train, n_val)
    _check_confidence(confidence)
    n = diffs.size
    mean_diff = float(np.mean(diffs)) if n else math.nan
    reason = _undefined_reason(diffs)
    if reason:
        return CorrectedTTestResult(n, mean_diff, math.nan, math.nan, math.nan, math.nan,
                                    max(n - 1, 0), reason)
    constant = _constant_difference(diffs)
    if constant == 0.0:
        return CorrectedTTestResult(n, 0.0, 0.0, 1.0, 0.0, 0.0, n - 1, IDENTICAL)
    if constant is not None:
        return CorrectedTTestResult(n, constant, math.copysign(math.inf, constant), 0.0, constant, constant,
                                    n - 1, CONSTANT)
    scale = math.sqrt(corrected_variance(diffs, n_train=n_train, n_val=n_val))
    t = mean_diff / scale
    p = float(2.0 * _scipy_stats.t.sf(abs(t), n - 1))
    half = float(_scipy_stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * scale
    return CorrectedTTestResult(n, mean_diff, float(t), p, mean_diff - half, mean_diff + half, n - 1)


def bayesian_correlated_t_test(diffs: ArrayLike, *, n_train: float, n_val: float, rope: float = 0.01,
                               higher_is_better: bool = True) -> BayesianTestResult:
    """Bayesian correlated t-test of paired per-split differences (Benavoli et al. 2017).

    The posterior of the mean difference is a Student-t with ``n - 1`` degrees
    of freedom, location ``mean(d)`` and the corrected scale. Its mass is split
    into three regions around a region of practical equivalence (rope):

    ```
    scale           = sqrt((1/n + n_val/n_train) * s^2)
    P(left)         = T(-rope)
    P(equivalent)   = T(rope) - T(-rope)
    P(right)        = 1 - T(rope)
    ```

    With ``higher_is_better`` "A better" is the right region (d = A - B > rope);
    otherwise (losses, errors) it is the left region. With zero variance the
    posterior is a point mass at the common difference d (baycomp's degenerate
    case): P(left) = [d < -rope], P(equivalent) = [-rope <= d <= rope],
    P(right) = [d > rope].

    Args:
        diffs: array-like of float. Differences score_A - score_B on shared splits.
        n_train: float. Training-set size of a split (or the mean over splits).
        n_val: float. Validation-set size of a split (or the mean over splits).
        rope: float. Half-width of the region of practical equivalence, >= 0, in
            the metric's units (0.01 accuracy is one percentage point).
        higher_is_better: bool. Direction of the metric.

    Returns:
        A `BayesianTestResult`; NaN probabilities and a ``reason`` when the
        posterior is undefined (fewer than two splits).
    """
    diffs = _as_1d(diffs, "diffs")
    _check_sizes(n_train, n_val)
    if not rope >= 0:
        raise ValueError(f"Argument `rope` must be >= 0. Received: rope={rope}")
    reason = _undefined_reason(diffs)
    if reason:
        return BayesianTestResult(math.nan, math.nan, math.nan, reason)
    n = diffs.size
    constant = _constant_difference(diffs)
    if constant is not None:
        left, right = float(constant < -rope), float(constant > rope)
        inside = 1.0 - left - right
        reason = IDENTICAL if constant == 0.0 else CONSTANT
    else:
        posterior = _scipy_stats.t(df=n - 1, loc=float(np.mean(diffs)),
                                   scale=math.sqrt(corrected_variance(diffs, n_train=n_train, n_val=n_val)))
        left = float(posterior.cdf(-rope))
        right = float(posterior.sf(rope))
        inside = max(0.0, 1.0 - left - right)
    if higher_is_better:
        return BayesianTestResult(right, inside, left, reason)
    return BayesianTestResult(left, inside, right, reason)


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values.

    Sort the m defined p-values ascending, multiply the i-th (0-based) by
    ``m - i``, take the running maximum and cap at 1; NaN entries are passed
    through and do not count towards m.

    ```
    p_adj_(i) = min(1, max_{j <= i} (m - j) * p_(j))
    ```

    Args:
        p_values: array-like of float. Raw p-values of one family of tests.

    Returns:
        numpy array of the adjusted p-values, in the input order.

    Example:

    >>> holm([0.01, 0.04, 0.03, 0.005]).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"Argument `p_values` must be one-dimensional. Received: shape={p.shape}")
    defined = ~np.isnan(p)
    if np.any((p[defined] < 0) | (p[defined] > 1)):
        raise ValueError(f"Argument `p_values` must lie in [0, 1]. Received: p_values={p.tolist()}")
    adjusted = np.full_like(p, np.nan)
    values = p[defined]
    m = values.size
    if m == 0:
        return adjusted
    order = np.argsort(values, kind="stable")
    scaled = np.maximum.accumulate((m - np.arange(m)) * values[order])
    result = np.empty(m)
    result[order] = np.minimum(scaled, 1.0)
    adjusted[defined] = result
    return adjusted


def wilcoxon_p(diffs: ArrayLike) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (descriptive only).

    The splits are not independent, so this p-value is too small in the same
    way as the naive t-test's; it is reported as a description of how often
    and how strongly A wins, not as a test.

    Args:
        diffs: array-like of float. Differences score_A - score_B on shared splits.

    Returns:
        tuple (p, reason): p is NaN and reason says why when fewer than
        `MIN_WILCOXON_SPLITS` differences are non-zero (the test could never
        reject at 0.05) or all differences are zero.
    """
    diffs = _as_1d(diffs, "diffs")
    nonzero = diffs[diffs != 0.0]
    if diffs.size and nonzero.size == 0:
        return math.nan, "all differences are zero; Wilcoxon is undefined"
    if nonzero.size < MIN_WILCOXON_SPLITS:
        return math.nan, (f"too few non-zero differences for Wilcoxon "
                          f"(n = {nonzero.size}; needs at least {MIN_WILCOXON_SPLITS})")
    return float(_scipy_stats.wilcoxon(nonzero).pvalue), ""


def base_metric_name(metric: str) -> str:
    """The metric name without a ``val_``, ``train_``, ``snapshot_val_`` or ``holdout_`` prefix."""
    for prefix in _METRIC_PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` are better.

    Losses and errors (loss, mse, mae, rmse, crossentropy, hinge, ...) are
    lower-is-better; everything else (accuracy, auc, precision, r2, ...) is
    higher-is-better. ``val_``/``train_``/``snapshot_val_``/``holdout_`` prefixes are ignored.

    Args:
        metric: str. Metric name as in the results columns.

    Returns:
        bool.

    Example:

    >>> higher_is_better("val_accuracy"), higher_is_better("mae")
    (True, False)
    """
    name = base_metric_name(str(metric)).lower()
    return not any(token in name for token in _LOWER_IS_BETTER)
