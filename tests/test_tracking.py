"""TensorBoard and MLflow tracking of finished folds, from hand-built records (no training)."""

import copy
import math
import os
import sys
import types

import pandas as pd
import pytest

from helpers import TINY_EXPERIMENT
from kfold_clr.config import load_config
from kfold_clr.errors import ConfigError, ResultsError
from kfold_clr.storage.tracking import Trackers, check_tracking

EPOCHS = 3


def make_config(tmp_path, **output):
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["output"] = {"dir": str(tmp_path / "results"), **output}
    return load_config(experiment)


def fake_fold(strategy, repeat, fold, *, offset=0.0, status="ok"):
    """A (plan, record) pair shaped like the trainer's: history per epoch, LR per update."""
    plan = types.SimpleNamespace(strategy=strategy, key=f"r{repeat}_f{fold}",
                                 split=types.SimpleNamespace(repeat=repeat, fold=fold))
    where = {"strategy": strategy, "repeat": repeat, "fold": fold}
    history = [{**where, "epoch": epoch, "lr": 0.01 * epoch, "loss": 1.0 / epoch + offset,
                "accuracy": 0.5 + 0.1 * epoch, "val_loss": 1.5 / epoch + offset, "val_accuracy": 0.4 + 0.1 * epoch}
               for epoch in range(1, EPOCHS + 1)]
    lr = [{**where, "iteration": i, "global_iteration": 100 + i, "lr": 0.001 * (i + 1)} for i in range(0, 12, 2)]
    row = {**where, "seed": 7, "status": status, "error": "", "n_train": 60, "n_val": 30, "epochs": EPOCHS,
           "iterations": 12, "fit_seconds": 0.5, "base_lr": 0.01, "max_lr": 0.1, "final_lr": 0.012,
           "diverged": False, "leaky": False, "optimistic": False, "train_loss": 0.3 + offset,
           "train_accuracy": 0.9, "val_loss": 0.5 + offset, "val_accuracy": 0.8}
    return plan, {"row": row, "history": history, "lr": lr}


# ----------------------------------------------------------------------------- TensorBoard
def read_events(folder):
    """tag -> [(step, value)] from the event files in `folder`, read by TensorBoard itself."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    sizes = {kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance=sizes)
    accumulator.Reload()
    return {tag: [(event.step, float(tensor_util.make_ndarray(event.tensor_proto)))
                  for event in accumulator.Tensors(tag)]
            for tag in accumulator.Tags()["tensors"]}


def event_files(folder):
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("events.out.tfevents."))


def test_tensorboard_writes_one_folder_per_strategy_and_fold(tmp_path):
    config = make_config(tmp_path, tensorboard=True)
    results = config.output_dir
    results.mkdir(parents=True)
    folds = [fake_fold("clr_reset", 0, 0), fake_fold("constant", 0, 1, offset=0.25)]
    with Trackers.from_config(config, results) as trackers:
        for plan, record in folds:
            trackers.fold_done(plan, record)
        trackers.run_done(results)

    for plan, record in folds:
        folder = results / "tensorboard" / plan.strategy / plan.key
        assert len(event_files(folder)) == 1
        events = read_events(folder)
        assert set(events) == {"lr", "loss", "accuracy", "val_loss", "val_accuracy", "lr_update"}
        for tag in ("lr", "loss", "accuracy", "val_loss", "val_accuracy"):
            assert [step for step, _ in events[tag]] == [1, 2, 3]
            for (_, value), entry in zip(events[tag], record["history"]):
                assert value == pytest.approx(entry[tag], rel=1e-6)  # written as float32
        assert events["lr_update"] == [(point["iteration"], pytest.approx(point["lr"], rel=1e-6))
                                       for point in record["lr"]]


def test_tensorboard_rerun_of_a_fold_replaces_its_events(tmp_path):
    config = make_config(tmp_path, tensorboard=True)
    results = config.output_dir
    folder = results / "tensorboard" / "constant" / "r0_f0"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not written by kfold_clr")
    for offset in (0.0, 0.5):  # first run, then the same fold again (--fresh, or a failed fold resumed)
        trackers = Trackers.from_config(config, results)
        trackers.fold_done(*fake_fold("constant", 0, 0, offset=offset))
        trackers.close()

    assert len(event_files(folder)) == 1
    assert (folder / "notes.txt").read_text() == "not written by kfold_clr"
    losses = read_events(folder)["loss"]
    assert [step for step, _ in losses] == [1, 2, 3]  # no step twice
    assert losses[0][1] == pytest.approx(1.0 + 0.5)  # the second run's values


@pytest.mark.parametrize("strategy, key", [("constant", "../x"), ("..", "r0_f0"), ("constant", "ABSOLUTE")])
def test_tensorboard_refuses_names_that_escape_its_folder(tmp_path, strategy, key):
    key = str(tmp_path / "x") if key == "ABSOLUTE" else key
    config = make_config(tmp_path, tensorboard=True)
    results = config.output_dir
    results.mkdir(parents=True)
    plan, record = fake_fold("constant", 0, 0)
    plan.strategy, plan.key = strategy, key
    with pytest.raises(ResultsError, match="not a plain file name"):
        Trackers.from_config(config, results).fold_done(plan, record)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results"] and not (tmp_path / "x").exists()
    assert list(results.iterdir()) == []  # no tensorboard/ folder left either


# ----------------------------------------------------------------------------- MLflow
@pytest.fixture
def file_store(tmp_path, monkeypatch):
    """A local MLflow file store; MLFLOW_ALLOW_FILE_STORE is restored afterwards (absent or not)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "restored-below")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # undone in reverse: back to the value before the test
    return str(tmp_path / "mlruns")


def runs_by_name(client, experiment_name):
    experiment = client.get_experiment_by_name(experiment_name)
    return {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}


def test_mlflow_logs_a_parent_per_strategy_and_a_nested_run_per_fold(tmp_path, file_store):
    from mlflow.tracking import MlflowClient

    config = make_config(tmp_path, mlflow={"tracking_uri": file_store, "experiment": "cv-test"})
    results = config.output_dir
    (results / "plots").mkdir(parents=True)
    for name in ("report.md", "folds.csv", "summary.csv"):
        (results / name).write_text("x\n")
    (results / "plots" / "lr.png").write_bytes(b"\x89PNG")
    summary = pd.DataFrame([{"strategy": "constant", "metric": "accuracy", "mean": 0.8, "std": 0.01,
                             "ci95_low": 0.79, "ci95_high": 0.81, "n": 2}])
    folds = [fake_fold("constant", 0, 0), fake_fold("constant", 0, 1), fake_fold("clr_reset", 0, 0, status="failed")]
    with Trackers.from_config(config, results) as trackers:
        for plan, record in folds:
            trackers.fold_done(plan, record)
        trackers.run_done(results, summary)
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"

    client = MlflowClient(tracking_uri=file_store)
    runs = runs_by_name(client, "cv-test")
    assert set(runs) == {"tiny", "constant", "clr_reset", "constant r0_f0", "constant r0_f1", "clr_reset r0_f0"}
    for strategy in ("constant", "clr_reset"):
        parent = runs[strategy]
        assert "mlflow.parentRunId" not in parent.data.tags
        assert parent.info.status == "FINISHED"
        assert parent.data.params["cv.n_splits"] == "3"
        assert parent.data.params["strategies.constant.lr"] == "0.05"
        assert parent.data.params["model.hidden"] == "[8]"
    for plan, record in folds:
        run = runs[f"{plan.strategy} {plan.key}"]
        assert run.data.tags["mlflow.parentRunId"] == runs[plan.strategy].info.run_id
        assert run.data.tags["status"] == record["row"]["status"]
        assert run.data.tags["fold"] == str(plan.split.fold)
        assert run.info.status == ("FAILED" if record["row"]["status"] == "failed" else "FINISHED")
        assert run.data.metrics["final/val_accuracy"] == pytest.approx(0.8)
        assert run.data.metrics["fit_seconds"] == pytest.approx(0.5)
        for key in ("loss", "val_accuracy", "lr"):
            history = client.get_metric_history(run.info.run_id, key)
            assert [(m.step, m.value) for m in history] == [(e["epoch"], pytest.approx(e[key]))
                                                            for e in record["history"]]
        updates = client.get_metric_history(run.info.run_id, "lr_update")
        assert [m.step for m in updates] == [point["iteration"] for point in record["lr"]]

    top = runs["tiny"]
    assert "mlflow.parentRunId" not in top.data.tags
    assert top.data.metrics["constant/val_accuracy"] == pytest.approx(0.8)
    assert top.data.metrics["constant/val_accuracy_ci95_high"] == pytest.approx(0.81)
    assert {a.path for a in client.list_artifacts(top.info.run_id)} == {"report.md", "folds.csv", "summary.csv",
                                                                          "plots"}
    assert [a.path for a in client.list_artifacts(top.info.run_id, "plots")] == ["plots/lr.png"]
    assert len({run.data.tags["kfold_clr.session"] for run in runs.values()}) == 1


def test_mlflow_experiment_defaults_to_the_config_name_and_params_are_truncated(tmp_path, file_store):
    from mlflow.tracking import MlflowClient

    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["output"] = {"dir": str(tmp_path / "results"), "mlflow": {"tracking_uri": "file://" + file_store}}
    experiment["data"]["params"]["note"] = "n" * 7000
    config = load_config(experiment)
    with Trackers.from_config(config, config.output_dir) as trackers:
        trackers.fold_done(*fake_fold("constant", 0, 0))
    runs = runs_by_name(MlflowClient(tracking_uri=file_store), "tiny")
    note = runs["constant"].data.params["data.params.note"]
    assert len(note) == 6000 and note.endswith("...")
    assert runs["constant"].info.status == "KILLED"  # closed without run_done: an interrupted run


def test_a_failing_mlflow_warns_once_and_stops_logging(tmp_path, file_store, monkeypatch):
    from mlflow.tracking import MlflowClient

    config = make_config(tmp_path, mlflow={"tracking_uri": file_store})
    calls = []

    def down(self, *args, **kwargs):
        calls.append(args)
        raise ConnectionError("tracking server at http://localhost:5000 is not answering\nsecond line")

    monkeypatch.setattr(MlflowClient, "log_batch", down)
    warnings = []
    trackers = Trackers.from_config(config, config.output_dir, warn=warnings.append)
    for plan, record in (fake_fold("constant", 0, 0), fake_fold("constant", 0, 1)):
        trackers.fold_done(plan, record)
    trackers.run_done(config.output_dir, None)
    trackers.close()
    assert len(calls) == 1
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "MLflow logging stopped" in warnings[0] and "ConnectionError" in warnings[0]


# ----------------------------------------------------------------------------- check_tracking
def test_check_tracking_names_the_missing_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ConfigError, match=r'output\.mlflow: .*pip install "kfold-clr\[mlflow\]"'):
        check_tracking(make_config(tmp_path, mlflow={"tracking_uri": str(tmp_path / "mlruns")}))
    with pytest.raises(ConfigError, match=r'output\.tensorboard: .*pip install "kfold-clr\[tensorboard\]"'):
        check_tracking(make_config(tmp_path, tensorboard=True))


def test_nothing_asked_imports_nothing_and_does_nothing(tmp_path, monkeypatch):
    for name in [name for name in sys.modules if name == "mlflow" or name.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)  # an import of it would put it back
    config = make_config(tmp_path)
    check_tracking(config)
    trackers = Trackers.from_config(config, config.output_dir)
    assert not trackers
    trackers.fold_done(*fake_fold("constant", 0, 0))
    trackers.run_done(config.output_dir, None)
    trackers.close()
    assert "mlflow" not in sys.modules
    assert not config.output_dir.exists()


def test_a_database_uri_without_sqlalchemy_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(ConfigError, match=r"output\.mlflow\.tracking_uri: 'sqlite:///x\.db' needs SQLAlchemy"):
        check_tracking(make_config(tmp_path, mlflow={"tracking_uri": "sqlite:///x.db"}))


def test_row_values_that_are_not_numbers_become_tags_not_metrics(tmp_path, file_store):
    from mlflow.tracking import MlflowClient

    config = make_config(tmp_path, mlflow={"tracking_uri": file_store})
    plan, record = fake_fold("constant", 0, 0, status="diverged")
    record["row"].update(diverged=True, diverged_epoch=2, train_loss=math.nan, optimistic_reason="")
    with Trackers.from_config(config, config.output_dir) as trackers:
        trackers.fold_done(plan, record)
    run = runs_by_name(MlflowClient(tracking_uri=file_store), "tiny")["constant r0_f0"]
    assert run.data.tags["diverged"] == "True" and run.data.tags["status"] == "diverged"
    assert "optimistic_reason" not in run.data.tags
    assert math.isnan(run.data.metrics["final/train_loss"])
    assert run.data.metrics["diverged_epoch"] == 2


@pytest.mark.slow
def test_a_run_with_tensorboard_writes_one_log_per_strategy_and_fold_and_fresh_clears_them(tiny_experiment):
    import copy

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kfold_clr.execution.experiment import run_experiment

    experiment = copy.deepcopy(tiny_experiment)
    experiment["output"]["tensorboard"] = True
    results = run_experiment(experiment, verbosity=0)
    logs = results.directory / "tensorboard"
    folders = sorted(p.relative_to(logs).as_posix() for p in logs.glob("*/*") if p.is_dir())
    assert folders == [f"{name}/r0_f{fold}" for name in sorted(experiment["strategies"]) for fold in range(3)]
    events = EventAccumulator(str(logs / "clr_reset" / "r0_f1"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = set(events.Tags().get("scalars", [])) | set(events.Tags().get("tensors", []))
    assert {"loss", "val_loss", "lr"} <= tags
    experiment["strategies"] = {"constant": experiment["strategies"]["constant"]}
    run_experiment(experiment, verbosity=0, resume=False)
    assert sorted(p.name for p in logs.iterdir()) == ["constant"]
