import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from _results_fixture import STRATEGIES, make_folds
from kfold_clr.analysis import tables
from kfold_clr.analysis.stats import holm
from kfold_clr.analysis.tables import comparison_table, summary_table
from kfold_clr.analysis.verdicts import classify, format_difference, verdict_line

ORDER = list(STRATEGIES)


def _folds_from_scores(scores, *, n_train=90, n_val=10, metric="accuracy"):
    """folds rows from {strategy: [score per split]}; NaN marks a diverged split."""
    rows = []
    for name, values in scores.items():
        for index, value in enumerate(values):
            diverged = isinstance(value, float) and math.isnan(value)
            rows.append({"strategy": name, "repeat": index // 5, "fold": index % 5,
                         "status": "diverged" if diverged else "ok", "n_train": n_train, "n_val": n_val,
                         f"val_{metric}": value, f"train_{metric}": value, "fit_seconds": 2.0,
                         "leaky": False, "optimistic": False})
    return pd.DataFrame(rows)


def test_summary_leaves_out_diverged_folds_and_counts_them():
    folds = make_folds()  # constant diverged at (repeat 1, fold 2)
    summary = summary_table(folds, ["accuracy", "loss"], strategies=ORDER)
    assert list(summary.columns) == tables.SUMMARY_COLUMNS
    assert list(summary["strategy"]) == ["constant", "constant", "clr_reset", "clr_reset", "clr_carry", "clr_carry"]
    row = summary[(summary.strategy == "constant") & (summary.metric == "accuracy")].iloc[0]
    ok = folds[(folds.strategy == "constant") & (folds.status == "ok")]["val_accuracy"].to_numpy()
    assert row["n"] == 5 and row["n_diverged"] == 1 and row["n_failed"] == 0
    assert row["mean"] == pytest.approx(ok.mean())
    assert row["std"] == pytest.approx(ok.std(ddof=1))
    half = scipy_stats.t.ppf(0.975, 4) * ok.std(ddof=1) / math.sqrt(5)
    assert row["ci95_low"] == pytest.approx(ok.mean() - half)
    assert row["ci95_high"] == pytest.approx(ok.mean() + half)
    train = folds[(folds.strategy == "constant") & (folds.status == "ok")]["train_accuracy"].mean()
    assert row["gap"] == pytest.approx(train - ok.mean())
    assert not math.isnan(row["fit_seconds_mean"])


def test_summary_flags_leaky_strategies_from_csv_strings():
    folds = make_folds()
    folds["leaky"] = folds["leaky"].map({True: "True", False: "False"})
    summary = summary_table(folds, ["accuracy"], strategies=ORDER).set_index("strategy")
    assert summary.loc["clr_carry", "leaky"] and not summary.loc["constant", "leaky"]
    assert not summary["optimistic"].any()


def test_summary_status_derived_when_column_missing():
    folds = make_folds(failed=(("clr_reset", 0, 0),)).drop(columns=["status"])
    summary = summary_table(folds, ["accuracy"], strategies=ORDER).set_index("strategy")
    assert summary.loc["constant", "n_diverged"] == 1
    assert summary.loc["clr_reset", "n_failed"] == 1 and summary.loc["clr_reset", "n"] == 5


def test_summary_missing_metric_column_names_it():
    with pytest.raises(ValueError, match="val_auc"):
        summary_table(make_folds(), ["auc"])


def test_comparison_pairs_every_strategy_in_order_plus_snapshots():
    comparison = comparison_table(make_folds(), ["accuracy"], strategies=ORDER)
    assert list(comparison.columns) == tables.COMPARISON_COLUMNS
    assert list(zip(comparison.a, comparison.b)) == [
        ("constant", "clr_reset"), ("constant", "clr_carry"), ("clr_reset", "clr_carry"),
        ("clr_reset[snapshots]", "clr_reset"),
    ]


def test_comparison_against_reference():
    comparison = comparison_table(make_folds(), ["accuracy"], strategies=ORDER, reference="constant")
    assert list(zip(comparison.a, comparison.b))[:2] == [("clr_reset", "constant"), ("clr_carry", "constant")]
    with pytest.raises(ValueError, match="Argument `reference` must be one of"):
        comparison_table(make_folds(), ["accuracy"], strategies=ORDER, reference="nope")


def test_comparison_pairs_on_splits_where_both_are_ok():
    folds = make_folds()
    comparison = comparison_table(folds, ["accuracy"], strategies=ORDER)
    row = comparison[(comparison.a == "constant") & (comparison.b == "clr_reset")].iloc[0]
    a = folds[folds.strategy == "constant"].set_index(["repeat", "fold"])
    b = folds[folds.strategy == "clr_reset"].set_index(["repeat", "fold"])
    keep = a.status == "ok"
    diffs = (a.val_accuracy - b.val_accuracy)[keep].to_numpy()
    assert row["n"] == 5 == diffs.size
    assert row["mean_diff"] == pytest.approx(diffs.mean())
    mean, n = diffs.mean(), diffs.size
    t = mean / math.sqrt((1 / n + 40 / 80) * diffs.var(ddof=1))  # fixture: n_train=80, n_val=40
    assert row["t_corrected"] == pytest.approx(t)
    assert row["p_corrected"] == pytest.approx(2 * scipy_stats.t.sf(abs(t), n - 1))
    assert "1 split(s) left out" in row["note"]


def test_comparison_holm_is_per_metric():
    comparison = comparison_table(make_folds(), ["accuracy", "loss"], strategies=ORDER)
    for _metric, group in comparison.groupby("metric"):
        np.testing.assert_allclose(group["p_holm"], holm(group["p_corrected"].to_numpy()))


def test_probabilities_sum_to_one_and_follow_metric_direction():
    folds = make_folds()
    comparison = comparison_table(folds, ["accuracy", "loss"], strategies=ORDER)
    defined = comparison.dropna(subset=["prob_a_better"])
    total = defined[["prob_a_better", "prob_equivalent", "prob_b_better"]].sum(axis=1)
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    # by hand from the posterior: Student t, n - 1 df, corrected scale (fixture: n_val/n_train = 40/80)
    a = folds[folds.strategy == "constant"].set_index(["repeat", "fold"])
    b = folds[folds.strategy == "clr_reset"].set_index(["repeat", "fold"])
    keep = a.status == "ok"
    for metric, column in (("accuracy", "val_accuracy"), ("loss", "val_loss")):
        diffs = (a[column] - b[column])[keep].to_numpy()
        n = diffs.size
        posterior = scipy_stats.t(n - 1, loc=diffs.mean(), scale=math.sqrt((1 / n + 40 / 80) * diffs.var(ddof=1)))
        above, below = posterior.sf(0.01), posterior.cdf(-0.01)  # rope = 0.01
        if metric == "loss":  # lower is better: "A better" is the left region
            above, below = below, above
        row = comparison[(comparison.a == "constant") & (comparison.b == "clr_reset")
                         & (comparison.metric == metric)].iloc[0]
        assert row["prob_a_better"] == pytest.approx(above, rel=1e-9, abs=1e-15), metric
        assert row["prob_b_better"] == pytest.approx(below, rel=1e-9, abs=1e-15), metric
        assert row["prob_equivalent"] == pytest.approx(1 - above - below, rel=1e-9, abs=1e-15), metric
    # fixture: val_loss = 1.2 - val_accuracy, so "A better" means the same on both metrics
    accuracy = comparison[comparison.metric == "accuracy"].set_index(["a", "b"])
    loss = comparison[comparison.metric == "loss"].set_index(["a", "b"])
    pair = ("constant", "clr_carry")
    assert accuracy.loc[pair, "prob_b_better"] == pytest.approx(loss.loc[pair, "prob_b_better"])
    assert accuracy.loc[pair, "verdict"] == loss.loc[pair, "verdict"] == "clr_carry better"


def test_too_few_splits_gives_nan_and_says_so():
    folds = _folds_from_scores({"x": [0.8, 0.9], "y": [0.7, 0.85]})
    row = comparison_table(folds, ["accuracy"], strategies=["x", "y"]).iloc[0]
    assert row["n"] == 2
    assert row["mean_diff"] == pytest.approx(0.075)
    for column in ("t_corrected", "p_corrected", "p_holm", "ci95_low", "prob_a_better", "p_wilcoxon"):
        assert math.isnan(row[column]), column
    assert row["verdict"] == "too few splits"
    assert "too few splits for a test (n = 2; needs at least 3)" in row["note"]


def test_a_constant_difference_is_a_point_mass_and_says_so():
    folds = _folds_from_scores({"x": [0.8, 0.9, 0.85, 0.7], "y": [0.75, 0.85, 0.8, 0.65]})
    row = comparison_table(folds, ["accuracy"], strategies=["x", "y"]).iloc[0]
    assert row["p_corrected"] == 0.0 and row["prob_a_better"] == 1.0 and row["prob_equivalent"] == 0.0
    assert row["verdict"] == "x better" and "zero variance" in row["note"]


def test_identical_strategies_are_practically_equivalent():
    scores = [0.8, 0.9, 0.85, 0.7, 0.75]
    folds = _folds_from_scores({"x": scores, "y": list(scores)})
    row = comparison_table(folds, ["accuracy"], strategies=["x", "y"]).iloc[0]
    assert (row["mean_diff"], row["p_corrected"], row["prob_equivalent"]) == (0.0, 1.0, 1.0)
    assert row["verdict"] == "practically equivalent" and "identical scores" in row["note"]
    from kfold_clr.analysis.verdicts import verdict_line

    assert "identical scores on every split: practically equivalent" in verdict_line(row)


def test_diverged_split_reduces_pairs_below_minimum():
    folds = _folds_from_scores({"x": [0.8, 0.9, float("nan")], "y": [0.7, 0.85, 0.9]})
    row = comparison_table(folds, ["accuracy"], strategies=["x", "y"]).iloc[0]
    assert row["n"] == 2 and row["verdict"] == "too few splits"


def test_duplicate_rows_are_an_error():
    folds = make_folds()
    folds = pd.concat([folds, folds.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="more than one row for strategy 'constant'"):
        comparison_table(folds, ["accuracy"], strategies=ORDER)


def test_leaky_strategy_is_a_caution_in_comparison():
    comparison = comparison_table(make_folds(), ["accuracy"], strategies=ORDER)
    cautions = comparison.set_index(["a", "b"])["caution"]
    assert cautions[("constant", "clr_carry")] == "clr_carry leaky (carried weights)"
    assert cautions[("constant", "clr_reset")] == ""


def test_verdict_lines():
    row = {"a": "clr_reset", "b": "clr_continue", "metric": "accuracy", "n": 10, "mean_diff": 0.004,
           "ci95_low": -0.006, "ci95_high": 0.014, "p_corrected": 0.41, "p_holm": 0.41,
           "prob_a_better": 0.2, "prob_equivalent": 0.71, "prob_b_better": 0.09, "rope": 0.01, "note": ""}
    assert classify(row) == "no evidence of a difference"
    assert verdict_line(row) == (
        "clr_reset vs clr_continue: +0.4 pp accuracy (95% CI -0.6 to +1.4); no evidence of a difference "
        "(p = 0.41); 71% probability of practical equivalence (within 1.0 pp accuracy)"
    )
    loss = dict(row, metric="loss", mean_diff=-0.05, ci95_low=-0.08, ci95_high=-0.02, p_corrected=0.001,
                p_holm=0.003, prob_a_better=0.97, prob_equivalent=0.03, prob_b_better=0.0)
    assert classify(loss) == "clr_reset better"  # lower loss is better
    line = verdict_line(loss)
    assert line.startswith("clr_reset vs clr_continue: -0.05 loss (95% CI -0.08 to -0.02); clr_reset is better")
    assert "Holm-adjusted p = 0.003" in line and "97% probability that clr_reset is better" in line
    assert classify(dict(row, prob_equivalent=0.97)) == "practically equivalent"


def test_format_difference_units():
    assert format_difference(0.0123, "val_accuracy") == "+1.2 pp accuracy"
    assert format_difference(-0.0123, "mae") == "-0.0123 mae"
    assert format_difference(float("nan"), "loss") == "n/a"


def test_the_posterior_phrase_names_the_likelier_region_with_or_without_a_rope():
    from kfold_clr.analysis.verdicts import _bayesian_phrase

    row = {"a": "x", "b": "y", "metric": "accuracy", "rope": 0.01,
           "prob_a_better": 0.2, "prob_equivalent": 0.71, "prob_b_better": 0.09}
    assert _bayesian_phrase(row) == "71% probability of practical equivalence (within 1.0 pp accuracy)"
    row.update(prob_a_better=0.6, prob_equivalent=0.3, prob_b_better=0.1)
    assert _bayesian_phrase(row) == "60% probability that x is better by more than 1.0 pp accuracy"
    no_rope = {"a": "x", "b": "y", "metric": "loss", "rope": math.nan,
               "prob_a_better": 0.3, "prob_equivalent": math.nan, "prob_b_better": 0.7}
    assert _bayesian_phrase(no_rope) == "70% probability that y is better (no rope for loss)"
    assert _bayesian_phrase({**no_rope, "prob_b_better": math.nan}) == ""
