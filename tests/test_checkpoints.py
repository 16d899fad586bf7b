"""Checkpoints (`kfold_clr.storage.checkpoints`): the file, its fingerprint, when it is saved, stop signals."""

import collections
import dataclasses
import os
import signal
import time

import numpy as np
import pytest

from kfold_clr.data.splits import Split
from kfold_clr.errors import ResultsError
from kfold_clr.planning.jobs import Job
from kfold_clr.process import interrupt
from kfold_clr.storage import checkpoints
from kfold_clr.storage.store import ResultsStore
from kfold_clr.training.fold_plans import FoldPlan


def _slot(tmp_path, fingerprint="0123456789abcdef"):
    return checkpoints.Slot(str(tmp_path / "checkpoints" / f"{fingerprint}.ckpt.npz"), fingerprint)


def test_state_round_trips_arrays_numbers_and_int_keys(tmp_path):
    state = {"weights": [np.arange(6, dtype="float32").reshape(2, 3), np.array(7, dtype="int64")],
             "alive": np.array([True, False]), "best": [None, 0.25, float("nan"), float("inf")],
             "taken": {0: [(3, [np.ones(2)])], 2: []}, "history": [{"loss": 1.5, "val_loss": 2.0}],
             "queue": collections.deque([1, 2]), "scalar": np.float32(0.5), "name": "r0_f1"}
    path = tmp_path / "c.ckpt.npz"
    checkpoints.write(path, state, fingerprint="abc")
    back = checkpoints.read(path, fingerprint="abc")
    assert back["weights"][0].dtype == np.float32 and back["weights"][0].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back["weights"][1].shape == () and int(back["weights"][1]) == 7
    assert back["alive"].tolist() == [True, False]
    assert back["best"][:2] == [None, 0.25] and np.isnan(back["best"][2]) and back["best"][3] == float("inf")
    assert sorted(back["taken"]) == [0, 2] and back["taken"][0][0][0] == 3
    assert back["taken"][0][0][1][0].tolist() == [1.0, 1.0]
    assert back["history"] == [{"loss": 1.5, "val_loss": 2.0}] and back["queue"] == [1, 2]
    assert back["scalar"] == 0.5 and back["name"] == "r0_f1"


def test_another_fingerprint_or_a_damaged_file_never_resumes(tmp_path, capsys):
    path = tmp_path / "c.ckpt.npz"
    checkpoints.write(path, {"epoch": 3}, fingerprint="abc")
    assert checkpoints.read(path, fingerprint="abd") is None
    assert checkpoints.read(tmp_path / "missing.ckpt.npz", fingerprint="abc") is None
    path.write_bytes(path.read_bytes()[:40])  # a truncated write (it never is: atomic) or a damaged disk
    assert checkpoints.read(path, fingerprint="abc") is None
    assert "cannot be read" in capsys.readouterr().err
    np.savez(path, other=np.ones(2))  # a zip without our state
    assert checkpoints.read(path, fingerprint="abc") is None


def test_a_link_planted_at_the_checkpoint_path_is_refused_and_its_target_untouched(tmp_path):
    results = ResultsStore(tmp_path / "results").open()
    try:
        victim = tmp_path / "victim.txt"
        victim.write_text("mine")
        folder = results.path("checkpoints")
        folder.mkdir()
        (folder / "0123456789abcdef.ckpt.npz").symlink_to(victim)
        with pytest.raises(ResultsError):
            checkpoints.write(folder / "0123456789abcdef.ckpt.npz", {"epoch": 1}, fingerprint="x")
        assert victim.read_text() == "mine"
    finally:
        results.close()


def _plan(strategy="a", fold=0, fit=None):
    split = Split(repeat=0, fold=fold, train=np.arange(0, 8), val=np.arange(8, 10))
    return FoldPlan(strategy, split, seed=1, steps_per_epoch=2, epochs=3, fit=fit)


def test_the_job_fingerprint_names_the_file_and_follows_every_fold_fingerprint(tmp_path):
    store = ResultsStore(tmp_path / "results")
    job = Job((_plan("a", 0), _plan("b", 0)), (None, (0.01, 0.1)), fused=True)
    prints = {"a": "1" * 16, "b": "2" * 16}
    where = checkpoints.slot(store, job, prints)
    assert os.path.basename(where.path) == f"{where.fingerprint}.ckpt.npz"
    assert os.path.dirname(where.path) == str(store.path("checkpoints"))
    assert len(where.fingerprint) == 16 and int(where.fingerprint, 16) >= 0
    assert checkpoints.slot(store, job, dict(prints)) == where  # stable
    changed = [checkpoints.slot(store, job, {**prints, "b": "3" * 16}),  # b's config changed
               checkpoints.slot(store, dataclasses.replace(job, bounds=(None, (0.01, 0.2))), prints),
               checkpoints.slot(store, dataclasses.replace(job, fused=False), prints),
               checkpoints.slot(store, Job((_plan("a", 0), _plan("b", 1)), job.bounds, fused=True), prints),
               checkpoints.slot(store, Job((_plan("a", 0, fit=1), _plan("b", 0)), job.bounds, fused=True), prints)]
    assert len({where, *changed}) == 6


def test_saves_when_the_interval_has_passed_and_never_with_zero(tmp_path):
    off = checkpoints.Checkpointer(_slot(tmp_path), every=0)
    off.start_fold(0, "sequential")
    off.epoch_end(lambda: {"epoch": 1})
    assert not off.enabled and off.saves == 0 and not os.path.exists(off.where.path)

    checkpoint = checkpoints.Checkpointer(_slot(tmp_path), every=0.2)
    checkpoint.start_fold(0, "sequential")
    checkpoint.epoch_end(lambda: pytest.fail("gathered before the interval passed"))
    time.sleep(0.25)
    checkpoint.epoch_end(lambda: {"epoch": 2}, stopping=True)  # the fold ends now: nothing to resume
    assert checkpoint.saves == 0
    checkpoint.epoch_end(lambda: {"epoch": 2})
    assert checkpoint.saves == 1
    checkpoint.epoch_end(lambda: pytest.fail("saved again at once"))

    again = checkpoints.Checkpointer(_slot(tmp_path), every=0.2)
    assert again.start_fold(0, "fused") is None  # saved by the sequential trainer: not this one's
    assert again.start_fold(1, "sequential") is None
    assert again.start_fold(0, "sequential") == {"epoch": 2}


def test_a_chain_keeps_its_finished_folds_records(tmp_path):
    checkpoint = checkpoints.Checkpointer(_slot(tmp_path), every=1e-9)
    record = {"row": {"status": "ok", "val_loss": 0.5}, "history": [], "weights": [np.ones(3)]}
    checkpoint.fold_done(record, more=True)
    checkpoint.start_fold(1, "sequential")
    checkpoint.epoch_end(lambda: {"epoch": 1})
    checkpoint.fold_done({"row": {}}, more=False)  # the job's last fold: its records land now

    again = checkpoints.Checkpointer(_slot(tmp_path), every=60)
    finished = again.finished_records()
    assert len(finished) == 1 and finished[0]["row"] == record["row"]
    assert finished[0]["weights"][0].tolist() == [1.0, 1.0, 1.0]
    assert again.start_fold(1, "sequential") == {"epoch": 1}


def test_a_stop_signal_saves_at_the_epoch_end_then_stops(tmp_path):
    checkpoint = checkpoints.Checkpointer(_slot(tmp_path), every=3600)
    checkpoint.start_fold(0, "fused")
    with interrupt.watching(), checkpoints.stops_held_to_epoch_end(checkpoint):
        os.kill(os.getpid(), signal.SIGTERM)  # held: the epoch goes on
        time.sleep(0.05)
        with pytest.raises(interrupt.Interrupted) as stopped:
            checkpoint.epoch_end(lambda: {"epoch": 4})
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert checkpoints.Checkpointer(_slot(tmp_path), every=60).start_fold(0, "fused") == {"epoch": 4}


def test_a_held_stop_interrupts_an_epoch_that_does_not_end(tmp_path):
    checkpoint = checkpoints.Checkpointer(_slot(tmp_path), every=3600)
    started = time.perf_counter()
    with interrupt.watching(), pytest.raises(interrupt.Interrupted) as stopped, \
            checkpoints.stops_held_to_epoch_end(checkpoint, most=0.2):
        os.kill(os.getpid(), signal.SIGTERM)
        while time.perf_counter() - started < 5:  # an epoch far longer than the hold
            time.sleep(0.01)
    assert time.perf_counter() - started < 2 and stopped.value.signum == signal.SIGTERM
    assert not os.path.exists(checkpoint.where.path)  # stopped mid-epoch: nothing half-saved


def test_a_second_held_stop_waits_too_and_a_third_stops_at_once(tmp_path):
    checkpoint = checkpoints.Checkpointer(_slot(tmp_path), every=3600)
    handled = []
    with interrupt.watching(), pytest.raises(interrupt.Interrupted), \
            checkpoints.stops_held_to_epoch_end(checkpoint, most=60):
        for _ in range(3):
            before = len(interrupt._requested)
            os.kill(os.getpid(), signal.SIGINT)
            # Wait for the handler: the kernel may hand the signal to one of TensorFlow's threads,
            # and two signals pending at once would reach Python's handler once.
            deadline = time.monotonic() + 10
            while len(interrupt._requested) == before and time.monotonic() < deadline:
                time.sleep(0.01)
            handled.append(len(interrupt._requested))
    assert handled == [1, 2]  # the first two held; the third raised before it was counted here


# ----------------------------------------------------------------------------- leftovers of issue 23
def _out_of_memory_on_call(monkeypatch, number):
    """Make `kfold_clr.training.models.build_model` raise MemoryError on its `number`-th call (1-based)."""
    from kfold_clr.training import models

    real, calls = models.build_model, []

    def build(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise MemoryError("Unable to allocate 3.1 GiB for an array")
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "build_model", build)
    return calls


def test_a_factory_out_of_memory_while_probing_the_fused_model_trains_fold_by_fold(tiny_experiment, monkeypatch,
                                                                                 capsys):
    """The probe of `fusion_groups` called the factory unguarded: a MemoryError there crashed `run`."""
    from kfold_clr.execution.experiment import run_experiment

    tiny_experiment["execution"] = {"fused_folds": "auto"}
    tiny_experiment["strategies"] = {"constant": tiny_experiment["strategies"]["constant"]}
    tiny_experiment["training"]["epochs"] = 1
    tiny_experiment["model"]["hidden"] = [7]  # a model no other test probed (the probe is cached)
    _out_of_memory_on_call(monkeypatch, 2)  # 1: the preflight check, 2: the fused probe
    folds = run_experiment(tiny_experiment, verbosity=1).folds
    assert (folds["status"] == "ok").all() and not folds["fused"].any()
    assert "building the model raised MemoryError: Unable to allocate" in " ".join(capsys.readouterr().err.split())


def test_fused_folds_true_with_a_factory_out_of_memory_is_one_line(tiny_experiment, monkeypatch):
    from kfold_clr.errors import ConfigError
    from kfold_clr.planning import jobs
    from kfold_clr.planning.preflight import prepare

    tiny_experiment["execution"] = {"fused_folds": True}
    tiny_experiment["model"]["hidden"] = [5]
    config, dataset, _, _ = prepare(tiny_experiment)
    monkeypatch.setattr(jobs, "_PROBES", {})  # probe again, now out of memory
    _out_of_memory_on_call(monkeypatch, 1)
    with pytest.raises(ConfigError, match=r"fused_folds: true, but the model cannot be fused \(building the "
                                          r"model raised MemoryError"):
        jobs.fusion_groups(config, dataset)


def test_only_names_what_changed_in_the_other_strategies_results(tiny_experiment):
    from kfold_clr.execution.experiment import run_experiment

    tiny_experiment["strategies"] = {name: tiny_experiment["strategies"][name] for name in ("constant", "clr_reset")}
    tiny_experiment["training"]["epochs"] = 1
    run_experiment(tiny_experiment, verbosity=0)
    with pytest.raises(ResultsError, match=r"--only: strategy 'constant' has results from a different config in "
                                           r".*\(config \(training\) changed\); run it too"):
        run_experiment(tiny_experiment, only=["clr_reset"], overrides=["training.epochs=2"], verbosity=0)


@pytest.mark.parametrize("value,rule", [(-1, "must be >= 0"), ("often", "must be a valid number"),
                                        (float("inf"), "must be a finite number")])
def test_checkpoint_every_refuses_what_no_run_could_use(tiny_experiment, value, rule):
    from kfold_clr.config import load_config
    from kfold_clr.errors import ConfigError

    tiny_experiment["execution"] = {"checkpoint_every": value}
    with pytest.raises(ConfigError, match=f"execution.checkpoint_every: .* {rule}"):
        load_config(tiny_experiment)
    tiny_experiment["execution"] = {}
    assert load_config(tiny_experiment).execution.checkpoint_every == 60.0


# ----------------------------------------------------------------------------- predictions of a fold
SNAPSHOTS = {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 3,
             "snapshots": {"keep": 2, "save_weights": True}}


def _specs(experiment, strategies):
    from kfold_clr.planning.preflight import prepare
    from kfold_clr.training.fold_plans import fold_spec, plan_folds
    from kfold_clr.training.trainer import prepare_fold

    experiment["strategies"] = strategies
    experiment["training"]["epochs"] = 3
    config, dataset, splits, _ = prepare(experiment)
    plans = [plan for name in config.strategies
             for plan in plan_folds(name, config.strategies[name], splits[:2], seed=config.seed,
                                    epochs=config.training.epochs, batch_size=config.training.batch_size)]
    data = {split.key: prepare_fold(dataset, split, config.data) for split in splits[:2]}
    return config, dataset, [fold_spec(config, plan) for plan in plans], data


def _predict(config, dataset, plan, weights, x):
    from kfold_clr.training.trainer import initial_model

    model = initial_model(config, dataset, plan, x.shape[1:])
    model.set_weights(weights)
    return model.predict(x, verbose=0)


def _check(config, dataset, spec, data, record, snapshots):
    """The payload against `model.predict` of the record's final weights (and of its snapshots)."""
    payload, split = record["predictions"], spec.plan.split
    x_val = data[spec.key][2]
    assert payload["rows"].dtype == np.int64 and payload["rows"].tolist() == split.val.tolist()
    assert payload["output"].dtype == np.float32 and payload["output"].shape == (len(split.val), dataset.n_outputs)
    expected = _predict(config, dataset, spec.plan, record["weights"], x_val)
    if dataset.task == "classification":
        assert payload["y_true"].tolist() == dataset.y[split.val].tolist()
        assert payload["output"].argmax(1).tolist() == expected.argmax(1).tolist()
        np.testing.assert_allclose(payload["output"], expected, atol=1e-5)
    else:  # the target's own units: the fold preprocessor's standardisation undone
        train = dataset.y[split.train]
        np.testing.assert_allclose(payload["y_true"], dataset.y[split.val])
        np.testing.assert_allclose(payload["output"], expected * train.std() + train.mean(), rtol=1e-5, atol=1e-4)
    assert "files" not in payload
    if snapshots is None:
        assert "snapshot_output" not in payload
    else:
        members = [_predict(config, dataset, spec.plan, weights, x_val) for weights in snapshots]
        assert members
        mean = np.mean(members, axis=0)
        if dataset.task == "regression":
            mean = mean * dataset.y[split.train].std() + dataset.y[split.train].mean()
        np.testing.assert_allclose(payload["snapshot_output"], mean, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("fused", [False, True], ids=["sequential", "fused"])
def test_every_fold_record_carries_its_validation_predictions(tiny_experiment, task, fused):
    from kfold_clr.training.fused import train_fused
    from kfold_clr.training.trainer import train_fold

    if task == "regression":
        tiny_experiment["data"] = {"source": "synthetic", "name": "regression",
                                   "params": {"n_samples": 60, "n_features": 3, "noise": 5.0}}
        tiny_experiment["cv"]["splitter"] = "kfold"
    strategies = {"constant": {"schedule": "constant", "lr": 0.01}, "snapshots": SNAPSHOTS}
    config, dataset, specs, data = _specs(tiny_experiment, strategies)
    saved = {}
    def store(plan, weights):
        saved[(plan.strategy, plan.key)] = weights
    if fused:
        records = train_fused(config, dataset, specs, fold_data=data, keep_weights=True, snapshot_store=store)
    else:
        records = [train_fold(config, dataset, spec, fold_data=data[spec.key], keep_weights=True,
                              snapshot_store=store) for spec in specs]
    assert len(records) == 4
    for spec, record in zip(specs, records):
        assert record["row"]["status"] == "ok"
        _check(config, dataset, spec, data, record, saved.get((spec.strategy, spec.key)))


def test_a_diverged_fold_has_no_predictions(tiny_experiment):
    from kfold_clr.training.trainer import train_fold

    config, dataset, specs, data = _specs(tiny_experiment, {"huge": {"schedule": "constant", "lr": 1000.0}})
    record = train_fold(config, dataset, specs[0], fold_data=data[specs[0].key])
    assert record["row"]["status"] == "diverged" and "predictions" not in record
