"""`fused_folds: auto` measures which path is faster: a few timed steps of the fused model against
one fold's, with each path's trace and a fold's start-up, predict both paths' training time on
runs large enough to ask; `true` / `false` never measure."""

import copy
import re

import numpy as np
import pandas as pd
import pytest

from helpers import TINY_EXPERIMENT
from kfold_clr.training.fused import measure
from kfold_clr.training.fused.measure import Timing

TIME_COLUMNS = ("fused", "seconds", "started", "finished", "time")  # the path taken and its clock


def _experiment(tmp_path, name, **execution):
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["strategies"].pop("clr_continue")
    experiment["execution"] = {"fused_folds": "auto", **execution}
    experiment["output"] = {"dir": str(tmp_path / name)}
    return experiment


def _numbers(folds):
    """folds.csv without the path taken and its times: what must not depend on the path."""
    return folds[[c for c in folds.columns if not any(word in c for word in TIME_COLUMNS)]]


@pytest.fixture
def timed(monkeypatch):
    """Every run measures (no size floor); `time_paths` reports `timed.fused_step` for the fused step and
    10 ms for one fold's, and records the branches it was asked about."""
    calls = []

    def fake(config, dataset, input_shape, branches, *, run_steps=1, **_):
        calls.append(branches)
        fake.run_steps = run_steps
        return Timing(fused_step=fake.fused_step, fold_step=0.010, branches=branches, steps=run_steps)

    fake.calls, fake.fused_step = calls, 0.0
    monkeypatch.setattr(measure, "MEASURE_ABOVE", 0.0)
    monkeypatch.setattr(measure, "time_paths", fake)
    return fake


def test_timing_predicts_both_paths_from_steps_traces_and_fold_start_up():
    assert Timing(fused_step=0.040, fold_step=0.010, branches=4).fused_faster  # equal: fused
    assert not Timing(fused_step=0.041, fold_step=0.010, branches=4).fused_faster
    # A long trace of the stacked model decides a short run, not a long one.
    short = Timing(fused_step=0.030, fold_step=0.010, branches=4, steps=10, fused_trace=2.0, fold_trace=0.5)
    assert short.fused_seconds == pytest.approx(2.3) and short.sequential_seconds == pytest.approx(0.9)
    assert not short.fused_faster
    long = Timing(fused_step=0.030, fold_step=0.010, branches=4, steps=1000, fused_trace=2.0, fold_trace=0.5)
    assert long.fused_faster
    # What every fold pays to start counts once per fold.
    assert not Timing(fused_step=0.05, fold_step=0.010, branches=4, steps=10).fused_faster
    started = Timing(fused_step=0.05, fold_step=0.010, branches=4, steps=10, fold_start=0.1)
    assert started.sequential_seconds == pytest.approx(0.8) and started.fused_faster
    note = Timing(fused_step=0.041, fold_step=0.012, branches=10, steps=2000, fused_trace=3.0, fold_trace=1.0).note()
    assert note == ("measured 41 ms per fused step of 10 folds vs 12 ms per step of one fold; predicted 85 s fused "
                    "vs 241 s fold by fold for 2,000 steps: training fused")
    assert Timing(fused_step=0.25, fold_step=0.012, branches=10).note().endswith(": training fold by fold")


def test_auto_trains_fold_by_fold_when_fused_measures_slower_with_the_same_numbers(tmp_path, timed, capsys):
    from kfold_clr.execution.experiment import run_experiment
    from kfold_clr.report import build_report

    timed.fused_step = 1.0  # 1 s per fused step vs 6 x 10 ms fold by fold
    auto = run_experiment(_experiment(tmp_path, "auto"), verbosity=1)
    assert timed.calls == [6]  # once per run, for the first group: 3 folds x 2 strategies
    assert not auto.folds["fused"].any() and (auto.folds["status"] == "ok").all()
    steps = timed.run_steps
    assert steps > 1  # the run's updates per fold: its epochs x batches
    assert (f"fused folds: measured 1000 ms per fused step of 6 folds vs 10 ms per step of one fold; predicted "
            f"{steps} s fused vs {0.06 * steps:.2g} s fold by fold for {steps} steps: training fold by fold"
            ) in " ".join(capsys.readouterr().err.split())
    sequential = run_experiment(_experiment(tmp_path, "false", fused_folds=False), verbosity=0)
    pd.testing.assert_frame_equal(_numbers(auto.folds), _numbers(sequential.folds))
    text = build_report(auto.directory).read_text()
    assert "sequential, fold by fold (execution.fused_folds: auto); auto: the faster path where a few steps" \
        in " ".join(text.split())


def test_auto_trains_fused_when_fused_measures_faster(tmp_path, timed, capsys):
    from kfold_clr.execution.experiment import run_experiment

    timed.fused_step = 0.030  # 30 ms for 6 folds vs 60 ms one by one
    folds = run_experiment(_experiment(tmp_path, "auto"), verbosity=1).folds
    assert timed.calls == [6]
    assert folds["fused"].all() and (folds["status"] == "ok").all()
    assert re.search(r"predicted [\d.]+ s fused vs [\d.]+ s fold by fold for \d+ steps: training fused",
                     " ".join(capsys.readouterr().err.split()))


@pytest.mark.parametrize("setting", [True, False])
def test_true_and_false_never_measure(tmp_path, timed, setting):
    from kfold_clr.execution.experiment import run_experiment

    timed.fused_step = 1.0  # would choose fold by fold under auto
    folds = run_experiment(_experiment(tmp_path, "run", fused_folds=setting), verbosity=0).folds
    assert timed.calls == []
    assert folds["fused"].all() if setting else not folds["fused"].any()


def test_a_group_of_one_branch_and_a_tiny_run_never_measure(tmp_path, timed, monkeypatch):
    from kfold_clr.execution.experiment import run_experiment

    timed.fused_step = 1.0
    single = _experiment(tmp_path, "single", fused_group_size=1)
    run_experiment(single, verbosity=0)
    assert timed.calls == []  # one branch per fused model: nothing to compare
    monkeypatch.setattr(measure, "MEASURE_ABOVE", 1e9)  # the default floor: a tiny run is not timed
    folds = run_experiment(_experiment(tmp_path, "tiny"), verbosity=0).folds
    assert timed.calls == [] and folds["fused"].all()


def test_the_real_measurement_changes_no_number(tmp_path, monkeypatch):
    """The timed steps leave every random state as it was: folds.csv is the same with and without them."""
    from kfold_clr.execution.experiment import run_experiment

    real, timings = measure.time_paths, []

    def measured_then_fused(*args, **kwargs):
        timings.append(real(*args, **kwargs))
        return Timing(fused_step=0.0, fold_step=timings[-1].fold_step, branches=timings[-1].branches)

    monkeypatch.setattr(measure, "MEASURE_ABOVE", 0.0)
    monkeypatch.setattr(measure, "time_paths", measured_then_fused)
    experiment = _experiment(tmp_path, "measured")
    experiment["model"]["dropout"] = 0.2  # random masks: would show a moved random state
    with_measure = run_experiment(experiment, verbosity=0).folds
    assert len(timings) == 1 and timings[0].fused_step > 0 and timings[0].fold_step > 0
    monkeypatch.setattr(measure, "MEASURE_ABOVE", np.inf)
    experiment["output"]["dir"] = str(tmp_path / "unmeasured")
    without = run_experiment(experiment, verbosity=0).folds
    assert len(timings) == 1 and with_measure["fused"].all()
    pd.testing.assert_frame_equal(_numbers(with_measure), _numbers(without))


def test_a_resumed_run_keeps_the_path_of_its_saved_folds_instead_of_measuring_again(tmp_path, timed):
    """A new measurement could choose the other path, whose fingerprint would refuse the saved folds."""
    from kfold_clr.execution.experiment import run_experiment
    from kfold_clr.planning import jobs
    from kfold_clr.planning.preflight import prepare
    from kfold_clr.storage.store import ResultsStore
    from kfold_clr.training.fold_plans import plan_folds

    timed.fused_step = 1.0
    experiment = _experiment(tmp_path, "auto")
    run_experiment(experiment, verbosity=0)
    config, dataset, splits, _ = prepare(experiment)
    plans = {name: plan_folds(name, strategy, splits, seed=config.seed, epochs=config.training.epochs,
                              batch_size=config.training.batch_size) for name, strategy in config.strategies.items()}
    store = ResultsStore(config.output_dir)
    assert jobs.saved_fused_path(config, dataset, store, plans) is False
    assert jobs.saved_fused_path(config, dataset, ResultsStore(tmp_path / "empty"), plans) is None
    timed.calls.clear()
    timed.fused_step = 0.0  # would now choose fused
    kept = jobs.fusion_groups(config, dataset, n_folds=len(splits), keep=False)
    assert not kept.strategies and "as the saved folds of this run were" in kept.notes[-1]
    assert jobs.fusion_groups(config, dataset, n_folds=len(splits), keep=True).strategies == set(config.strategies)
    assert timed.calls == []
    assert jobs.fusion_groups(config, dataset, n_folds=len(splits)).strategies == set(config.strategies)
    assert timed.calls == [6]
