"""End-to-end runs of the k-fold runner on tiny data."""

import copy
import json
import os
import pathlib

import numpy as np
import pandas as pd
import pytest
import yaml

from kfold_clr.cli.main import main
from kfold_clr.errors import ResultsError
from kfold_clr.execution.experiment import run_experiment
from kfold_clr.planning.preflight import prepare

pytestmark = pytest.mark.slow


def test_run_writes_the_results_layout(tiny_run):
    results = tiny_run
    out = results.directory
    for name in ("config.yaml", "meta.json", "splits.json", "folds.csv", "history.csv", "lr.csv", "summary.csv"):
        assert (out / name).exists(), name
    folds = results.folds
    assert list(folds["strategy"].unique()) == ["constant", "clr_reset", "clr_continue"]
    assert len(folds) == 9 and (folds["status"] == "ok").all()
    assert {"val_accuracy", "val_loss", "train_accuracy", "base_lr", "max_lr", "final_lr",
            "leaky", "diverged", "n_train", "n_val", "iterations", "fit_seconds"} <= set(folds.columns)
    assert len(results.history) == 9 * 2
    meta = json.loads((out / "meta.json").read_text())["runs"][-1]
    assert meta["seed"] == 3 and meta["finished"] and meta["tensorflow"] and meta["outcome"] == "finished"
    splits = json.loads((out / "splits.json").read_text())["splits"]
    assert sorted(i for s in splits for i in s["val"]) == list(range(90))


def test_strategies_are_paired_same_init_and_data_order(tiny_experiment):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["strategies"] = {"a": {"schedule": "constant", "lr": 0.05},
                                "b": {"schedule": "constant", "lr": 0.05},
                                "c": {"schedule": "constant", "lr": 0.02}}
    folds = run_experiment(experiment, verbosity=0).folds.set_index(["strategy", "fold"])
    # Two identical strategies see the same initial weights, batches and dropout: identical scores.
    np.testing.assert_array_equal(folds.loc["a", "val_loss"].to_numpy(), folds.loc["b", "val_loss"].to_numpy())
    assert not np.allclose(folds.loc["a", "val_loss"].to_numpy(), folds.loc["c", "val_loss"].to_numpy())


def test_initial_weights_depend_on_fold_not_strategy(tiny_experiment):
    from kfold_clr.training.fold_plans import plan_folds
    from kfold_clr.training.trainer import initial_model

    config, dataset, splits, _ = prepare(tiny_experiment)
    plans = {name: plan_folds(name, config.strategies[name], splits, seed=config.seed, epochs=2, batch_size=16)
             for name in ("constant", "clr_continue")}
    weights = {}
    for name, fold in (("constant", 0), ("clr_continue", 0), ("constant", 1)):
        weights[name, fold] = initial_model(config, dataset, plans[name][fold], (6,)).get_weights()
    for a, b in zip(weights["constant", 0], weights["clr_continue", 0]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(weights["constant", 0][0], weights["constant", 1][0])


def closed_form_triangular(t, base, high, step):
    cycle = np.floor(1 + t / (2 * step))
    x = np.abs(t / step - 2 * cycle + 1)
    return base + (high - base) * np.maximum(0, 1 - x)


def test_continue_offsets_and_reset_restarts(tiny_run):
    results = tiny_run
    folds = results.folds.set_index(["strategy", "fold"])
    iterations = folds.loc["clr_continue", "iterations"].to_numpy()
    offsets = folds.loc["clr_continue", "initial_step"].to_numpy()
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(iterations)[:-1]]))
    assert (folds.loc["clr_reset", "initial_step"] == 0).all()
    lr = pd.read_csv(results.directory / "lr.csv")
    for strategy, step, offset_of in (("clr_reset", 2, lambda f: 0), ("clr_continue", 3, lambda f: offsets[f])):
        for fold in range(3):
            part = lr[(lr.strategy == strategy) & (lr.fold == fold)]
            expected = closed_form_triangular(part["iteration"].to_numpy() + offset_of(fold), 0.01, 0.1, step)
            np.testing.assert_allclose(part["lr"].to_numpy(), expected, rtol=1e-5)


def test_every_schedule_kind_runs(tiny_experiment):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["cv"]["n_splits"] = 2
    experiment["training"]["epochs"] = 2
    experiment["strategies"] = {
        "step": {"schedule": "step", "lr": 0.05, "factor": 0.5, "every_epochs": 1},
        "exponential": {"schedule": "exponential", "lr": 0.05, "decay_rate": 0.5},
        "cosine": {"schedule": "cosine", "lr": 0.05},
        "restarts": {"schedule": "cosine_restarts", "lr": 0.05, "cycle_epochs": 1},
        "one_cycle": {"schedule": "one_cycle", "max_lr": 0.1,
                      "cycle_momentum": {"base_momentum": 0.85, "max_momentum": 0.95}},
        "tri2": {"schedule": "clr", "policy": "triangular2", "base_lr": 0.01, "max_lr": 0.1, "step_size_epochs": 0.5},
        "exp_range": {"schedule": "clr", "policy": "exp_range", "gamma": 0.99, "base_lr": 0.01, "max_lr": 0.1,
                      "step_size": 2, "step_size_down": 4},
        "carried": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 3,
                    "across_folds": "continue", "carry_weights": True},
    }
    folds = run_experiment(experiment, verbosity=0).folds
    assert (folds["status"] == "ok").all(), folds[["strategy", "error"]]
    # Carried weights make every fold after the first leaky (it has trained on its validation rows).
    assert folds.groupby("strategy")["leaky"].any().to_dict() == {
        name: name == "carried" for name in experiment["strategies"]}
    assert folds.query("strategy == 'carried'")["leaky"].tolist() == [False, True]
    step = pd.read_csv(f"{experiment['output']['dir']}/history.csv").query("strategy == 'step' and fold == 0")
    np.testing.assert_allclose(step["lr"].to_numpy(), [0.05, 0.025], rtol=1e-5)  # LR in force during each epoch


def test_regression_with_groups_and_adam(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    frame["y"] = frame["a"] * 3 + rng.normal(size=60) * 0.1
    frame["g"] = np.arange(60) // 5
    frame.to_csv(tmp_path / "reg.csv", index=False)
    experiment = {"name": "reg", "data": {"source": "csv", "path": str(tmp_path / "reg.csv"), "target": "y",
                                          "groups": "g", "task": "regression"},
                  "model": {"hidden": [8]}, "training": {"epochs": 2, "optimizer": {"name": "adam"}},
                  "cv": {"n_splits": 3},
                  "strategies": {"clr": {"schedule": "clr", "base_lr": 1e-3, "max_lr": 1e-2, "step_size": 2}},
                  "output": {"dir": str(tmp_path / "out")}}
    folds = run_experiment(experiment, verbosity=0).folds
    assert {"val_mae", "val_loss"} <= set(folds.columns) and (folds["status"] == "ok").all()
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert splits["splitter"] == "group"


def _explosive(experiment):
    """The experiment on a regression task, where an LR of 1000 (the largest allowed) overflows the loss."""
    experiment = copy.deepcopy(experiment)
    experiment["data"] = {"source": "synthetic", "name": "regression", "params": {"n_samples": 60, "n_features": 4}}
    experiment["cv"] = {"splitter": "kfold", "n_splits": 3}
    experiment["training"]["epochs"] = 4
    return experiment


def test_divergence_is_recorded_and_the_run_goes_on(tiny_experiment):
    experiment = _explosive(tiny_experiment)
    experiment["strategies"] = {"wild": {"schedule": "constant", "lr": 1e3},
                                "calm": {"schedule": "constant", "lr": 0.01}}
    folds = run_experiment(experiment, verbosity=0).folds.set_index("strategy")
    assert (folds.loc["wild", "status"] == "diverged").all() and folds.loc["wild", "diverged"].all()
    assert (folds.loc["wild", "diverged_epoch"] == folds.loc["wild", "epochs"]).all()
    assert (folds.loc["wild", "diverged_lr"] == 1e3).all()
    assert (folds.loc["calm", "status"] == "ok").all()


def test_a_failing_fold_is_recorded_and_exit_code_is_1(tiny_experiment, write_yaml, monkeypatch, capsys):
    import kfold_clr.training.trainer as trainer

    real = trainer.train_fold

    def flaky(config, dataset, spec, **kwargs):
        if spec.strategy == "clr_reset" and spec.plan.split.fold == 1:
            raise RuntimeError("simulated out-of-memory")
        return real(config, dataset, spec, **kwargs)

    monkeypatch.setattr(trainer, "train_fold", flaky)
    path = write_yaml(tiny_experiment)
    code = main(["run", str(path), "-q"])
    assert code == 1
    folds = pd.read_csv(f"{tiny_experiment['output']['dir']}/folds.csv")
    failed = folds[folds.status == "failed"]
    assert len(failed) == 1 and "simulated out-of-memory" in failed["error"].iloc[0]
    assert (folds.status == "ok").sum() == 8
    monkeypatch.setattr(trainer, "train_fold", real)  # the cause is gone: resuming retries the failed fold
    assert main(["run", str(path), "-q"]) == 0
    assert (pd.read_csv(f"{tiny_experiment['output']['dir']}/folds.csv").status == "ok").all()


def test_resume_skips_finished_folds_and_refuses_a_changed_config(tiny_experiment):
    first = run_experiment(tiny_experiment, verbosity=0).folds
    record = os.path.join(tiny_experiment["output"]["dir"], "folds", "constant", "r0_f0.json")
    stamp = os.stat(record).st_mtime_ns
    second = run_experiment(tiny_experiment, verbosity=0).folds
    assert os.stat(record).st_mtime_ns == stamp  # not retrained
    pd.testing.assert_frame_equal(first, second)
    with pytest.raises(ResultsError, match="from a different config"):
        run_experiment(tiny_experiment, overrides=["training.epochs=3"], verbosity=0)
    fresh = run_experiment(tiny_experiment, overrides=["training.epochs=3"], resume=False, verbosity=0).folds
    assert (fresh["epochs"] == 3).all()


def test_only_runs_a_subset(tiny_experiment):
    folds = run_experiment(tiny_experiment, only=["clr_reset"], verbosity=0).folds
    assert set(folds["strategy"]) == {"clr_reset"}


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_experiment, tmp_path):
    def scores(seed, out):
        experiment = copy.deepcopy(tiny_experiment)
        experiment["seed"], experiment["output"]["dir"] = seed, str(tmp_path / out)
        experiment["strategies"] = {"clr_reset": experiment["strategies"]["clr_reset"]}
        return run_experiment(experiment, verbosity=0).folds[["val_loss", "val_accuracy"]].to_numpy()

    first = scores(3, "a")
    np.testing.assert_array_equal(first, scores(3, "b"))
    assert not np.array_equal(first, scores(4, "c"))


def test_bad_config_exits_2_with_one_line_and_no_results_dir(tiny_experiment, write_yaml, capsys, tmp_path):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["strategies"]["clr_reset"]["policy"] = "triangle"
    assert main(["run", str(write_yaml(experiment))]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("kfold-clr: error: strategies.clr_reset.policy: 'triangle' is not one of "
                   "triangular, triangular2, exp_range")
    assert not (tmp_path / "results").exists()


def test_validate_prints_the_resolved_config(tiny_experiment, write_yaml, capsys):
    assert main(["validate", str(write_yaml(tiny_experiment))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# OK: make_classification") and "range_test:" in out
    resolved = yaml.safe_load(out)  # the printed config is the resolved one, defaults filled in
    assert resolved["range_test"]["min_lr"] == pytest.approx(1e-5)
    assert resolved["training"]["metrics"] == ["accuracy"]
    assert resolved["training"]["loss"] == "sparse_categorical_crossentropy"


def test_a_lock_file_left_behind_does_not_block_a_run(tiny_experiment, tmp_path):
    """A PID file naming a live process (pid 1, as after a container restart) is no lock: only a
    kernel lock held by a running process is (tests/test_safety.py checks the refusal)."""
    from kfold_clr.storage import ownership

    out = ownership.claim(tmp_path / "results")
    (out / ".lock").write_text(f"1@{os.uname().nodename}")
    tiny_experiment["strategies"] = {"constant": tiny_experiment["strategies"]["constant"]}
    assert run_experiment(tiny_experiment, verbosity=0).n_failed == 0


EXAMPLES = sorted(pathlib.Path(__file__).resolve().parent.parent.glob("experiments/*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_experiments_validate(path, capsys, tmp_path, monkeypatch):
    import shutil
    import subprocess
    import sys

    data = yaml.safe_load(path.read_text())["data"]
    if data["source"] == "images" and not (path.parent / data["path"]).exists():
        # An image example reads a folder its header says how to generate: a small one here, beside a copy.
        monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))
        folder = pathlib.Path(data["path"]).parts[:2]  # data/NAME
        generator = path.parent.parent / "benchmarks" / "image_folder.py"
        subprocess.run([sys.executable, str(generator), str(tmp_path.joinpath(*folder)), "--n", "60", "--size",
                        str(data["image_size"][0]), "--drivers", "10"], check=True, capture_output=True)
        path = pathlib.Path(shutil.copy(path, tmp_path))
    assert main(["validate", str(path)]) == 0


def test_changed_data_file_is_never_mixed_with_old_results(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    frame["y"] = (frame["a"] > 0).astype(int)
    frame.to_csv(tmp_path / "d.csv", index=False)
    experiment = {"name": "d", "data": {"source": "csv", "path": str(tmp_path / "d.csv"), "target": "y"},
                  "model": {"hidden": [4]}, "training": {"epochs": 1}, "cv": {"n_splits": 2},
                  "strategies": {"c": {"schedule": "constant", "lr": 0.05}}, "output": {"dir": str(tmp_path / "o")}}
    run_experiment(experiment, verbosity=0)
    frame["y"] = 1 - frame["y"]
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ResultsError, match="from a different config"):
        run_experiment(experiment, verbosity=0)


def test_fresh_with_only_keeps_the_other_strategies(tiny_experiment):
    run_experiment(tiny_experiment, verbosity=0)
    out = pathlib.Path(tiny_experiment["output"]["dir"])
    kept = (out / "folds" / "constant" / "r0_f0.json").stat().st_mtime_ns
    folds = run_experiment(tiny_experiment, only=["clr_reset"], resume=False, verbosity=0).folds
    assert (out / "folds" / "constant" / "r0_f0.json").stat().st_mtime_ns == kept
    assert len(folds) == 9


def test_only_refuses_to_mix_with_other_strategies_from_another_config(tiny_experiment):
    """`--only` with changed shared settings would put folds of two configs in one table."""
    run_experiment(tiny_experiment, verbosity=0)
    out = pathlib.Path(tiny_experiment["output"]["dir"])
    before = {name: (out / name).read_bytes() for name in ("folds.csv", "config.yaml", "folds/clr_reset/r0_f0.json")}
    with pytest.raises(ResultsError, match="--only: strategy 'constant' has results from a different config"):
        run_experiment(tiny_experiment, only=["clr_reset"], resume=False, overrides=["training.epochs=3"],
                       verbosity=0)
    assert {name: (out / name).read_bytes() for name in before} == before


def test_switching_between_fused_and_sequential_is_refused(tiny_experiment):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["strategies"] = {"constant": experiment["strategies"]["constant"]}
    experiment["execution"] = {"fused_folds": True}
    assert run_experiment(experiment, verbosity=0).folds["fused"].all()
    with pytest.raises(ResultsError, match="from a different config"):
        run_experiment(experiment, overrides=["execution.fused_folds=false"], verbosity=0)


def test_all_folds_diverged_still_finishes_with_exit_0(tiny_experiment, write_yaml, capsys):
    experiment = _explosive(tiny_experiment)
    experiment["strategies"] = {"wild": {"schedule": "constant", "lr": 1e3}}  # the largest lr allowed
    assert main(["run", str(write_yaml(experiment)), "-q"]) == 0
    folds = pd.read_csv(f"{experiment['output']['dir']}/folds.csv")
    assert (folds["status"] == "diverged").all()


def test_reused_models_give_the_numbers_of_freshly_built_ones(tiny_experiment):
    """The model pool restores weights, dropout seed state, optimizer slots and the LR table:
    a fold trained on a reused model matches one trained on a new model exactly."""
    from kfold_clr.training import trainer
    from kfold_clr.training.fold_plans import fold_spec, plan_folds

    experiment = copy.deepcopy(tiny_experiment)
    experiment["model"]["dropout"] = 0.3
    experiment["cv"]["n_splits"] = 2  # 4 strategies x 2 folds, three times: 24 folds through the pool
    experiment["strategies"]["snap"] = {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2,
                                        "across_folds": "continue", "snapshots": {"keep": 2}}
    config, dataset, splits, _ = prepare(experiment)

    def scores(reuse):
        rows = []
        for name in config.strategies:
            for plan in plan_folds(name, config.strategies[name], splits, seed=config.seed, epochs=2,
                                   batch_size=16):
                row = trainer.train_fold(config, dataset, fold_spec(config, plan), reuse=reuse)["row"]
                rows.append([row["val_loss"], row["train_loss"], row["final_lr"],
                             row.get("snapshot_val_loss", 0.0)])
        return np.asarray(rows)

    fresh = scores(False)
    np.testing.assert_array_equal(scores(True), fresh)
    np.testing.assert_array_equal(scores(True), fresh)  # and again, after other folds used the pool


def test_many_updates_per_call_give_the_numbers_of_one_update_per_call(tiny_experiment, monkeypatch):
    """Folds run STEPS_PER_EXECUTION updates per call into the graph (whole and partial calls
    alike) with the same numbers, epoch by epoch, as one update per call."""
    from kfold_clr.training import trainer
    from kfold_clr.training.fold_plans import fold_spec, plan_folds

    experiment = copy.deepcopy(tiny_experiment)
    experiment["model"]["dropout"] = 0.3
    experiment["training"]["epochs"] = 3
    config, dataset, splits, _ = prepare(experiment)

    default = trainer.STEPS_PER_EXECUTION

    def histories(steps_per_execution, expected):
        monkeypatch.setattr(trainer, "STEPS_PER_EXECUTION", steps_per_execution)
        trainer.MODEL_POOL.clear()
        out = []
        for name in ("clr_reset", "clr_continue"):
            for plan in plan_folds(name, config.strategies[name], splits, seed=config.seed, epochs=3,
                                   batch_size=16):
                record = trainer.train_fold(config, dataset, fold_spec(config, plan))
                assert plan.steps_per_epoch == 4 and trainer.MODEL_POOL._model.steps_per_execution == expected
                out.append([[h["loss"], h["val_loss"], h["val_accuracy"], h["lr"]] for h in record["history"]]
                           + [[record["row"]["train_loss"], record["row"]["iterations"], 0, 0]])
        return np.asarray(out)

    one = histories(1, 1)
    np.testing.assert_array_equal(histories(3, 2), one)  # 4 updates per epoch: calls of 2, never across epochs
    np.testing.assert_array_equal(histories(default, 4), one)  # the default: one call per epoch


@pytest.mark.parametrize("fused", [False, True])
def test_the_progress_bar_counts_every_epoch_once(tiny_experiment, monkeypatch, capsys, fused):
    from rich.progress import Progress

    advanced = []
    original = Progress.update

    def update(self, task, **changes):
        advanced.append(changes.get("advance") or 0)
        return original(self, task, **changes)

    monkeypatch.setattr(Progress, "update", update)
    experiment = copy.deepcopy(tiny_experiment)
    experiment["execution"] = {"fused_folds": fused}
    run_experiment(experiment, verbosity=2)
    assert sum(advanced) == 3 * 3 * 2  # strategies x folds x epochs
    assert capsys.readouterr().err.count("epoch 2/2") == 3 * 3  # per-epoch lines with -v, fused too


def test_a_call_into_the_train_step_never_runs_across_the_end_of_an_epoch():
    from kfold_clr.training.trainer import execution_steps

    assert [execution_steps(n, 64) for n in (1, 4, 21, 64, 100, 67, 128)] == [1, 4, 21, 64, 50, 1, 64]
    assert all(n % execution_steps(n, 8) == 0 for n in range(1, 200))
