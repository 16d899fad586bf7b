"""Plain-language verdicts for rows of the comparison table.

A verdict reads the numbers a person would otherwise have to combine by hand:
the mean difference with its corrected interval, the (Holm-adjusted) p-value
and the most probable region of the Bayesian posterior. Accuracy-like metrics
(fractions in [0, 1]) are written in percentage points, others in their own units.

Example:

```
clr_reset vs clr_continue: +0.4 pp accuracy (95% CI -0.6 to +1.4); no evidence of a
difference (p = 0.41); 71% probability of practical equivalence (within 1 pp)
```
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from kfold_clr.analysis.stats import CONSTANT, IDENTICAL, base_metric_name, higher_is_better

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import TypeAlias

    import pandas as pd

    ComparisonRow: TypeAlias = Mapping[str, Any] | pd.Series  # a `tables.comparison_table` row: dict or Series

ALPHA = 0.05
"""Significance level of the verdicts (applied to Holm-adjusted p-values)."""

MIN_SPLITS = 3
"""Fewest paired splits for which the comparison table reports a test."""

EQUIVALENCE_PROBABILITY = 0.95
"""Posterior mass inside the rope above which two strategies are called equivalent."""

_FRACTION_TOKENS = ("accuracy", "acc", "auc", "precision", "recall", "f1", "iou")

TOO_FEW_SPLITS = "too few splits"
UNDETERMINED = "undetermined"
NO_EVIDENCE = "no evidence of a difference"
EQUIVALENT = "practically equivalent"


DEFAULT_FRACTION_ROPE = 0.01
"""The rope of a fraction metric (accuracy, auc, ...) that `compare.rope` does not name: one point."""


def metric_ropes(rope: float | dict[str, float] | None, metrics: Sequence[str],
                 primary: str) -> dict[str, float | None]:
    """The rope of each metric, from `compare.rope`.

    A number is the primary metric's rope; a mapping gives the ropes of the metrics it
    names; None names none. Any other metric gets a default: `DEFAULT_FRACTION_ROPE` for a fraction in
    [0, 1] (accuracy, auc, precision, ...), and None for a metric in its own units (loss,
    mae, mse, ...), whose scale only the user knows: no equivalence band, so no
    "practically equivalent" verdict unless the scores are identical.

    Args:
        rope: float, mapping of str to float, or None. `compare.rope`.
        metrics: list of str. The metrics compared.
        primary: str. The primary metric.

    Returns:
        dict metric -> float or None.

    Example:

    >>> metric_ropes(0.005, ["accuracy", "loss", "auc"], "accuracy")
    {'accuracy': 0.005, 'loss': None, 'auc': 0.01}
    """
    given = dict(rope) if isinstance(rope, dict) else {} if rope is None else {primary: float(rope)}
    return {metric: given[metric] if metric in given
            else DEFAULT_FRACTION_ROPE if is_fraction_metric(metric) else None for metric in metrics}


def is_fraction_metric(metric: str) -> bool:
    """Whether ``metric`` is a fraction in [0, 1] best written in percentage points.

    Args:
        metric: str. Metric name, with or without a ``val_`` prefix.

    Returns:
        bool. True for accuracy, auc, precision, recall, f1, iou and their variants.
    """
    name = base_metric_name(str(metric)).lower()
    return any(token in name.split("_") or name.endswith(token) for token in _FRACTION_TOKENS)


def format_difference(value: float | None, metric: str, *, signed: bool = True, with_unit: bool = True) -> str:
    """A difference of ``metric`` in readable units ("+0.4 pp accuracy", "-0.0123 loss").

    Args:
        value: float. The difference (A - B) in the metric's own units.
        metric: str. Metric name; fractions are scaled by 100 and written in pp.
        signed: bool. Always write the sign.
        with_unit: bool. Append the unit and metric name.

    Returns:
        str. "n/a" when ``value`` is NaN.
    """
    if not _defined(value):
        return "n/a"
    sign = "+" if signed else ""
    name = base_metric_name(str(metric))
    if is_fraction_metric(metric):
        text = f"{100.0 * value:{sign}.1f}"
        return f"{text} pp {name}" if with_unit else text
    text = f"{value:{sign}.3g}"
    return f"{text} {name}" if with_unit else text


def format_p(p: float | None) -> str:
    """A p-value for reading: "p = 0.41", "p = 0.042", "p < 0.001"."""
    if not _defined(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    if p < 0.1:
        return f"p = {p:.3f}"
    return f"p = {p:.2f}"


def format_probability(probability: float | None) -> str:
    """A probability as a whole percentage, never rounding to a certain 0% or 100%."""
    if not _defined(probability):
        return "n/a"
    if probability > 0.995:
        return ">99%"
    if probability < 0.005:
        return "<1%"
    return f"{probability:.0%}"


def _winner(row: ComparisonRow) -> str:
    diff = row["mean_diff"]
    a_higher = diff > 0
    return row["a"] if a_higher == higher_is_better(row["metric"]) else row["b"]


def _defined(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def classify(row: ComparisonRow) -> str:
    """Short verdict label of one comparison row.

    One of ``"too few splits"``, ``"undetermined"`` (the test is undefined),
    ``"<name> better"`` (Holm-adjusted p < `ALPHA`),
    ``"practically equivalent"`` (posterior mass inside the rope >=
    `EQUIVALENCE_PROBABILITY`) or ``"no evidence of a difference"``.

    Args:
        row: mapping. A row of `comparison_table` with at least a, b, metric, n,
            mean_diff, p_corrected, p_holm and prob_equivalent.

    Returns:
        str.
    """
    if row["n"] < MIN_SPLITS:
        return TOO_FEW_SPLITS
    p = row["p_holm"] if _defined(row.get("p_holm")) else row["p_corrected"]
    if not _defined(p):
        return UNDETERMINED
    if p < ALPHA:
        return f"{_winner(row)} better"
    if _defined(row.get("prob_equivalent")) and row["prob_equivalent"] >= EQUIVALENCE_PROBABILITY:
        return EQUIVALENT
    return NO_EVIDENCE


def _bayesian_phrase(row: ComparisonRow) -> str:
    """The most probable region of the posterior in words ("71% probability of practical equivalence
    (within 1.0 pp accuracy)"); "" when the probabilities are undefined."""
    rope = row.get("rope")
    keys = ("prob_a_better", "prob_equivalent", "prob_b_better") if _defined(rope) else ("prob_a_better",
                                                                                         "prob_b_better")
    probs = {key: row.get(key) for key in keys}
    if not all(_defined(value) for value in probs.values()):
        return ""
    key = max(probs, key=probs.get)
    share = format_probability(probs[key])
    name = row["a"] if key == "prob_a_better" else row["b"]
    if not _defined(rope):  # no equivalence band: which side is better at all
        return f"{share} probability that {name} is better (no rope for {row['metric']})"
    rope_text = format_difference(rope, row["metric"], signed=False)
    if key == "prob_equivalent":
        return f"{share} probability of practical equivalence (within {rope_text})"
    return f"{share} probability that {name} is better by more than {rope_text}"


def verdict_line(row: ComparisonRow) -> str:
    """One plain-language line summarizing a comparison row.

    Args:
        row: mapping. A row of `comparison_table`.

    Returns:
        str, e.g. "clr_reset vs clr_continue: +0.4 pp accuracy (95% CI -0.6 to
        +1.4); no evidence of a difference (p = 0.41); 71% probability of
        practical equivalence (within 1.0 pp accuracy)".

    Example:

    >>> verdict_line({"a": "clr", "b": "constant", "metric": "accuracy", "n": 2,
    ...               "mean_diff": 0.004, "note": ""})
    'clr vs constant: +0.4 pp accuracy over 2 splits; too few splits for a test (n = 2; needs at least 3)'
    """
    metric = row["metric"]
    head = f"{row['a']} vs {row['b']}: {format_difference(row['mean_diff'], metric)}"
    label = row.get("verdict") or classify(row)
    if label == TOO_FEW_SPLITS:
        return (f"{head} over {int(row['n'])} split{'s' if row['n'] != 1 else ''}; too few splits "
                f"for a test (n = {int(row['n'])}; needs at least {MIN_SPLITS})")
    if label == UNDETERMINED:
        reason = str(row.get("note") or "the test is undefined").split("; ")[0]
        return f"{head} over {int(row['n'])} splits; no test: {reason}"
    note = str(row.get("note") or "")
    if note.startswith(IDENTICAL):
        return f"{head} over {int(row['n'])} splits; identical scores on every split: {label} (p = 1)"
    if note.startswith(CONSTANT):
        bayes = _bayesian_phrase(row)
        return (f"{head} on every one of {int(row['n'])} splits (zero variance); {label} "
                f"({format_p(row['p_corrected'])}, a point-mass posterior)" + (f"; {bayes}" if bayes else ""))
    low = format_difference(row.get("ci95_low", math.nan), metric, with_unit=False)
    high = format_difference(row.get("ci95_high", math.nan), metric, with_unit=False)
    parts = [f"{head} (95% CI {low} to {high})"]
    p_text = format_p(row["p_corrected"])
    p_holm = row.get("p_holm")
    if _defined(p_holm) and not math.isclose(p_holm, row["p_corrected"]):
        p_text += f", Holm-adjusted {format_p(p_holm)}"
    if label in (NO_EVIDENCE, EQUIVALENT):
        raw_significant = _defined(row["p_corrected"]) and row["p_corrected"] < ALPHA
        after = " after Holm correction" if raw_significant else ""
        parts.append(f"no evidence of a difference{after} ({p_text})")
    else:
        parts.append(f"{label.removesuffix(' better')} is better ({p_text})")
    bayes = _bayesian_phrase(row)
    if bayes:
        parts.append(bayes)
    return "; ".join(parts)
