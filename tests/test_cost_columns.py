"""The cost beside every score: summary.csv's updates and seconds on training, range tests and
tuning are the sums of folds.csv and of the saved range tests, shared tests counted for each
strategy they serve, unknown parts unknown."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from _results_fixture import N_REPEATS, N_SPLITS, make_config, write_results_dir
from kfold_clr.analysis import costs, tables
from kfold_clr.report import build_report

CLR = {"schedule": "clr", "policy": "triangular", "step_size_epochs": 2}
STRATEGIES = {
    "constant": {"schedule": "constant", "lr": 0.01},
    "clr_reset": {**CLR, "base_lr": 0.005, "max_lr": 0.05},
    "clr_shared": {**CLR, "bounds": "shared_range_test"},
    "clr_shared2": {**CLR, "policy": "triangular2", "bounds": "shared_range_test"},
    "clr_per_fold": {**CLR, "bounds": "per_fold_range_test"},
}
SCOPES = ["shared"] + [f"r{r}_f{f}" for r in range(N_REPEATS) for f in range(N_SPLITS)]


def make_folds(strategies=STRATEGIES, *, failed=(("clr_per_fold", 1, 2),)):
    """folds.csv rows with distinct iterations and fit_seconds per row, one failed fold."""
    rows = []
    for s, name in enumerate(strategies):
        for repeat in range(N_REPEATS):
            for fold in range(N_SPLITS):
                bad = (name, repeat, fold) in failed
                accuracy = 0.8 + 0.01 * s + 0.003 * fold
                rows.append({"strategy": name, "repeat": repeat, "fold": fold, "status": "failed" if bad else "ok",
                             "error": "RuntimeError: boom" if bad else "", "n_train": 80, "n_val": 40,
                             "epochs": 0 if bad else 4, "iterations": 0 if bad else 20 + s + repeat + fold,
                             "fit_seconds": 0.0 if bad else 1.0 + 0.25 * s + 0.5 * fold,
                             "base_lr": 0.005 + 0.001 * fold, "max_lr": 0.05 + 0.01 * fold,
                             "diverged": False, "leaky": False, "optimistic": False,
                             "val_accuracy": np.nan if bad else accuracy, "train_accuracy": np.nan if bad else 0.9,
                             "val_loss": np.nan if bad else 1.0 - accuracy, "train_loss": np.nan if bad else 0.2})
    return pd.DataFrame(rows)


def payloads(*, with_cost=True):
    """Saved range tests: scope i has 30 + i updates (history points) and 0.5 + i seconds."""
    found = []
    for i, scope in enumerate(SCOPES):
        payload = {"scope": scope, "base_lr": 0.005, "max_lr": 0.05,
                   "history": [{"iteration": k, "lr": 1e-4 * (k + 1), "loss": 1.0} for k in range(30 + i)]}
        if with_cost:
            payload.update(iterations=30 + i, seconds=0.5 + i)
        found.append(payload)
    return found


def expected_tests(scopes):
    return sum(30 + SCOPES.index(s) for s in scopes), sum(0.5 + SCOPES.index(s) for s in scopes)


def test_training_cost_is_the_sum_over_every_fold_of_the_strategy():
    folds = make_folds()
    table = costs.cost_table(folds, strategy_configs=STRATEGIES,
                             range_tests=costs.range_test_costs(payloads())).set_index("strategy")
    assert list(table.columns) == costs.COST_COLUMNS
    for name, frame in folds.groupby("strategy"):
        row = table.loc[name]
        assert row["train_iterations"] == frame["iterations"].sum()
        assert row["train_seconds"] == pytest.approx(frame["fit_seconds"].sum())
        assert row["train_iterations_per_fold"] == pytest.approx(frame["iterations"].sum() / len(frame))
        assert row["train_seconds_per_fold"] == pytest.approx(frame["fit_seconds"].mean())
        assert not row["tuned"] and row["tune_iterations"] == 0 and row["tune_seconds"] == 0
        assert row["total_iterations"] == pytest.approx(
            row["train_iterations"] + row["range_test_iterations"] + row["tune_iterations"])
        assert row["total_seconds"] == pytest.approx(
            row["train_seconds"] + row["range_test_seconds"] + row["tune_seconds"])


def test_range_test_cost_follows_the_scopes_each_strategy_used():
    table = costs.cost_table(make_folds(), strategy_configs=STRATEGIES,
                             range_tests=costs.range_test_costs(payloads())).set_index("strategy")
    for name in ("constant", "clr_reset"):  # fixed bounds: no range test
        assert table.loc[name, "range_tests"] == 0
        assert table.loc[name, "range_test_iterations"] == 0 and table.loc[name, "range_test_seconds"] == 0
        assert table.loc[name, "range_test_shared_with"] == ""
    updates, seconds = expected_tests(["shared"])
    for name, other in (("clr_shared", "clr_shared2"), ("clr_shared2", "clr_shared")):
        # one shared test serves both: its full cost is each one's, and each names the other
        assert table.loc[name, "range_tests"] == 1
        assert table.loc[name, "range_test_iterations"] == updates
        assert table.loc[name, "range_test_seconds"] == pytest.approx(seconds)
        assert table.loc[name, "range_test_shared_with"] == other
    updates, seconds = expected_tests(SCOPES[1:])  # one test per split, the failed fold's too
    assert table.loc["clr_per_fold", "range_tests"] == N_REPEATS * N_SPLITS
    assert table.loc["clr_per_fold", "range_test_iterations"] == updates
    assert table.loc["clr_per_fold", "range_test_seconds"] == pytest.approx(seconds)
    assert table.loc["clr_per_fold", "range_test_shared_with"] == ""


def test_a_range_test_saved_without_its_cost_counts_its_points_and_leaves_seconds_unknown():
    tests = costs.range_test_costs(payloads(with_cost=False))
    assert tests.set_index("scope").loc["r1_f2", "iterations"] == 30 + SCOPES.index("r1_f2")
    assert tests["seconds"].isna().all()
    table = costs.cost_table(make_folds(), strategy_configs=STRATEGIES, range_tests=tests).set_index("strategy")
    assert table.loc["clr_shared", "range_test_iterations"] == 30
    assert math.isnan(table.loc["clr_shared", "range_test_seconds"])
    assert math.isnan(table.loc["clr_shared", "total_seconds"])  # an unknown part: an unknown total
    assert not math.isnan(table.loc["constant", "total_seconds"])  # no range test: nothing unknown
    # no payload at all, only range_tests.csv rows: their count per scope
    csv = pd.DataFrame({"scope": ["shared"] * 7 + ["r0_f0"] * 5, "lr": 0.1, "loss": 1.0})
    counted = costs.range_test_costs(range_tests=csv).set_index("scope")
    assert counted.loc["shared", "iterations"] == 7 and counted.loc["r0_f0", "iterations"] == 5
    # a scope with neither: its strategy's range-test cost is unknown
    partial = costs.cost_table(make_folds(), strategy_configs=STRATEGIES,
                               range_tests=costs.range_test_costs(range_tests=csv)).set_index("strategy")
    assert partial.loc["clr_shared", "range_test_iterations"] == 7
    assert math.isnan(partial.loc["clr_per_fold", "range_test_iterations"])


def test_tuning_cost_comes_from_the_folds_when_a_strategy_is_tuned():
    folds = make_folds()
    folds["tune_iterations"] = np.where(folds["strategy"] == "constant", 900 + folds["fold"], np.nan)
    folds["tune_seconds"] = np.where(folds["strategy"] == "constant", 3.0, np.nan)
    configs = {**STRATEGIES, "constant": {**STRATEGIES["constant"], "tune": {"lr": [0.01, 0.1]}}}
    table = costs.cost_table(folds, strategy_configs=configs).set_index("strategy")
    constant = folds[folds["strategy"] == "constant"]
    assert table.loc["constant", "tuned"]
    assert table.loc["constant", "tune_iterations"] == constant["tune_iterations"].sum()
    assert table.loc["constant", "tune_seconds"] == pytest.approx(3.0 * len(constant))
    assert table.loc["constant", "total_iterations"] == constant["iterations"].sum() + constant["tune_iterations"].sum()
    assert not table.loc["clr_reset", "tuned"] and table.loc["clr_reset", "tune_iterations"] == 0
    # tuned by its config but no tuning cost saved: unknown, not free
    untracked = costs.cost_table(make_folds(), strategy_configs=configs).set_index("strategy")
    assert untracked.loc["constant", "tuned"] and math.isnan(untracked.loc["constant", "tune_iterations"])


def test_summary_repeats_the_strategy_cost_on_each_metric_row():
    folds = make_folds()
    tests = costs.range_test_costs(payloads())
    summary = tables.summary_table(folds, ["accuracy", "loss"], strategy_configs=STRATEGIES, range_tests=tests)
    assert list(summary.columns) == tables.SUMMARY_COLUMNS
    assert set(costs.COST_COLUMNS) <= set(summary.columns)
    expected = costs.cost_table(folds, strategy_configs=STRATEGIES, range_tests=tests).set_index("strategy")
    for row in summary.to_dict(orient="records"):
        for column in costs.COST_COLUMNS:
            assert row[column] == expected.loc[row["strategy"], column], (row["strategy"], column)
    # the old column keeps its meaning: mean fit time over the ok folds of that metric
    per_fold = summary.set_index(["strategy", "metric"]).loc[("clr_per_fold", "accuracy")]
    ok = folds[(folds.strategy == "clr_per_fold") & (folds.status == "ok")]
    assert per_fold["fit_seconds_mean"] == pytest.approx(ok["fit_seconds"].mean())
    assert per_fold["train_seconds_per_fold"] == pytest.approx(folds[folds.strategy == "clr_per_fold"]
                                                               ["fit_seconds"].mean())


def test_report_writes_the_costs_of_folds_csv_and_the_saved_range_tests(tmp_path):
    config = make_config(strategies=STRATEGIES)
    folds = make_folds()
    directory = write_results_dir(tmp_path / "r", config=config, folds=folds, range_tests=False)
    (directory / "range_tests").mkdir()
    for payload in payloads():
        (directory / "range_tests" / f"{payload['scope']}.json").write_text(json.dumps(payload))
    text = build_report(directory).read_text()
    summary = pd.read_csv(directory / "summary.csv", keep_default_na=False, na_values=[""])
    for name, frame in folds.groupby("strategy"):
        row = summary[(summary.strategy == name) & (summary.metric == "accuracy")].iloc[0]
        scopes = {"clr_shared": ["shared"], "clr_shared2": ["shared"], "clr_per_fold": SCOPES[1:]}.get(name, [])
        updates, seconds = expected_tests(scopes)
        assert row["train_iterations"] == frame["iterations"].sum()
        assert row["train_seconds"] == pytest.approx(frame["fit_seconds"].sum())
        assert row["range_test_iterations"] == updates
        assert row["range_test_seconds"] == pytest.approx(seconds)
        assert row["total_iterations"] == frame["iterations"].sum() + updates
        assert row["total_seconds"] == pytest.approx(frame["fit_seconds"].sum() + seconds)
    # the Summary table shows the cost beside the score: train + range test + tuning = total
    per_fold = folds[folds.strategy == "clr_per_fold"]["iterations"].sum()
    updates, _ = expected_tests(SCOPES[1:])
    summary_section = text.split("## Summary")[1].split("\n## ")[0]
    assert "updates (train + range test + tuning)" in summary_section
    assert f"| {per_fold:,} + {updates:,} + 0 = {per_fold + updates:,} |" in summary_section


@pytest.mark.slow
def test_a_run_reports_the_cost_of_its_folds_and_of_its_range_tests(tiny_experiment):
    from kfold_clr.execution.experiment import run_experiment

    experiment = {**tiny_experiment, "range_test": {"iterations": 20, "max_lr": 3.0},
                  "strategies": {"constant": {"schedule": "constant", "lr": 0.05},
                                 "per_fold": {"schedule": "clr", "bounds": "per_fold_range_test", "step_size": 2}}}
    results = run_experiment(experiment, verbosity=0)
    summary = results.summary.set_index(["strategy", "metric"]).xs("loss", level="metric")
    saved = {path.stem: json.loads(path.read_text()) for path in (results.directory / "range_tests").glob("*.json")}
    assert sorted(saved) == ["r0_f0", "r0_f1", "r0_f2"]
    for name, frame in results.folds.groupby("strategy"):
        assert summary.loc[name, "train_iterations"] == frame["iterations"].sum()
        assert summary.loc[name, "train_seconds"] == pytest.approx(frame["fit_seconds"].sum(), abs=1e-3)
    per_fold = summary.loc["per_fold"]
    assert per_fold["range_tests"] == 3
    assert per_fold["range_test_iterations"] == sum(p["iterations"] for p in saved.values())
    assert all(p["iterations"] == len(p["history"]) for p in saved.values())
    assert per_fold["range_test_seconds"] == pytest.approx(sum(p["seconds"] for p in saved.values()), abs=1e-3)
    assert summary.loc["constant", "range_tests"] == 0 and summary.loc["constant", "range_test_seconds"] == 0
    assert "## Answers" in (results.directory / "report.md").read_text()
