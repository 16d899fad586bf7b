"""Tuned baselines: grids scored inside each outer fold's training rows, the best point refitted."""

import copy
import json
import os
import pathlib

import numpy as np
import pytest

from kfold_clr.config import load_config
from kfold_clr.errors import ConfigError
from kfold_clr.execution.experiment import run_experiment
from kfold_clr.storage import ownership


def _tuned(tiny_experiment, select="inner_cv", lrs=(0.01, 0.2), **tune):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["strategies"] = {
        "constant": experiment["strategies"]["constant"],
        "step": {"schedule": "step", "lr": list(lrs), "factor": 0.5, "every_epochs": 1,
                 "tune": {"select": select, **tune}},
    }
    return experiment


# ----------------------------------------------------------------------------- config
def test_a_list_is_a_grid_only_with_tune_and_every_point_is_validated(tiny_experiment):
    config = load_config(_tuned(tiny_experiment, n_splits=2))
    step = config.strategies["step"]
    assert step.tune.grid == {"lr": [0.01, 0.2]} and step.lr == 0.01
    assert step.grid_points() == [{"lr": 0.01}, {"lr": 0.2}]
    assert step.at({"lr": 0.2}).lr == 0.2 and step.at({"lr": 0.2}).tune is None
    bad = _tuned(tiny_experiment)
    del bad["strategies"]["step"]["tune"]
    with pytest.raises(ConfigError, match=r"strategies.step.lr: \[0.01, 0.2\] must be a single value; a list "
                                          "is a grid to tune and needs a `tune:` entry"):
        load_config(bad)
    with pytest.raises(ConfigError, match="strategies.step.tune.grid.lr: -1.0 must be greater than 0"):
        load_config(_tuned(tiny_experiment, lrs=(0.1, -1.0)))
    bad = _tuned(tiny_experiment)
    bad["strategies"]["step"]["tune"]["grid"] = {"max_lr": [0.1]}
    with pytest.raises(ConfigError, match=r"strategies.step.tune.grid.max_lr: \[0.1\] must be a numeric key of "
                                          r"this strategy \(every_epochs, factor, lr\)"):
        load_config(bad)
    with pytest.raises(ConfigError, match="tune.select"):
        load_config(_tuned(tiny_experiment, select="peek"))


# ----------------------------------------------------------------------------- no peeking
@pytest.mark.parametrize("select", ["inner_cv", "holdout"])
def test_inner_splits_hold_only_the_outer_training_rows(tiny_experiment, select):
    from kfold_clr.planning.preflight import prepare
    from kfold_clr.training.fold_plans import plan_folds
    from kfold_clr.training.tuning import inner_splits

    config, dataset, splits, _ = prepare(_tuned(tiny_experiment, select=select))
    for plan in plan_folds("step", config.strategies["step"], splits, seed=config.seed, epochs=2, batch_size=16):
        inner = inner_splits(config, dataset, plan)
        assert len(inner) == (3 if select == "inner_cv" else 1)
        for split in inner:
            assert not set(split.train) & set(plan.split.val) and not set(split.val) & set(plan.split.val)
            assert not set(split.train) & set(split.val)
            assert set(split.train) | set(split.val) == set(plan.split.train)
            assert split.key.startswith(plan.key + "_")
        if select == "inner_cv":  # every outer training row is validated once
            assert sorted(np.concatenate([s.val for s in inner])) == sorted(plan.split.train)
        assert [s.val.tolist() for s in inner] == [s.val.tolist() for s in inner_splits(config, dataset, plan)]


def test_a_tuned_run_refits_the_best_point_as_an_ordinary_fold_and_scores_only_that(tiny_experiment, tmp_path):
    from kfold_clr.planning.preflight import prepare
    from kfold_clr.training.fold_plans import fold_spec, plan_folds
    from kfold_clr.training.trainer import train_fold
    from kfold_clr.training.tuning import choose

    experiment = _tuned(tiny_experiment, n_splits=2)
    results = run_experiment(experiment, verbosity=0)
    folds = results.folds[results.folds["strategy"] == "step"]
    assert (folds["status"] == "ok").all() and (folds["tune_fits"] == 4).all()  # 2 points x 2 inner folds
    config, dataset, splits, _ = prepare(experiment)
    folder = results.directory / "folds" / "step" / "tune"
    for plan, (_, row) in zip(plan_folds("step", config.strategies["step"], splits, seed=config.seed,
                                         epochs=2, batch_size=16), folds.iterrows()):
        fits = []
        for index in range(2):  # the grid: lr 0.01, 0.2
            for inner in ("i0of2", "i1of2"):
                record = json.loads((folder / f"{plan.key}_{inner}_p{index}.json").read_text())
                assert record["row"]["n_train"] + record["row"]["n_val"] == len(plan.split.train)
                fits.append((index, record))
        choice = choose(config, "step", fits)
        assert row["tuned_lr"] == [0.01, 0.2][choice.best]
        assert row["tune_score"] == pytest.approx(choice.means[choice.best])
        assert row["tune_iterations"] == sum(r["row"]["iterations"] for _, r in fits)
        refit = train_fold(config, dataset, fold_spec(config, plan.__class__(
            **{**plan.__dict__, "settings": (("lr", row["tuned_lr"]),)})))
        assert refit["row"]["val_loss"] == pytest.approx(row["val_loss"], rel=1e-6)  # the same run
        assert not row["optimistic"]
    summary = results.summary[results.summary["strategy"] == "step"]
    assert bool(summary["tuned"].iloc[0]) and summary["tune_iterations"].iloc[0] == folds["tune_iterations"].sum()
    report = (results.directory / "report.md").read_text()
    counts = folds["tuned_lr"].value_counts()
    chosen = ", ".join(f"{lr:g} ({n} fold{'s' if n != 1 else ''})" for lr, n in sorted(counts.items()))
    assert f"| step | inner_cv (2 inner folds) | loss | lr in 0.01, 0.2 | lr: {chosen} | 4 |" in report



def test_a_grid_of_one_value_is_the_untuned_strategy_exactly(tiny_experiment, tmp_path):
    tuned = run_experiment(_tuned(tiny_experiment, lrs=(0.05,), n_splits=2), verbosity=0).folds
    plain = _tuned(tiny_experiment)
    plain["strategies"]["step"] = {"schedule": "step", "lr": 0.05, "factor": 0.5, "every_epochs": 1}
    plain["output"]["dir"] += "-plain"
    untuned = run_experiment(plain, verbosity=0).folds
    columns = ["val_loss", "val_accuracy", "train_loss", "iterations"]
    step = tuned[tuned["strategy"] == "step"]
    assert step[columns].to_numpy().tolist() == untuned[untuned["strategy"] == "step"][columns].to_numpy().tolist()


def test_a_run_resumes_in_the_middle_of_tuning(tiny_experiment, monkeypatch):
    import kfold_clr.training.trainer

    experiment = _tuned(tiny_experiment, n_splits=2)
    first = run_experiment(experiment, verbosity=0)
    results = pathlib.Path(tiny_experiment["output"]["dir"]).resolve()
    assert first.directory.resolve() == results  # the test deletes only inside this run's results
    folder = first.directory / "folds" / "step"
    for path in folder.glob("*.json"):  # stopped after the grid fits, before the refits...
        ownership.inside(results, "folds", "step", path.name).unlink()
    ownership.inside(results, "folds", "step", "tune", "r0_f1_i1of2_p0.json").unlink()  # one grid fit still to do
    trained = []
    original = kfold_clr.training.trainer.train_fold
    monkeypatch.setattr(kfold_clr.training.trainer, "train_fold",
                        lambda config, dataset, spec, **kw: trained.append(spec.plan.key) or original(
                            config, dataset, spec, **kw))
    again = run_experiment(experiment, verbosity=0)
    assert sorted(trained) == ["r0_f0", "r0_f1", "r0_f1_i1of2", "r0_f2"]  # the missing fit, then the 3 refits
    np.testing.assert_array_equal(again.folds["val_loss"], first.folds["val_loss"])


def test_select_outer_picks_on_the_validation_fold_and_is_marked_optimistic(tiny_experiment):
    results = run_experiment(_tuned(tiny_experiment, select="outer"), verbosity=0)
    step = results.folds[results.folds["strategy"] == "step"]
    assert step["optimistic"].all()
    assert step["optimistic_reason"].str.contains("chosen on its validation fold").all()
    assert (step["tune_fits"] == 1).all()  # the other grid point; the chosen one is the result
    flags = results.summary[results.summary["strategy"] == "step"]["flags"].iloc[0]
    assert "tuned on its validation fold" in flags


@pytest.mark.parametrize("tune, message", [
    ({"metric": "auc"}, "strategies.step.tune.metric: 'auc' must be one of loss, accuracy"),
    ({"select": "holdout", "fraction": 0.001}, "strategies.step.tune: .* cannot split the 60 training rows of "
                                               "fold r0_f0"),
    ({"n_splits": 61}, "strategies.step.tune: .* cannot split the 60 training rows of fold r0_f0"),
])
def test_a_tuning_that_cannot_run_is_refused_before_anything_is_written(tiny_experiment, tune, message):
    experiment = _tuned(tiny_experiment, **tune)
    with pytest.raises(ConfigError, match=message):
        run_experiment(experiment, verbosity=0)
    assert not (tiny_experiment["output"]["dir"] and __import__("pathlib").Path(
        tiny_experiment["output"]["dir"]).exists())


def test_diverged_and_failed_grid_fits_lose_and_cost_what_they_ran(tiny_experiment):
    from kfold_clr.training.tuning import choose, score, tune_fields

    experiment = _tuned(tiny_experiment, lrs=(1e3, 0.05), n_splits=2)
    folds = run_experiment(experiment, verbosity=0).folds
    step = folds[folds["strategy"] == "step"]
    assert (step["tuned_lr"] == 0.05).all() and (step["status"] == "ok").all()  # the diverging LR never wins
    config = load_config(experiment)
    ok = {"row": {"status": "ok", "val_loss": 0.5, "iterations": 4, "fit_seconds": 0.1}}
    diverged = {"row": {"status": "diverged", "val_loss": 1.0, "iterations": 2, "fit_seconds": 0.1}}
    assert np.isnan(score(None, "loss")) and np.isnan(score(diverged, "loss"))
    assert score({"row": {"status": "ok", "val_accuracy": 0.9}}, "accuracy") == 0.9  # its own units
    choice = choose(config, "step", [(0, diverged), (0, ok), (1, ok), (1, ok)])
    assert choice.best == 1 and np.isnan(choice.means[0]) and choice.means[1] == 0.5  # diverged: the worst
    fields = tune_fields(config, "step", choice, [(0, diverged), (0, ok), (1, ok), (1, ok)])
    assert fields["tuned_lr"] == 0.05 and fields["tune_fits"] == 4 and fields["tune_iterations"] == 14


@pytest.mark.parametrize("strategy, key", [("..", "r0_f0_i0_p0"), ("step", "../../escape"), ("step", "/etc/x"),
                                           ("a/b", "r0_f0_p0"), (".", "r0_f0_p0")])
def test_grid_fit_records_stay_inside_the_results_directory_whatever_the_names(tmp_path, strategy, key):
    from kfold_clr.errors import ResultsError
    from kfold_clr.storage.store import ResultsStore

    store = ResultsStore(tmp_path / "results")
    with pytest.raises(ResultsError, match="is not a plain file name"):
        store.save_fit(strategy, key, {"row": {"status": "ok"}})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written, here or above


def test_a_tune_folder_linked_out_of_the_results_directory_is_refused(tmp_path):
    from kfold_clr.errors import ResultsError
    from kfold_clr.storage.store import ResultsStore

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "results" / "folds" / "step").mkdir(parents=True)
    os.symlink(outside, tmp_path / "results" / "folds" / "step" / "tune")
    store = ResultsStore(tmp_path / "results")
    with pytest.raises(ResultsError, match="outside"):
        store.save_fit("step", "r0_f0_i0_p0", {"row": {"status": "ok"}})
    with pytest.raises(ResultsError, match="outside"):
        store.finished_fit("step", "r0_f0_i0_p0", "fingerprint")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/tmp/x", "CON"])
def test_a_tuned_strategy_with_an_unsafe_name_is_refused_before_any_file_is_touched(tiny_experiment, name):
    experiment = _tuned(tiny_experiment)
    experiment["strategies"] = {name: experiment["strategies"]["step"]}
    with pytest.raises(ConfigError, match="must be a safe file name"):
        load_config(experiment)


def test_the_grid_is_scored_in_the_direction_of_its_metric_and_its_values_are_distinct(tiny_experiment):
    from kfold_clr.training.tuning import choose, score

    config = load_config(_tuned(tiny_experiment, n_splits=2, metric="sparse_categorical_accuracy"))
    fits = [(0, {"row": {"status": "ok", "val_sparse_categorical_accuracy": 0.7}}),
            (1, {"row": {"status": "ok", "val_sparse_categorical_accuracy": 0.9}})]
    assert choose(config, "step", fits).best == 1  # higher is better: the highest wins
    assert score({"row": {"status": "ok", "val_mae": 0.3}}, "mae") == 0.3
    with pytest.raises(ConfigError, match=r"strategies.step.tune.grid.lr: \[0.1, 0.1\] must be a list of "
                                          "different values"):
        load_config(_tuned(tiny_experiment, lrs=(0.1, 0.1)))
    both = _tuned(tiny_experiment)
    both["strategies"]["step"].update(lr=0.3, tune={"grid": {"lr": [0.01, 0.2]}})
    with pytest.raises(ConfigError, match=r"strategies.step.lr: 0.3 must be omitted when tune.grid gives"):
        load_config(both)
    one_cycle = _tuned(tiny_experiment)
    one_cycle["strategies"]["step"] = {"schedule": "one_cycle", "max_lr": [0.1, 0.2], "tune": {}}
    assert load_config(one_cycle).strategies["step"].grid_points() == [{"max_lr": 0.1}, {"max_lr": 0.2}]


def test_grid_fits_save_no_snapshot_weights_as_their_folds(tiny_experiment):
    experiment = _tuned(tiny_experiment, select="outer")
    experiment["strategies"]["step"] = {"schedule": "cosine_restarts", "lr": [0.05, 0.1], "cycle_epochs": 1,
                                        "snapshots": {"keep": 1, "save_weights": True}, "tune": {"select": "outer"}}
    experiment["training"]["epochs"] = 3
    results = run_experiment(experiment, verbosity=0)
    folder = results.directory / "folds" / "step"
    assert not list(folder.rglob("*.snapshots.npz"))  # the chosen fit's weights are not the refit's: none saved
    assert (results.folds.loc[results.folds["strategy"] == "step", "n_snapshots"] >= 1).all()


def test_a_killed_runs_temporary_grid_fit_files_are_removed_on_the_next_open(tmp_path):
    from kfold_clr.storage.store import ResultsStore

    store = ResultsStore(tmp_path / "results").open()
    store.save_fit("step", "r0_f0_i0of3_p0", {"row": {"status": "ok"}})
    store.close()
    tune = tmp_path / "results" / "folds" / "step" / "tune"
    stale = tune / ".r0_f0_i1of3_p0.json.k3x9q2ab.tmp"  # as tempfile.mkstemp names it
    stale.write_text("{")
    ResultsStore(tmp_path / "results").open().close()
    assert not stale.exists() and (stale.parent / "r0_f0_i0of3_p0.json").exists()
