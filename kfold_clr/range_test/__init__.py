"""LR range test: sweep the learning rate, record the curve, read the bounds.

- `sweep`: `LRSweep`, the learning-rate schedule of the test.
- `smoothing`: pure smoothing functions (bias-corrected EMA, window means).
- `suggest`: pure suggestion methods and their registry `SUGGESTION_METHODS`.
- `runner`: `lr_range_test`, which trains, records and restores the model.
- `result`: `RangeTestResult`, the history with suggestions, CSV, plot and YAML snippet.
"""

from kfold_clr.range_test.result import RangeTestResult
from kfold_clr.range_test.runner import lr_range_test
from kfold_clr.range_test.smoothing import ema, smooth_curve, window_average
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
from kfold_clr.range_test.sweep import LRSweep, sweep_values

__all__ = [
    "lr_range_test",
    "RangeTestResult",
    "LRSweep",
    "sweep_values",
    "Suggestion",
    "RangeTestInconclusive",
    "SUGGESTION_METHODS",
    "suggest",
    "regime",
    "steepest",
    "valley",
    "min_div",
    "is_higher_better",
    "ema",
    "window_average",
    "smooth_curve",
]
