"""Statistics, tables and verdicts computed from a saved results directory.

`stats` holds pure functions on arrays (corrected resampled t-test, Bayesian
correlated t-test, Holm, Wilcoxon); `tables` turns ``folds.csv`` rows into the
summary and comparison tables (with `power`: the smallest difference the splits detect and how
many splits would detect the observed one); `costs` adds what each strategy cost (updates and
seconds on training, range tests and tuning) to the summary; `verdicts` writes one
plain-language line per comparison; `answers` finds the comparisons that answer
each practitioner's question from the strategies' settings.
"""

from kfold_clr.analysis.stats import (
    BayesianTestResult,
    CorrectedTTestResult,
    bayesian_correlated_t_test,
    corrected_resampled_t_test,
    higher_is_better,
    holm,
    t_interval,
    wilcoxon_p,
)
from kfold_clr.analysis.tables import comparison_table, summary_table
from kfold_clr.analysis.verdicts import classify, verdict_line

__all__ = [
    "BayesianTestResult",
    "CorrectedTTestResult",
    "bayesian_correlated_t_test",
    "classify",
    "comparison_table",
    "corrected_resampled_t_test",
    "higher_is_better",
    "holm",
    "summary_table",
    "t_interval",
    "verdict_line",
    "wilcoxon_p",
]
