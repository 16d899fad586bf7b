"""How many splits would settle a comparison (`mde`, `splits_needed`), a rope per metric, costs in updates
(issue 22)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from _results_fixture import N_REPEATS, N_SPLITS, make_config, make_folds, write_results_dir
from kfold_clr.analysis import costs, power, tables
from kfold_clr.report import build_report


# ----------------------------------------------------------------------------- the formula
@pytest.mark.parametrize("variance, n, ratio", [(1e-4, 15, 0.25), (4e-4, 6, 0.5), (2.5e-5, 50, 1 / 9)])
def test_mde_is_the_formula_of_the_spec(variance, n, ratio):
    direct = ((scipy_stats.t.ppf(0.975, n - 1) + scipy_stats.t.ppf(0.80, n - 1))
              * math.sqrt((1 / n + ratio) * variance))
    assert power.minimum_detectable_difference(variance, n=n, test_train_ratio=ratio) == pytest.approx(direct,
                                                                                                     rel=1e-12)


@pytest.mark.parametrize("target", [0.0145, 0.02, 0.05])
def test_splits_needed_is_the_fewest_whole_repeats_whose_mde_reaches_the_target(target):
    variance, ratio, k = 1e-4, 0.25, 5
    found = power.splits_needed(variance, target=target, test_train_ratio=ratio, k=k)
    direct = next(k * r for r in range(1, 101)
                  if (scipy_stats.t.ppf(0.975, k * r - 1) + scipy_stats.t.ppf(0.8, k * r - 1))
                  * math.sqrt((1 / (k * r) + ratio) * variance) <= target)
    assert found == direct and found % k == 0


def test_splits_needed_is_empty_for_no_difference_and_below_the_variance_floor():
    variance, ratio, k = 1e-4, 0.25, 5
    floor = power.variance_floor(variance, test_train_ratio=ratio)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert floor == pytest.approx(z * math.sqrt(ratio * variance))
    assert power.splits_needed(variance, target=0.0, test_train_ratio=ratio, k=k) is None
    assert power.splits_needed(variance, target=floor * 0.99, test_train_ratio=ratio, k=k) is None  # repeats cannot
    # just above the floor, the t quantiles and the 1/n term keep mde above the target for 100 repeats
    assert power.splits_needed(variance, target=floor * 1.001, test_train_ratio=ratio, k=k) is None
    target = floor * 1.01  # a little further: reached, within 100 repeats, at the first whole repeat that gets there
    near = power.splits_needed(variance, target=target, test_train_ratio=ratio, k=k)
    assert near is not None and near % k == 0 and k < near <= k * power.MAX_REPEATS
    mde = [power.minimum_detectable_difference(variance, n=n, test_train_ratio=ratio) for n in (near - k, near)]
    assert mde[1] <= target < mde[0]


def test_at_splits_needed_the_corrected_test_detects_the_difference_80_percent_of_the_time():
    """Synthetic paired differences with the correlation the corrected test assumes: a shared part of
    variance n_val/n_train * s^2 and an independent part s^2 per split."""
    k, ratio, sigma, simulations = 5, 0.25, 0.02, 4000
    true_difference = power.minimum_detectable_difference(sigma ** 2, n=30, test_train_ratio=ratio) * 1.0001
    needed = power.splits_needed(sigma ** 2, target=true_difference, test_train_ratio=ratio, k=k)
    assert needed == 30

    def detection_rate(n, seed):
        rng = np.random.default_rng(seed)
        diffs = (true_difference + math.sqrt(ratio) * sigma * rng.standard_normal((simulations, 1))
                 + sigma * rng.standard_normal((simulations, n)))
        t = diffs.mean(axis=1) / np.sqrt((1 / n + ratio) * diffs.var(axis=1, ddof=1))
        return float(np.mean(2 * scipy_stats.t.sf(np.abs(t), n - 1) < 0.05))

    assert detection_rate(needed, 0) == pytest.approx(0.80, abs=0.03)
    assert detection_rate(needed - k, 1) < 0.80  # one repeat fewer is not enough


# ----------------------------------------------------------------------------- comparison.csv
def _with_diffs(diffs, *, a="clr_reset", b="constant", metric="accuracy"):
    """The fixture's folds with A's scores set to B's plus `diffs` (one per split)."""
    folds = make_folds(diverged=())
    own_b = folds[folds["strategy"] == b].sort_values(["repeat", "fold"])
    index_a = folds[folds["strategy"] == a].sort_values(["repeat", "fold"]).index
    folds.loc[index_a, f"val_{metric}"] = own_b[f"val_{metric}"].to_numpy() + np.asarray(diffs)
    return folds


OPEN = [0.012, 0.004, 0.010, 0.003, 0.009, 0.010]  # p 0.043 before Holm; 21 splits would settle it
FLOORED = [0.014, 0.002, 0.012, 0.001, 0.011, 0.012]  # below the variance floor: repeats cannot


def test_comparison_rows_carry_mde_and_splits_needed_of_their_differences():
    folds = _with_diffs(OPEN)
    table = tables.comparison_table(folds, ["accuracy", "loss"], strategies=["constant", "clr_reset", "clr_carry"],
                                    rope={"accuracy": 0.005, "loss": None})
    assert {"rope", "mde", "splits_needed"} <= set(table.columns)
    row = table[(table["a"] == "constant") & (table["b"] == "clr_reset") & (table["metric"] == "accuracy")].iloc[0]
    diffs = -np.asarray(OPEN)
    ratio = 40 / 80
    assert row["mde"] == pytest.approx(power.minimum_detectable_difference(np.var(diffs, ddof=1), n=6,
                                                                           test_train_ratio=ratio))
    assert row["splits_needed"] == power.splits_needed(np.var(diffs, ddof=1), target=abs(diffs.mean()),
                                                       test_train_ratio=ratio, k=N_SPLITS) == 21
    assert row["rope"] == 0.005 and table.loc[table["metric"] == "loss", "rope"].isna().all()
    assert table.loc[table["metric"] == "loss", "prob_equivalent"].isna().all()  # no band, no equivalence
    floored = tables.comparison_table(_with_diffs(FLOORED), ["accuracy"], strategies=["constant", "clr_reset"])
    assert np.isnan(floored["splits_needed"].iloc[0]) and floored["mde"].iloc[0] > 0


def test_the_answers_say_how_many_splits_would_settle_an_open_question_or_that_repeats_cannot(tmp_path):
    for name, diffs in (("open", OPEN), ("floored", FLOORED)):
        directory = write_results_dir(tmp_path / name, folds=_with_diffs(diffs), range_tests=False)
        text = build_report(directory).read_text()
        answers = text.split("## Answers", 1)[1].split("\n## ", 1)[0]
        comparison = pd.read_csv(directory / "comparison.csv")
        row = comparison[(comparison["metric"] == "accuracy") & comparison["a"].isin(["clr_reset", "constant"])
                         & comparison["b"].isin(["clr_reset", "constant"])].iloc[0]
        assert row["verdict"] == "no evidence of a difference"  # Holm over the three pairs
        if name == "open":
            needed = int(row["splits_needed"])
            assert (f"To settle it, about {needed} splits ({needed // N_SPLITS} repeats of {N_SPLITS} folds; "
                    f"{N_REPEATS * N_SPLITS} now)") in answers
        else:
            assert np.isnan(row["splits_needed"])
            assert "More repeats cannot settle it" in answers
            assert "more data, or more folds (a smaller n_val/n_train), would help" in answers
        assert "| mde (80% power) | splits needed |" in text


def test_a_rope_per_metric_from_the_config_is_written_in_each_row(tmp_path):
    directory = write_results_dir(tmp_path / "r", config=make_config(rope={"accuracy": 0.02, "loss": 0.05}))
    build_report(directory)
    comparison = pd.read_csv(directory / "comparison.csv")
    assert comparison.groupby("metric")["rope"].unique().map(list).to_dict() == {"accuracy": [0.02], "loss": [0.05]}
    directory = write_results_dir(tmp_path / "n", config=make_config(rope=0.02))  # a number: the primary's
    build_report(directory)
    comparison = pd.read_csv(directory / "comparison.csv")
    assert (comparison.loc[comparison["metric"] == "accuracy", "rope"] == 0.02).all()
    assert comparison.loc[comparison["metric"] == "loss", "rope"].isna().all()  # loss: no default band


@pytest.mark.parametrize("rope, message", [
    ({"acc": 0.01}, r"compare.rope.acc: 0.01 must be keyed by a metric of the run: loss, accuracy"),
    ({"loss": -0.1}, r"compare.rope.loss: -0.1 must be a finite number >= 0"),
    ({"loss": float("inf")}, r"compare.rope.loss: inf must be a finite number >= 0"),
    ("wide", r"compare.rope: 'wide' must be a finite number >= 0 .*, or a mapping of metric names"),
])
def test_a_bad_rope_is_refused_with_one_line_naming_key_value_and_what_is_allowed(tiny_experiment, write_yaml,
                                                                                   capsys, rope, message):
    import re

    from kfold_clr.cli.main import main

    tiny_experiment["training"]["metrics"] = ["accuracy"]
    tiny_experiment["compare"] = {"rope": rope}
    assert main(["validate", str(write_yaml(tiny_experiment))]) == 2
    error = capsys.readouterr().err.strip()
    assert re.search(message, error) and "\n" not in error and "Traceback" not in error


# ----------------------------------------------------------------------------- costs
def test_costs_count_fused_folds_and_the_answers_say_their_seconds_are_shares(tmp_path):
    folds = make_folds(diverged=())
    fused = folds["strategy"] == "clr_reset"
    folds["job_folds"] = np.where(fused, 6, 1)
    folds["job_seconds"] = np.where(fused, 6.0, folds["fit_seconds"])
    folds.loc[fused, "fit_seconds"] = 1.0  # each fold's share of its 6-fold job
    folds["fused"] = fused
    table = costs.cost_table(folds).set_index("strategy")
    assert table.loc["clr_reset", "fused_folds"] == N_REPEATS * N_SPLITS and table.loc["constant", "fused_folds"] == 0
    directory = write_results_dir(tmp_path / "r", folds=folds, range_tests=False)
    text = build_report(directory).read_text()
    assert "Cost is compared in optimizer updates" in text
    assert f"{N_REPEATS * N_SPLITS} folds trained fused, their seconds a share of their jobs' time" in text
    summary = pd.read_csv(directory / "summary.csv")
    assert (summary.loc[summary["strategy"] == "clr_reset", "fused_folds"] == 6).all()
