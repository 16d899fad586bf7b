"""Numbers that answer the practitioners' questions mean what they claim: shared range-test
bounds are flagged or kept out of every fold, snapshots count only after real training,
identical strategies are equivalent, carried weights never carry NaN, and a range test says
when it could not see the top of the LR range."""

import copy
import json

import numpy as np
import pandas as pd
import pytest

from kfold_clr.cli.main import main
from kfold_clr.execution.experiment import run_experiment

pytestmark = pytest.mark.slow

CLR = {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2}


def experiment_with(tiny_experiment, strategies, **sections):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["strategies"] = strategies
    experiment.update(sections)
    return experiment


# ----------------------------------------------------------------------------- shared range test
def test_folds_scored_on_rows_the_shared_range_test_saw_are_flagged(tiny_experiment):
    experiment = experiment_with(
        tiny_experiment, {"constant": {"schedule": "constant", "lr": 0.05},
                          "shared": {"schedule": "clr", "bounds": "shared_range_test", "step_size": 2}},
        range_test={"iterations": 30, "max_lr": 3.0})
    experiment["cv"]["n_repeats"] = 2
    results = run_experiment(experiment, verbosity=0)
    folds = results.folds.set_index(["strategy", "repeat", "fold"])
    shared = folds.loc["shared"]
    # The test ran on split (0, 0)'s training rows: every other fold is scored on some of them.
    assert not shared.loc[(0, 0), "optimistic"]
    assert shared.drop(index=(0, 0))["optimistic"].all()
    assert shared.drop(index=(0, 0))["optimistic_reason"].str.contains("shared range test").all()
    assert not folds.loc["constant", "optimistic"].any()
    comparison = results.comparison.iloc[0]
    assert "shared optimistic (shared range test saw validation rows)" in comparison["caution"]
    summary = results.summary.set_index(["strategy", "metric"])
    assert "shared range test" in summary.loc[("shared", "accuracy"), "flags"]
    report = (results.directory / "report.md").read_text()
    assert "range_test.reserve" in report  # the flag says how to avoid it
    key_table = report.split("## Key comparisons")[1].split("##")[0]
    assert "caution" in key_table and "shared range test saw validation rows" in key_table


def test_reserved_rows_choose_shared_bounds_and_stay_out_of_every_split(tiny_experiment):
    experiment = experiment_with(
        tiny_experiment, {"constant": {"schedule": "constant", "lr": 0.05},
                          "shared": {"schedule": "clr", "bounds": "shared_range_test", "step_size": 2}},
        range_test={"iterations": 30, "max_lr": 3.0, "reserve": 0.2})
    results = run_experiment(experiment, verbosity=0)
    assert not results.folds["optimistic"].any()
    splits = json.loads((results.directory / "splits.json").read_text())
    reserved = set(splits["reserved"])
    assert len(reserved) == 18  # 20% of 90, stratified
    validated = [i for split in splits["splits"] for i in split["val"]]
    assert reserved.isdisjoint(validated) and sorted(validated) == sorted(set(range(90)) - reserved)
    assert (results.folds["n_train"] + results.folds["n_val"] == 72).all()
    # Both strategies trained on the same splits: paired.
    by_strategy = results.folds.groupby("strategy")[["n_train", "n_val"]].apply(lambda f: f.to_numpy().tolist())
    assert by_strategy["constant"] == by_strategy["shared"]
    saved = json.loads((results.directory / "range_tests" / "shared.json").read_text())
    assert saved["history"] and saved["max_lr"] > 0


def test_per_fold_bounds_are_reported_with_their_spread(tiny_experiment):
    experiment = experiment_with(
        tiny_experiment, {"per_fold": {"schedule": "clr", "bounds": "per_fold_range_test", "step_size": 2}},
        range_test={"iterations": 30, "max_lr": 3.0})
    results = run_experiment(experiment, verbosity=0)
    assert not results.folds["optimistic"].any()  # nested in each training split
    report = (results.directory / "report.md").read_text()
    section = report.split("## LR range-test bounds")[1].split("\n## ")[0]
    max_lrs = results.folds["max_lr"]
    assert f"{max_lrs.min():.3g} / {max_lrs.median():.3g} / {max_lrs.max():.3g}" in section
    assert f"per-fold range tests chose max_lr from {max_lrs.min():.3g} to {max_lrs.max():.3g}" in section
    # One figure holds every fold's curve (not one figure per fold), with each fold's max_lr marked.
    plots = results.directory / "plots"
    assert "](plots/range_tests_per_fold.png)" in report and (plots / "range_tests_per_fold.png").is_file()
    assert not list(plots.glob("range_test_r*.png"))


def test_the_per_fold_range_test_figure_draws_every_fold_and_its_max_lr():
    import matplotlib.pyplot as plt

    from kfold_clr.plots.experiment import plot_range_tests_per_fold

    lr = np.geomspace(1e-4, 1.0, 20)
    frame = pd.concat([pd.DataFrame({"scope": scope, "iteration": np.arange(20), "lr": lr,
                                     "smoothed_loss": 2.0 - np.arange(20) / 20, "used": True, "max_lr": peak})
                       for scope, peak in (("r0_f0", 0.1), ("r0_f1", 0.3), ("r0_f2", 0.2))])
    ax = plot_range_tests_per_fold(frame)
    assert len(ax.get_lines()) == 3 + 3  # a curve and a max_lr line per fold
    assert "max_lr chosen: 0.1 to 0.3" in [text.get_text() for text in ax.get_legend().get_texts()]
    plt.close(ax.figure)


# ----------------------------------------------------------------------------- snapshots
def test_snapshot_points_need_a_full_cycle_of_the_folds_own_training():
    from kfold_clr.schedules import CyclicalLearningRate
    from kfold_clr.training.fold_plans import cycle_end_updates, snapshot_updates

    mid_cycle = CyclicalLearningRate(base_lr=0.01, max_lr=0.1, step_size=4, initial_step=6)  # cycle 8
    assert cycle_end_updates(mid_cycle, 30) == [2, 10, 18, 26]
    assert snapshot_updates(mid_cycle, 30) == [10, 18, 26]
    fresh = CyclicalLearningRate(base_lr=0.01, max_lr=0.1, step_size=4)
    assert snapshot_updates(fresh, 30) == cycle_end_updates(fresh, 30) == [8, 16, 24]


def test_continued_folds_never_snapshot_a_barely_trained_model(tiny_experiment, recwarn):
    # 60 training rows / 16 = 4 updates per epoch, 3 epochs = 12 updates per fold; cycle 6 + 4 = 10:
    # continued folds start 12 and 24 updates in, mid-cycle: their first cycle ends come 8 and 6
    # updates after fresh initialisation, too soon to count.
    experiment = experiment_with(
        tiny_experiment, {"snap": {**CLR, "step_size": 6, "step_size_down": 4, "across_folds": "continue",
                                   "snapshots": {"keep": 2}}})
    experiment["training"]["epochs"] = 3
    folds = run_experiment(experiment, verbosity=0).folds.sort_values("fold")
    captured = [[int(k) for k in str(text).split()] if isinstance(text, str) else []
                for text in folds["snapshot_iterations"]]
    assert captured[0] == [10]
    assert all(k >= 10 for points in captured for k in points)
    assert list(folds["n_snapshots"]) == [1, 0, 0]
    assert np.isnan(folds.iloc[1]["snapshot_val_accuracy"]) and np.isfinite(folds.iloc[0]["snapshot_val_accuracy"])
    messages = [str(w.message) for w in recwarn]
    assert any("2 snapshots asked for, but 3 of 3 folds hold fewer" in m and "r0_f1: 0" in m for m in messages)


# ----------------------------------------------------------------------------- identical strategies
def test_identical_strategies_are_practically_equivalent(tiny_experiment):
    # 4 updates per epoch x 2 epochs = 8 per fold, cycle 4: every fold ends on a cycle end, so a
    # triangular `continue` is the same schedule as `reset`.
    experiment = experiment_with(tiny_experiment, {"reset": CLR, "continue": {**CLR, "across_folds": "continue"}})
    results = run_experiment(experiment, verbosity=0)
    row = results.comparison[results.comparison["metric"] == "accuracy"].iloc[0]
    assert row["mean_diff"] == 0.0 and row["p_corrected"] == 1.0 and row["prob_equivalent"] == 1.0
    assert row["verdict"] == "practically equivalent"
    assert "identical scores on every split" in (results.directory / "report.md").read_text()


# ----------------------------------------------------------------------------- carried weights
def test_a_carry_chain_restarts_from_fresh_weights_after_a_diverged_fold(tiny_experiment, monkeypatch):
    from kfold_clr.config import load_config
    from kfold_clr.data.datasets import load_dataset
    from kfold_clr.data.splits import make_splits
    from kfold_clr.execution.worker import WorkerContext, run_job
    from kfold_clr.planning.jobs import Job, chain_job
    from kfold_clr.training import trainer
    from kfold_clr.training.fold_plans import plan_folds

    experiment = experiment_with(tiny_experiment, {"carry": {**CLR, "across_folds": "continue",
                                                             "carry_weights": True}})
    config = load_config(experiment)
    dataset = load_dataset(config.data, seed=config.seed)
    splits = make_splits(dataset, splitter="stratified", n_splits=3, seed=config.seed)
    plans = plan_folds("carry", config.strategies["carry"], splits, seed=0, epochs=2, batch_size=16)
    started_from = {}

    def fake_train_fold(config, dataset, spec, *, initial_weights=None, **kwargs):
        plan = spec.plan
        started_from[plan.key] = initial_weights
        diverged = plan.key == "r0_f0"
        weights = [np.full(3, np.nan if diverged else float(plan.split.fold))]
        return {"row": {"strategy": plan.strategy, "repeat": 0, "fold": plan.split.fold,
                        "status": "diverged" if diverged else "ok", "leaky": plan.carry_from is not None},
                "history": [], "lr": [], "weights": weights}

    monkeypatch.setattr(trainer, "train_fold", fake_train_fold)
    records = run_job(WorkerContext(config, dataset), Job(tuple(plans), (None,) * 3))
    assert started_from["r0_f1"] is None  # not the NaN weights of the diverged fold
    assert started_from["r0_f2"][0].tolist() == [1.0, 1.0, 1.0]  # the chain goes on from the restart
    rows = [record["row"] for record in records]
    assert [row["restarted_after"] for row in rows] == ["", "r0_f0", ""]
    assert [row["carried_from"] for row in rows] == ["", "", "r0_f1"]
    assert [row["leaky"] for row in rows] == [False, False, True]
    # On resume, a chain whose previous fold diverged starts fresh too.
    class Store:
        def load_record(self, name, key):
            return {"row": {"status": "diverged"}}

    assert chain_job(Store(), "carry", plans[1:], [None, None]).restart


# ----------------------------------------------------------------------------- range test top
def test_a_range_test_that_never_turns_up_says_so(tiny_experiment, write_yaml, capsys):
    experiment = experiment_with(tiny_experiment, {"c": {"schedule": "constant", "lr": 0.05}},
                                 range_test={"min_lr": 1e-5, "max_lr": 1e-3})
    path = write_yaml(experiment)
    assert main(["range-test", str(path)]) == 0
    out = capsys.readouterr().out
    assert "100 updates (25 epochs of 4 batches of 16 rows)" in out  # the default sweep length
    assert "had not turned up" in out and "try range_test.max_lr: 0.01" in out
    csv = pd.read_csv(pathlib_of(experiment) / "range_test" / "r0_f0" / "range_test.csv")
    assert len(csv) == 100 and not csv["turned_up"].any() and (csv["next_max_lr"] == 0.01).all()


def test_a_range_test_that_diverges_saw_the_top(tiny_experiment, write_yaml, capsys):
    experiment = experiment_with(tiny_experiment, {"c": {"schedule": "constant", "lr": 0.05}},
                                 range_test={"min_lr": 1e-3, "max_lr": 100.0})
    assert main(["range-test", str(write_yaml(experiment))]) == 0
    assert "had not turned up" not in capsys.readouterr().out
    csv = pd.read_csv(pathlib_of(experiment) / "range_test" / "r0_f0" / "range_test.csv")
    assert csv["turned_up"].all() and csv["next_max_lr"].isna().all()


def pathlib_of(experiment):
    import pathlib

    return pathlib.Path(experiment["output"]["dir"])
