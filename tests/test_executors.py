"""Worker processes and Ray give the same results as the local executor."""

import copy

import numpy as np
import pytest

from helpers import TINY_EXPERIMENT
from kfold_clr.execution.experiment import run_experiment

pytestmark = pytest.mark.slow

COLUMNS = ["strategy", "repeat", "fold", "val_loss", "val_accuracy", "train_loss", "iterations", "initial_step"]


def small(tiny_experiment, tmp_path, out, **execution):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["strategies"] = {
        "clr_continue": experiment["strategies"]["clr_continue"],
        "carried": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 3,
                    "across_folds": "continue", "carry_weights": True},
    }
    experiment["output"]["dir"] = str(tmp_path / out)
    if execution:
        experiment["execution"] = {"fused_folds": False, **execution}  # one fold per job, so one dies alone
    return experiment


def assert_same_results(a, b):
    assert list(a["strategy"]) == list(b["strategy"])
    for column in COLUMNS[3:]:
        np.testing.assert_allclose(a[column].to_numpy(float), b[column].to_numpy(float), rtol=1e-5, err_msg=column)


@pytest.fixture(scope="module")
def local_folds(tmp_path_factory):
    """The local executor's folds, run once for the executors compared with it."""
    experiment = {**copy.deepcopy(TINY_EXPERIMENT), "output": {}}
    return run_experiment(small(experiment, tmp_path_factory.mktemp("executors"), "local"), verbosity=0).folds


def test_worker_processes_match_local(tiny_experiment, tmp_path, local_folds):
    experiment = small(tiny_experiment, tmp_path, "processes", executor="processes", workers=2)
    folds = run_experiment(experiment, verbosity=0).folds
    assert (folds["status"] == "ok").all(), folds["error"].tolist()
    assert_same_results(folds, local_folds)


def test_ray_tasks_match_local(tiny_experiment, tmp_path, local_folds):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        experiment = small(tiny_experiment, tmp_path, "ray", executor="ray", num_cpus=1)
        folds = run_experiment(experiment, verbosity=0).folds
    finally:
        ray.shutdown()
    assert (folds["status"] == "ok").all(), folds["error"].tolist()
    assert_same_results(folds, local_folds)


def test_address_only_with_ray(tiny_experiment):
    from kfold_clr.config import load_config
    from kfold_clr.errors import ConfigError

    experiment = copy.deepcopy(tiny_experiment)
    experiment["execution"] = {"executor": "processes", "address": "auto"}
    with pytest.raises(ConfigError, match="execution.address: 'auto' must be only used with executor 'ray'"):
        load_config(experiment)


def test_fused_auto_trains_fusable_strategies_as_one_model(tiny_experiment, tmp_path, local_folds):
    experiment = small(tiny_experiment, tmp_path, "fused", fused_folds="auto")
    del experiment["strategies"]["carried"]
    folds = run_experiment(experiment, verbosity=0).folds
    assert folds["fused"].all() and (folds["status"] == "ok").all()
    sequential = local_folds[local_folds["strategy"] == "clr_continue"]
    assert list(folds["initial_step"]) == list(sequential["initial_step"])  # continue offsets kept
    # The same batches and updates: the same numbers up to floating-point order.
    np.testing.assert_allclose(folds["val_loss"], sequential["val_loss"], rtol=1e-4)


def test_fused_auto_keeps_only_carried_chains_sequential_with_the_same_numbers(tiny_experiment, tmp_path,
                                                                             local_folds):
    experiment = small(tiny_experiment, tmp_path, "mixed", fused_folds="auto")
    folds = run_experiment(experiment, verbosity=0).folds
    assert list(folds["fused"]) == list(folds["strategy"] != "carried")
    assert_same_results(folds, local_folds)


def test_fused_true_trains_a_carried_chain_fold_by_fold(tiny_experiment, tmp_path):
    experiment = small(tiny_experiment, tmp_path, "strict", fused_folds=True)
    folds = run_experiment(experiment, verbosity=0).folds  # a chain is sequential by definition
    assert list(folds["fused"]) == list(folds["strategy"] != "carried")
    assert (folds["status"] == "ok").all()


def test_workers_find_a_csv_relative_to_the_yaml_from_another_directory(tiny_experiment, tmp_path, monkeypatch,
                                                                        write_yaml):
    """Workers rebuild the config from plain data: `data.path` still resolves next to the YAML."""
    rng = np.random.default_rng(0)
    rows = ["a,b,c,label"] + [f"{x:.3f},{y:.3f},{z:.3f},{int(x + y > 0)}" for x, y, z in rng.normal(size=(60, 3))]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    experiment = copy.deepcopy(tiny_experiment)
    experiment["data"] = {"source": "csv", "path": "table.csv", "target": "label"}
    experiment["strategies"] = {"constant": experiment["strategies"]["constant"]}
    experiment["execution"] = {"executor": "processes", "workers": 1}
    path = write_yaml(experiment)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    folds = run_experiment(path, verbosity=0).folds
    assert (folds["status"] == "ok").all() and len(folds) == 3


def test_a_reused_worker_rebuilds_its_context_when_any_setting_changes(tiny_experiment):
    """Workers cache their context per run; a second run that changes only a strategy must not
    train the first run's settings (e.g. a Ray cluster kept between runs)."""
    from kfold_clr.execution.experiment import _payload
    from kfold_clr.execution.worker import context_from_payload
    from kfold_clr.planning.preflight import prepare

    first, dataset, _, _ = prepare(tiny_experiment)
    second, _, _, _ = prepare(tiny_experiment, overrides=["strategies.constant.lr=0.5"])
    assert context_from_payload(_payload(first, dataset)).config.strategies["constant"].lr == 0.05
    assert context_from_payload(_payload(second, dataset)).config.strategies["constant"].lr == 0.5


SUICIDAL_FACTORY = '''
import os
import signal

import keras


def small(input_shape, n_outputs, marker, driver_pid):
    """The first worker (never the driver) to build a model is killed by SIGKILL, as by the OOM killer."""
    if os.getpid() != driver_pid:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(hidden))
'''


def killed_worker_experiment(tiny_experiment, tmp_path, monkeypatch, **execution):
    import os

    (tmp_path / "suicidal_models.py").write_text(SUICIDAL_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    experiment = copy.deepcopy(tiny_experiment)
    experiment["strategies"] = {"constant": experiment["strategies"]["constant"]}
    experiment["model"] = {"factory": "suicidal_models:small",
                           "params": {"marker": str(tmp_path / "killed"), "driver_pid": os.getpid()}}
    experiment["execution"] = {"fused_folds": False, **execution}  # one fold per job, so one dies alone
    return experiment


def test_a_killed_worker_process_costs_only_its_own_fold(tiny_experiment, tmp_path, monkeypatch, capsys):
    experiment = killed_worker_experiment(tiny_experiment, tmp_path, monkeypatch,
                                          executor="processes", workers=2, retries=0)
    folds = run_experiment(experiment, verbosity=0).folds
    assert (tmp_path / "killed").exists()
    assert list(folds["status"]).count("failed") == 1 and list(folds["status"]).count("ok") == 2
    error = folds.loc[folds["status"] == "failed", "error"].iloc[0]
    assert "worker process died (killed by SIGKILL" in error
    assert "worker process died" in capsys.readouterr().err  # reaches the log even when quiet


def test_a_killed_worker_process_is_replaced_and_its_fold_retried(tiny_experiment, tmp_path, monkeypatch, capsys):
    experiment = killed_worker_experiment(tiny_experiment, tmp_path, monkeypatch,
                                          executor="processes", workers=2)
    folds = run_experiment(experiment, verbosity=0).folds
    assert (tmp_path / "killed").exists()
    assert (folds["status"] == "ok").all() and len(folds) == 3
    assert "died (killed by SIGKILL" in capsys.readouterr().err


def test_ray_retries_a_task_whose_worker_died(tiny_experiment, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    experiment = killed_worker_experiment(tiny_experiment, tmp_path, monkeypatch, executor="ray", num_cpus=1)
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(tmp_path)}})
    try:
        folds = run_experiment(experiment, verbosity=0).folds
    finally:
        ray.shutdown()
    assert (tmp_path / "killed").exists()
    assert (folds["status"] == "ok").all() and len(folds) == 3
