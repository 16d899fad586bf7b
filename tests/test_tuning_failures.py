"""Tuning that fails loudly, inner split keys that name their rows, scores in their own units (issue 22)."""

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from kfold_clr.cli.main import main
from kfold_clr.execution.experiment import run_experiment


def _two_tuned(tiny_experiment, *, fused, metric="loss"):
    """Two tuned step strategies that differ only in their inner folds (2 and 3)."""
    experiment = copy.deepcopy(tiny_experiment)
    step = {"schedule": "step", "lr": [0.01, 0.1], "factor": 0.5, "every_epochs": 1}
    experiment["strategies"] = {
        "two": {**step, "tune": {"select": "inner_cv", "n_splits": 2, "metric": metric}},
        "three": {**step, "tune": {"select": "inner_cv", "n_splits": 3, "metric": metric}},
    }
    experiment["execution"] = {"fused_folds": fused}
    return experiment


def _failing_grid_fits(monkeypatch, failing):
    """Make every grid fit for which `failing(plan)` is true raise, as a crashed fit would."""
    import kfold_clr.training.trainer

    original = kfold_clr.training.trainer.train_fold

    def train_fold(config, dataset, spec, **kwargs):
        if spec.plan.fit is not None and failing(spec.plan):
            raise RuntimeError("injected grid-fit failure")
        return original(config, dataset, spec, **kwargs)

    monkeypatch.setattr(kfold_clr.training.trainer, "train_fold", train_fold)


def test_an_outer_fold_whose_grid_could_not_be_scored_fails_and_a_rerun_retries_its_fits(
        tiny_experiment, tmp_path, monkeypatch, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_two_tuned(tiny_experiment, fused=False)))
    _failing_grid_fits(monkeypatch, lambda plan: plan.strategy == "two" and plan.split.fold == 1)
    assert main(["run", str(path)]) == 1  # some folds failed
    folds = pd.read_csv(tmp_path / "results" / "folds.csv")
    two = folds[folds["strategy"] == "two"].set_index("fold")
    assert two.loc[1, "status"] == "failed" and "no grid point" in two.loc[1, "error"]
    assert np.isnan(two.loc[1, "tuned_lr"])  # never a silent default
    assert two.loc[1, "tune_fits"] == 0 and two.loc[1, "tune_failed_fits"] == 4
    assert (two.loc[[0, 2], "status"] == "ok").all() and (folds[folds["strategy"] == "three"]["status"] == "ok").all()
    report = (tmp_path / "results" / "report.md").read_text()
    assert "4 grid fits failed" in report and "1 outer fold failed" in report
    capsys.readouterr()

    monkeypatch.undo()  # the cause is gone: the same command retries the missing grid fits
    assert main(["run", str(path)]) == 0
    assert "nothing to train" not in capsys.readouterr().err
    again = pd.read_csv(tmp_path / "results" / "folds.csv")
    two = again[again["strategy"] == "two"].set_index("fold")
    assert (two["status"] == "ok").all() and two.loc[1, "tune_fits"] == 4 and two.loc[1, "tune_failed_fits"] == 0


def test_a_point_whose_fits_partly_failed_is_never_scored_and_the_report_says_so(tiny_experiment, monkeypatch):
    from kfold_clr.config import load_config
    from kfold_clr.training.tuning import choose

    experiment = _two_tuned(tiny_experiment, fused=False)
    del experiment["strategies"]["three"]
    # the second point (lr 0.1) loses one of its two inner fits in every outer fold
    _failing_grid_fits(monkeypatch, lambda plan: plan.fit == 1 and plan.split.inner.startswith("i0"))
    results = run_experiment(experiment, verbosity=0)
    two = results.folds[results.folds["strategy"] == "two"]
    assert (two["status"] == "ok").all() and (two["tuned_lr"] == 0.01).all()
    assert (two["tune_fits"] == 3).all() and (two["tune_failed_fits"] == 1).all()  # fits that ran, that failed
    assert (two["tune_unscored_points"] == 1).all()
    assert "3 grid fits failed (3 points unscored" in results.report()
    config = load_config(experiment)  # a partly finished point loses even where its one fit scored best
    fits = [(0, {"row": {"status": "ok", "val_loss": 0.9}}), (0, {"row": {"status": "ok", "val_loss": 0.9}}),
            (1, {"row": {"status": "ok", "val_loss": 0.1}}), (1, None)]
    choice = choose(config, "two", fits)
    assert choice.best == 0 and choice.scored == [True, False] and choice.failed_fits == 1


def test_tune_score_is_stored_in_its_metrics_own_units(tiny_experiment):
    experiment = _two_tuned(tiny_experiment, fused=False, metric="accuracy")
    del experiment["strategies"]["three"]
    experiment["training"]["metrics"] = ["accuracy"]
    results = run_experiment(experiment, verbosity=0)
    two = results.folds[results.folds["strategy"] == "two"]
    assert ((two["tune_score"] >= 0) & (two["tune_score"] <= 1)).all()  # accuracy, not its negation
    for key, row in two.set_index(["repeat", "fold"]).iterrows():
        tune = results.directory / "folds" / "two" / "tune"
        point = [0.01, 0.1].index(row["tuned_lr"])
        inner = [pd.read_json(p, typ="series")["row"]["val_accuracy"]
                 for p in sorted(tune.glob(f"r{key[0]}_f{key[1]}_i*_p{point}.json"))]
        assert len(inner) == 2 and row["tune_score"] == pytest.approx(np.mean(inner))


@pytest.mark.slow
def test_two_tuned_strategies_with_different_inner_folds_train_fused_as_they_do_fold_by_fold(tiny_experiment):
    fused = run_experiment(_two_tuned(tiny_experiment, fused=True), verbosity=0).folds
    plain_experiment = _two_tuned(tiny_experiment, fused=False)
    plain_experiment["output"]["dir"] += "-plain"
    plain = run_experiment(plain_experiment, verbosity=0).folds
    assert (fused["status"] == "ok").all() and fused["fused"].astype(bool).all()
    assert (fused["tune_fits"].to_numpy() == [4, 4, 4, 6, 6, 6]).all()
    assert fused["tuned_lr"].tolist() == plain["tuned_lr"].tolist()
    for column in ("val_loss", "val_accuracy", "tune_score"):
        np.testing.assert_allclose(fused[column], plain[column], rtol=0, atol=1e-5)


def test_inner_split_keys_name_their_rows(tiny_experiment):
    from kfold_clr.planning.preflight import prepare
    from kfold_clr.training.fold_plans import plan_folds
    from kfold_clr.training.tuning import inner_splits

    experiment = _two_tuned(tiny_experiment, fused=False)
    experiment["strategies"]["half"] = {**experiment["strategies"]["two"],
                                        "tune": {"select": "holdout", "fraction": 0.5}}
    experiment["strategies"]["third"] = {**experiment["strategies"]["two"],
                                         "tune": {"select": "holdout", "fraction": 0.34}}
    config, dataset, splits, _ = prepare(experiment)
    rows_by_key = {}
    for name in config.strategies:
        plan = plan_folds(name, config.strategies[name], splits, seed=config.seed, epochs=2, batch_size=16)[0]
        for split in inner_splits(config, dataset, plan):
            rows = (tuple(split.train), tuple(split.val))
            assert rows_by_key.setdefault(split.key, rows) == rows  # one key, one set of rows
    assert len(rows_by_key) == 2 + 3 + 1 + 1


def test_a_grid_whose_every_point_diverged_fails_its_outer_fold(tiny_experiment, tmp_path):
    """Found by review: every grid value diverging left the first value as a silent default."""
    experiment = copy.deepcopy(tiny_experiment)
    experiment["data"] = {"source": "synthetic", "name": "regression",
                          "params": {"n_samples": 60, "n_features": 4}}
    experiment["strategies"] = {"tuned": {"schedule": "constant", "lr": [1000.0, 500.0],
                                          "tune": {"select": "inner_cv", "n_splits": 2}}}
    experiment["cv"] = {"splitter": "kfold", "n_splits": 2, "shuffle": True}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["run", str(path)]) == 1
    folds = pd.read_csv(tmp_path / "results" / "folds.csv")
    assert (folds["status"] == "failed").all()
    assert folds["error"].str.contains("diverged in at least one inner fit").all()
    assert "tuned_lr" not in folds or folds["tuned_lr"].isna().all()  # never a silent default
