"""How many splits would settle a comparison: the power of the corrected resampled t-test.

With n paired splits, s^2 the variance of the paired differences and n_val/n_train the
validation / training ratio, the corrected t-test (`stats.corrected_resampled_t_test`,
two-sided, alpha = 0.05) detects a true mean difference of at least

```
mde(n) = (t(1 - alpha/2, n - 1) + t(power, n - 1)) * sqrt((1/n + n_val/n_train) * s^2)
```

with probability `power` (0.80): the minimum detectable effect. More repeats of k folds
raise n, but the corrected variance never falls below the floor n_val/n_train * s^2 (the
folds of a repeat share their training rows), so a difference below about
2.8 * sqrt(n_val/n_train * s^2) cannot be resolved by repeats alone: more data, or
another k, would help. `splits_needed` is the fewest whole repeats of k folds (as a
number of splits, k * r) at which mde falls to a target (the observed |mean difference|,
or the rope where the pair looks equivalent), up to `MAX_REPEATS`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as _scipy_stats

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

ALPHA = 0.05
POWER = 0.80
MAX_REPEATS = 100
"""Most repeats of k folds `splits_needed` considers; beyond it, repeats are no answer."""


def minimum_detectable_difference(variance: ArrayLike, *, n: ArrayLike, test_train_ratio: float, alpha: float = ALPHA,
                                  power: float = POWER) -> float | np.ndarray:
    """The smallest true mean difference the corrected t-test detects with `power` at `alpha`.

    Args:
        variance: float or array. s^2, the sample variance of the paired differences.
        n: int or array. Number of paired splits (>= 2).
        test_train_ratio: float. n_val / n_train of a split.
        alpha: float. Two-sided significance level.
        power: float. Probability of detecting a difference of that size.

    Returns:
        float or array; NaN where n < 2 or the variance is not finite.

    Example:

    >>> round(minimum_detectable_difference(1e-4, n=15, test_train_ratio=0.25), 4)
    0.017
    """
    n = np.asarray(n, dtype=float)
    df = np.where(n >= 2, n - 1, np.nan)
    quantiles = _scipy_stats.t.ppf(1 - alpha / 2, df) + _scipy_stats.t.ppf(power, df)
    result = quantiles * np.sqrt((1.0 / n + test_train_ratio) * np.asarray(variance, dtype=float))
    return float(result) if result.ndim == 0 else result


def variance_floor(variance: float, *, test_train_ratio: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The mde that no number of repeats goes below: normal quantiles on the floor n_val/n_train * s^2."""
    z = _scipy_stats.norm.ppf(1 - alpha / 2) + _scipy_stats.norm.ppf(power)
    return float(z * math.sqrt(test_train_ratio * variance))


def splits_needed(variance: float, *, target: float, test_train_ratio: float, k: int, max_repeats: int = MAX_REPEATS,
                  alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest splits, a whole number of repeats of `k` folds, at which mde falls to `target`.

    Args:
        variance: float. s^2 of the observed paired differences.
        target: float. The difference to detect (|mean difference|, or the rope).
        test_train_ratio: float. n_val / n_train.
        k: int. Folds per repeat.
        max_repeats: int. Most repeats considered.

    Returns:
        int (k * r) or None: the target is 0 or not finite, or no r up to `max_repeats`
        gets there (the variance floor).

    Example:

    >>> splits_needed(1e-4, target=0.016, test_train_ratio=0.25, k=5)
    25
    >>> splits_needed(1e-4, target=0.01, test_train_ratio=0.25, k=5) is None  # below the floor 0.014
    True
    """
    if not (math.isfinite(target) and target > 0 and math.isfinite(variance) and math.isfinite(test_train_ratio)):
        return None
    n = k * np.arange(1, max_repeats + 1)
    mde = minimum_detectable_difference(variance, n=n, test_train_ratio=test_train_ratio, alpha=alpha, power=power)
    reached = np.flatnonzero(mde <= target)
    return int(n[reached[0]]) if reached.size else None
