"""Checkpoints end to end: a run stopped mid-job resumes from its checkpoint and ends with the numbers
of an uninterrupted run (fused and sequential, with snapshots, early stopping and `continue`)."""

import copy
import os
import pathlib
import signal

import numpy as np
import pandas as pd
import pytest

from helpers import TINY_EXPERIMENT
from kfold_clr.execution.experiment import run_experiment
from kfold_clr.process import interrupt
from kfold_clr.storage import checkpoints

pytestmark = pytest.mark.slow
TIMING = {"fit_seconds", "job_seconds"}


def _experiment(tiny_experiment, *, fused, every):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["training"].update(epochs=6, early_stopping={"monitor": "val_loss", "patience": 2,
                                                            "restore_best_weights": True})
    experiment["model"]["dropout"] = 0.2  # dropout masks (the seed generators' state) must go on exactly
    experiment["cv"]["n_splits"] = 2  # still a chain of folds, at two thirds of the cost
    experiment["execution"] = {"fused_folds": fused, "checkpoint_every": every}
    snapshots = {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 3, "snapshots": {"keep": 2}}
    if fused:
        experiment["strategies"] = {"constant": experiment["strategies"]["constant"], "snapshots": snapshots}
    else:  # a carry chain (`continue`): its finished folds' records are part of the checkpoint
        experiment["strategies"] = {"chain": {**snapshots, "across_folds": "continue", "carry_weights": True}}
    return experiment


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """`reference(fused)`: (results folder, epoch ends) of the uninterrupted run, run once per module."""
    runs = {}

    def reference(fused):
        if fused not in runs:
            experiment = _experiment(copy.deepcopy(TINY_EXPERIMENT), fused=fused, every=0)
            experiment["output"] = {"dir": str(tmp_path_factory.mktemp("reference") / "results")}
            with pytest.MonkeyPatch.context() as patch:
                epochs = _count_epochs(patch)
                run_experiment(experiment, verbosity=0)
            runs[fused] = experiment["output"]["dir"], len(epochs)
        return runs[fused]

    return reference


def _tables(directory):
    directory = pathlib.Path(directory)
    folds = pd.read_csv(directory / "folds.csv")
    return folds.drop(columns=[c for c in folds if c in TIMING]), pd.read_csv(directory / "history.csv")


def _assert_same_numbers(reference, resumed):
    for expected, got in zip(_tables(reference), _tables(resumed)):
        assert list(expected.columns) == list(got.columns) and len(expected) == len(got)
        numbers = expected.select_dtypes("number").columns
        assert len(numbers) > 5
        difference = np.nanmax(np.abs(expected[numbers].to_numpy(float) - got[numbers].to_numpy(float)))
        assert difference <= 1e-6
        assert np.array_equal(expected[numbers].isna(), got[numbers].isna())
        others = [c for c in expected if c not in numbers]
        assert expected[others].fillna("").astype(str).equals(got[others].fillna("").astype(str))


def _count_epochs(monkeypatch):
    """How many epoch ends the checkpointer sees (every branch's epoch counts once per job)."""
    calls, original = [], checkpoints.Checkpointer.epoch_end

    def epoch_end(self, gather, *, stopping=False):
        calls.append(1)
        return original(self, gather, stopping=stopping)

    monkeypatch.setattr(checkpoints.Checkpointer, "epoch_end", epoch_end)
    return calls


def _stop_at(monkeypatch, number, how):
    """At the `number`-th epoch end: a SIGTERM (held to the epoch's end, which saves first) or a hard
    stop before the checkpoint of that epoch (`KeyboardInterrupt` raised there: as a kill, it saves nothing)."""
    calls, original = [], checkpoints.Checkpointer.epoch_end

    def epoch_end(self, gather, *, stopping=False):
        calls.append(1)
        if len(calls) == number:
            if how == "hard":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, gather, stopping=stopping)

    monkeypatch.setattr(checkpoints.Checkpointer, "epoch_end", epoch_end)


@pytest.mark.parametrize("fused,every,how", [(True, 3600, "signal"), (True, 1e-9, "hard"),
                                              (False, 3600, "signal"), (False, 1e-9, "hard")])
def test_a_stopped_run_resumes_its_job_and_ends_with_the_uninterrupted_numbers(tiny_experiment, monkeypatch,
                                                                                reference_runs, fused, every, how):
    reference, total = reference_runs(fused)

    experiment = _experiment(tiny_experiment, fused=fused, every=every)
    out = pathlib.Path(experiment["output"]["dir"])
    with monkeypatch.context() as patch:
        _stop_at(patch, total // 2 + 1, how)
        with pytest.raises(KeyboardInterrupt) as stopped:
            run_experiment(experiment, verbosity=0)
    if how == "signal":
        assert isinstance(stopped.value, interrupt.Interrupted) and stopped.value.signum == signal.SIGTERM
    saved = list((out / "checkpoints").glob("*.ckpt.npz"))
    assert len(saved) == 1 and len(saved[0].stem.split(".")[0]) == 16

    with monkeypatch.context() as patch:
        resumed = _count_epochs(patch)
        run_experiment(experiment, verbosity=0)
    # resumed after the last checkpoint: the epoch stopped hard is trained again, a saved one is not
    assert len(resumed) == total - total // 2 - (1 if how == "signal" else 0)
    _assert_same_numbers(reference, out)
    assert not list((out / "checkpoints").glob("*"))  # gone with its job's records


def test_a_changed_config_never_resumes_an_older_checkpoint(tiny_experiment, monkeypatch):
    experiment = _experiment(tiny_experiment, fused=True, every=3600)
    out = pathlib.Path(experiment["output"]["dir"])
    with monkeypatch.context() as patch:
        _stop_at(patch, 3, "signal")
        with pytest.raises(KeyboardInterrupt):
            run_experiment(experiment, verbosity=0)
    old = list((out / "checkpoints").glob("*.ckpt.npz"))
    with monkeypatch.context() as patch:
        epochs = _count_epochs(patch)
        run_experiment(experiment, overrides=["training.batch_size=8"], verbosity=0)
    assert len(epochs) >= 3  # trained from the first epoch
    assert [path.exists() for path in old] == [True]  # another job's: left for --fresh
    run_experiment(experiment, overrides=["training.batch_size=8"], resume=False, verbosity=0)
    assert not list((out / "checkpoints").glob("*"))


def test_fresh_never_resumes_from_a_checkpoint(tiny_experiment, monkeypatch, reference_runs):
    experiment = _experiment(tiny_experiment, fused=True, every=3600)
    with monkeypatch.context() as patch:
        _stop_at(patch, 3, "signal")
        with pytest.raises(KeyboardInterrupt):
            run_experiment(experiment, verbosity=0)
    with monkeypatch.context() as patch:
        epochs = _count_epochs(patch)
        run_experiment(experiment, only=["constant", "snapshots"], resume=False, verbosity=0)
    _, total = reference_runs(True)  # the same experiment, uninterrupted
    assert len(epochs) == total


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "sequential"])
def test_a_run_stopped_at_its_very_last_epoch_end_resumes_without_training_again(tiny_experiment, monkeypatch,
                                                                                 reference_runs, fused):
    reference, total = reference_runs(fused)
    experiment = _experiment(tiny_experiment, fused=fused, every=3600)
    with monkeypatch.context() as patch:
        _stop_at(patch, total, "signal")
        with pytest.raises(interrupt.Interrupted):
            run_experiment(experiment, verbosity=0)
    with monkeypatch.context() as patch:
        resumed = _count_epochs(patch)
        run_experiment(experiment, verbosity=0)
    assert not resumed  # the saved state had ended: only the final scores were left to compute
    _assert_same_numbers(reference, experiment["output"]["dir"])
