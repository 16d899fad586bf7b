"""Summary and comparison tables computed from the per-fold results (``folds.csv``).

Only folds whose status is ``"ok"`` (and whose score is finite) enter means and
tests; diverged and failed folds are counted instead of averaged. Comparisons
are paired on ``(repeat, fold)``: a split enters a pair only when both sides
are ok on it.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import kfold_clr.analysis.costs as costs
import kfold_clr.analysis.power as power
import kfold_clr.analysis.stats as stats
import kfold_clr.analysis.verdicts as verdicts
from kfold_clr.analysis.columns import as_bool, strategy_order

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from kfold_clr.analysis.costs import StrategySpec
    from kfold_clr.analysis.verdicts import ComparisonRow

OK = "ok"
DIVERGED = "diverged"
FAILED = "failed"
SNAPSHOT_SUFFIX = "[snapshots]"
KEY = ["repeat", "fold"]

SUMMARY_COLUMNS = [
    "strategy", "metric", "mean", "std", "ci95_low", "ci95_high", "n", "n_diverged", "n_failed",
    "train_mean", "gap", "fit_seconds_mean", "leaky", "optimistic", "flags", *costs.COST_COLUMNS,
]
COMPARISON_COLUMNS = [
    "a", "b", "metric", "n", "mean_diff", "ci95_low", "ci95_high", "t_corrected", "p_corrected",
    "p_holm", "p_wilcoxon", "prob_a_better", "prob_equivalent", "prob_b_better", "rope",
    "mde", "splits_needed", "verdict", "caution", "note",
]
RANGE_TEST_OVERLAP = "shared range test saw validation rows"
EARLY_STOPPING = "early stopping"
EARLY_STOPPING_REASON = "early stopping chose the epoch on the validation fold"
RANGE_TEST_REASON = "the shared range test that chose its LR bounds"
TUNED_ON_VALIDATION = "tuned on its validation fold"
TUNED_ON_VALIDATION_REASON = "its grid point was chosen on its validation fold"
"""The start of the `optimistic_reason` the runner writes for each cause (`caution_flags` reads them)."""


def fold_status(folds_df: pd.DataFrame) -> pd.Series:
    """Status of each fold row: the ``status`` column, or derived from ``diverged``/``error``.

    Args:
        folds_df: DataFrame. Rows of ``folds.csv``.

    Returns:
        Series of str, one of "ok", "diverged", "failed".
    """
    if "status" in folds_df.columns:
        return folds_df["status"].astype("string").str.strip().str.lower().fillna(FAILED).astype(str)
    status = pd.Series(OK, index=folds_df.index, dtype=object)
    if "error" in folds_df.columns:
        has_error = folds_df["error"].astype("string").fillna("").str.strip() != ""
        status[has_error] = FAILED
    if "diverged" in folds_df.columns:
        status[as_bool(folds_df["diverged"])] = DIVERGED
    return status.astype(str)


def _require_columns(folds_df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [column for column in columns if column not in folds_df.columns]
    if missing:
        raise ValueError(
            f"Argument `folds_df` lacks required column(s) {missing}. "
            f"Received columns: {list(folds_df.columns)}"
        )


def _finite(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").astype(float)


def _bool_any(frame: pd.DataFrame, column: str) -> bool:
    return bool(as_bool(frame[column]).any()) if column in frame.columns else False


def caution_flags(frame: pd.DataFrame) -> list[str]:
    """Why a strategy's scores may be optimistic, from its rows: e.g.
    ["leaky (carried weights)", "optimistic (shared range test saw validation rows)"]."""
    flags = []
    if _bool_any(frame, "leaky"):
        flags.append("leaky (carried weights)")
    if _bool_any(frame, "optimistic"):
        rows = frame[as_bool(frame["optimistic"])]
        texts = rows["optimistic_reason"] if "optimistic_reason" in rows else []
        reasons = " ".join(text for text in texts if isinstance(text, str))
        kinds = [kind for kind, found in ((EARLY_STOPPING, EARLY_STOPPING_REASON in reasons or not reasons.strip()),
                                          (RANGE_TEST_OVERLAP, RANGE_TEST_REASON in reasons),
                                          (TUNED_ON_VALIDATION, TUNED_ON_VALIDATION_REASON in reasons)) if found]
        flags.append(f"optimistic ({', '.join(kinds)})")
    return flags


def summary_table(folds_df: pd.DataFrame, metrics: Sequence[str], *, strategies: Sequence[str] | None = None,
                  confidence: float = 0.95, strategy_configs: Mapping[str, StrategySpec] | None = None,
                  range_tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per strategy x metric: validation mean, spread and interval over ok folds, and the cost.

    ``gap`` is the training mean minus the validation mean (over-fitting shows as
    a large gap). ``leaky``/``optimistic`` are True when any of the strategy's
    folds carries that flag, and ``flags`` says why (`caution_flags`). The interval is the plain t-interval over folds
    (`stats.t_interval`), which ignores the overlap of training sets. The cost
    columns (`costs.COST_COLUMNS`: updates and seconds on training, range tests
    and tuning, and their total) are the strategy's, the same on each of its
    metric rows (`costs.cost_table`).

    Args:
        folds_df: DataFrame. Rows of ``folds.csv``; needs strategy, repeat, fold
            and ``val_<metric>`` for each metric.
        metrics: list of str. Metric names without prefix, e.g. ["accuracy", "loss"].
        strategies: list of str or None. Display order; others follow in order of appearance.
        confidence: float. Coverage of the interval.
        strategy_configs: mapping or None. Strategy name -> config, for the range-test
            and tuning costs (`costs.cost_table`).
        range_tests: DataFrame or None. `costs.range_test_costs` of the saved range tests.

    Returns:
        DataFrame with columns `SUMMARY_COLUMNS`.
    """
    _require_columns(folds_df, ["strategy", "repeat", "fold", *[f"val_{m}" for m in metrics]])
    status = fold_status(folds_df)
    spent = costs.cost_table(folds_df, strategies=strategies, strategy_configs=strategy_configs,
                             range_tests=range_tests).set_index("strategy")
    rows = []
    for name in strategy_order(folds_df, strategies):
        own = folds_df["strategy"].astype(str) == name
        frame = folds_df[own]
        ok = frame[(status[own] == OK).to_numpy()]
        n_diverged = int((status[own] == DIVERGED).sum())
        n_failed = int((status[own] == FAILED).sum())
        flags = "; ".join(caution_flags(frame))
        for metric in metrics:
            values = _finite(ok[f"val_{metric}"])
            keep = np.isfinite(values.to_numpy())
            scores = values.to_numpy()[keep]
            kept = ok[keep]
            n = scores.size
            mean = float(np.mean(scores)) if n else math.nan
            std = float(np.std(scores, ddof=1)) if n > 1 else math.nan
            low, high = stats.t_interval(scores, confidence) if n else (math.nan, math.nan)
            train_mean = math.nan
            if f"train_{metric}" in kept.columns:
                train = _finite(kept[f"train_{metric}"]).to_numpy()
                train = train[np.isfinite(train)]
                train_mean = float(np.mean(train)) if train.size else math.nan
            fit = _finite(kept["fit_seconds"]).to_numpy() if "fit_seconds" in kept.columns else np.array([])
            fit = fit[np.isfinite(fit)]
            rows.append({
                "strategy": name,
                "metric": metric,
                "mean": mean,
                "std": std,
                "ci95_low": low,
                "ci95_high": high,
                "n": n,
                "n_diverged": n_diverged,
                "n_failed": n_failed,
                "train_mean": train_mean,
                "gap": train_mean - mean,
                "fit_seconds_mean": float(np.mean(fit)) if fit.size else math.nan,
                "leaky": _bool_any(frame, "leaky"),
                "optimistic": _bool_any(frame, "optimistic"),
                "flags": flags,
                **spent.loc[name].to_dict(),
            })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _side(folds_df: pd.DataFrame, status: pd.Series, strategy: str, column: str) -> pd.DataFrame:
    """(repeat, fold)-indexed frame of one side of a pair: ok rows with a finite score."""
    own = (folds_df["strategy"].astype(str) == strategy).to_numpy()
    frame = folds_df[own & (status == OK).to_numpy()]
    duplicated = frame.duplicated(KEY)
    if duplicated.any():
        first = frame.loc[duplicated, KEY].iloc[0].tolist()
        raise ValueError(
            f"Argument `folds_df` has more than one row for strategy {strategy!r} at "
            f"(repeat, fold) = {tuple(first)}"
        )
    side = pd.DataFrame({
        "repeat": frame["repeat"].to_numpy(),
        "fold": frame["fold"].to_numpy(),
        "score": _finite(frame[column]).to_numpy(),
        "n_train": _finite(frame["n_train"]).to_numpy(),
        "n_val": _finite(frame["n_val"]).to_numpy(),
    })
    return side[np.isfinite(side["score"].to_numpy())]


def paired_differences(folds_df: pd.DataFrame, a: str, b: str, *, column_a: str, column_b: str | None = None,
                       status: pd.Series | None = None) -> dict[str, Any]:
    """Per-split differences A - B over the splits where both are ok.

    Args:
        folds_df: DataFrame. Rows of ``folds.csv``.
        a: str. Strategy of side A.
        b: str. Strategy of side B.
        column_a: str. Score column of side A, e.g. "val_accuracy".
        column_b: str or None. Score column of side B; defaults to ``column_a``.
        status: Series or None. Precomputed `fold_status`.

    Returns:
        dict with ``diffs`` (array), ``test_train_ratio`` (mean n_val/n_train over
        the paired splits), ``n_dropped`` (splits present for either side but
        not both) and ``keys`` (list of (repeat, fold)).
    """
    status = fold_status(folds_df) if status is None else status
    left = _side(folds_df, status, a, column_a)
    right = _side(folds_df, status, b, column_b or column_a)
    paired = left.merge(right, on=KEY, suffixes=("_a", "_b")).sort_values(KEY)
    all_keys = set(map(tuple, folds_df.loc[folds_df["strategy"].astype(str).isin([a, b]), KEY].to_numpy().tolist()))
    ratio = (paired["n_val_a"] / paired["n_train_a"]).to_numpy()
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    return {
        "diffs": (paired["score_a"] - paired["score_b"]).to_numpy(dtype=float),
        "test_train_ratio": float(np.mean(ratio)) if ratio.size else math.nan,
        "n_dropped": len(all_keys) - len(paired),
        "keys": list(map(tuple, paired[KEY].to_numpy().tolist())),
    }


def _pairs(strategies: Sequence[str], reference: str | None,
           pairs: Iterable[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    if pairs is not None:
        return [(a, b) for a, b in pairs if a in strategies and b in strategies]
    if reference is None:
        return list(itertools.combinations(strategies, 2))
    if reference not in strategies:
        raise ValueError(
            f"Argument `reference` must be one of {list(strategies)}. Received: reference={reference!r}"
        )
    return [(name, reference) for name in strategies if name != reference]


def _has_snapshots(folds_df: pd.DataFrame, strategy: str, metric: str) -> bool:
    column = f"snapshot_val_{metric}"
    if column not in folds_df.columns:
        return False
    values = _finite(folds_df.loc[folds_df["strategy"].astype(str) == strategy, column])
    return bool(np.isfinite(values.to_numpy()).any())


def _compare(folds_df: pd.DataFrame, status: pd.Series, metric: str, a_label: str, b_label: str,
             spec: tuple[str, str, str, str], rope: float | None, k: int) -> dict[str, Any]:
    """One comparison row; `rope` None: no equivalence band (probabilities of either side being better only)."""
    a, b, column_a, column_b = spec
    paired = paired_differences(folds_df, a, b, column_a=column_a, column_b=column_b, status=status)
    diffs = paired["diffs"]
    n = int(diffs.size)
    notes = []
    if paired["n_dropped"]:
        notes.append(f"{paired['n_dropped']} split(s) left out: not ok on both sides")
    cautions = [f"{name} {flag}" for name in dict.fromkeys((a, b))
                for flag in caution_flags(folds_df[folds_df["strategy"].astype(str) == name])]
    row = dict.fromkeys(COMPARISON_COLUMNS, math.nan)
    row.update(a=a_label, b=b_label, metric=metric, n=n, rope=math.nan if rope is None else rope,
               caution="; ".join(cautions), mean_diff=float(np.mean(diffs)) if n else math.nan)
    ratio = paired["test_train_ratio"]
    if n < verdicts.MIN_SPLITS:
        notes.insert(0, f"too few splits for a test (n = {n}; needs at least {verdicts.MIN_SPLITS})")
    elif not math.isfinite(ratio):
        notes.insert(0, "n_train/n_val unknown; the corrected test needs them")
    else:
        ttest = stats.corrected_resampled_t_test(diffs, n_train=1.0, n_val=ratio)
        bayes = stats.bayesian_correlated_t_test(diffs, n_train=1.0, n_val=ratio, rope=rope or 0.0,
                                                 higher_is_better=stats.higher_is_better(metric))
        p_wilcoxon, wilcoxon_reason = stats.wilcoxon_p(diffs)
        row.update(ci95_low=ttest.ci_low, ci95_high=ttest.ci_high, t_corrected=ttest.t,
                   p_corrected=ttest.p, p_wilcoxon=p_wilcoxon, prob_a_better=bayes.prob_a_better,
                   prob_equivalent=bayes.prob_equivalent, prob_b_better=bayes.prob_b_better)
        if rope is None and bayes.reason != stats.IDENTICAL:
            row["prob_equivalent"] = math.nan  # no band to be inside of
        row.update(_power(diffs, ratio, row, k))
        if ttest.reason:
            notes.insert(0, ttest.reason)
        elif wilcoxon_reason:
            notes.append(wilcoxon_reason)
    row["note"] = "; ".join(notes)
    return row


def looks_equivalent(row: ComparisonRow) -> bool:
    """Whether practical equivalence is the most probable region of a comparison row's posterior
    (then `splits_needed` is the splits that would detect a difference of the rope's size)."""
    probabilities = [float(row[key]) for key in ("prob_a_better", "prob_equivalent", "prob_b_better")]
    return math.isfinite(probabilities[1]) and probabilities[1] == max(probabilities)


def _power(diffs: np.ndarray, ratio: float, row: Mapping[str, Any], k: int) -> dict[str, float]:
    """`mde` at this many splits, and `splits_needed` to detect |mean_diff| (or the rope where
    equivalence is the most probable region of the posterior)."""
    variance = float(np.var(diffs, ddof=1))
    if not np.any(diffs):  # identical scores on every split: nothing left to settle
        needed = None
    else:
        target = row["rope"] if looks_equivalent(row) else abs(row["mean_diff"])
        needed = power.splits_needed(variance, target=float(target), test_train_ratio=ratio, k=k)
    return {"mde": power.minimum_detectable_difference(variance, n=diffs.size, test_train_ratio=ratio),
            "splits_needed": math.nan if needed is None else needed}


def comparison_table(folds_df: pd.DataFrame, metrics: Sequence[str], *, strategies: Sequence[str],
                     reference: str | None = None, pairs: Iterable[tuple[str, str]] | None = None,
                     rope: float | dict[str, float | None] | None = 0.01) -> pd.DataFrame:
    """One row per strategy pair x metric: paired differences and their tests.

    Pairs are every pair of ``strategies`` in order, each strategy against
    ``reference`` (A = strategy, B = reference), or the (A, B) ``pairs`` given
    (those whose strategies have results). A strategy with snapshot
    ensemble scores (``snapshot_val_<metric>``) also gets the pair
    "NAME[snapshots]" vs "NAME". ``mean_diff`` is A - B; the interval and
    ``t_corrected``/``p_corrected`` come from `stats.corrected_resampled_t_test`,
    ``p_holm`` adjusts p over all pairs of the same metric, the probabilities
    come from `stats.bayesian_correlated_t_test` and ``p_wilcoxon`` is
    descriptive only. ``mde`` and ``splits_needed`` (`power`) say how large a
    difference these splits would detect with 80% power, and how many splits
    (whole repeats of k folds, k the folds of ``folds_df``) would detect the
    observed one. With fewer than `verdicts.MIN_SPLITS` paired splits the
    tests are NaN and ``note`` says why; zero variance gives the point-mass
    limits (`stats`), and ``note`` says so too.

    Args:
        folds_df: DataFrame. Rows of ``folds.csv``; needs strategy, repeat, fold,
            n_train, n_val and ``val_<metric>``.
        metrics: list of str. Metric names without prefix.
        strategies: list of str. Strategies to compare, in display order.
        reference: str or None. Compare each strategy against this one only.
        pairs: list of (str, str) or None. Compare exactly these pairs (not with `reference`).
        rope: float, or mapping of metric to float or None. Half-width of the region of
            practical equivalence, in metric units: one number for every metric, or one
            per metric (`verdicts.metric_ropes`; None or absent: no equivalence band).

    Returns:
        DataFrame with columns `COMPARISON_COLUMNS`.
    """
    _require_columns(folds_df, ["strategy", "repeat", "fold", "n_train", "n_val",
                                *[f"val_{m}" for m in metrics]])
    ropes = dict(rope) if isinstance(rope, dict) else dict.fromkeys(metrics, rope)
    for metric, value in ropes.items():
        if value is not None and not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"Argument `rope` must be >= 0. Received: rope={value!r} for {metric}")
    k = int(folds_df["fold"].nunique())
    strategies = [name for name in strategies if (folds_df["strategy"].astype(str) == name).any()]
    status = fold_status(folds_df)
    rows = []
    for metric in metrics:
        column = f"val_{metric}"
        metric_rows = [
            _compare(folds_df, status, metric, a, b, (a, b, column, column), ropes.get(metric), k)
            for a, b in _pairs(strategies, reference, pairs)
        ]
        metric_rows += [
            _compare(folds_df, status, metric, f"{name}{SNAPSHOT_SUFFIX}", name,
                     (name, name, f"snapshot_val_{metric}", column), ropes.get(metric), k)
            for name in strategies if _has_snapshots(folds_df, name, metric)
        ]
        adjusted = stats.holm([row["p_corrected"] for row in metric_rows])
        for row, p_holm in zip(metric_rows, adjusted):
            row["p_holm"] = float(p_holm)
            row["verdict"] = verdicts.classify(row)
        rows += metric_rows
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
