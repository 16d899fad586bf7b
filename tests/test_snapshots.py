"""Snapshot ensembles: capture points at cycle ends, ensemble scoring, end to end."""

import copy

import keras
import numpy as np
import pandas as pd
import pytest

from kfold_clr.execution.experiment import run_experiment
from kfold_clr.schedules import CyclicalLearningRate
from kfold_clr.training.fold_plans import cycle_end_updates
from kfold_clr.training.trainer import SnapshotCollector, evaluate_ensemble


@pytest.mark.parametrize("up, down, offset", [(3, None, 0), (2, 5, 0), (4, None, 5), (3, 4, 11)])
def test_capture_points_are_the_cycle_ends(up, down, offset):
    schedule = CyclicalLearningRate(base_lr=0.01, max_lr=0.1, step_size=up, step_size_down=down,
                                    initial_step=offset)
    length = up + (down or up)
    ends = cycle_end_updates(schedule, 40)
    assert ends == [k for k in range(1, 41) if (offset + k) % length == 0]
    # After such an update the schedule itself is back at its low point: the optimizer's next
    # step (number k) gets base_lr, and the step before it was still above base_lr.
    lr = keras.ops.convert_to_numpy(schedule(np.arange(41)))
    ends = np.asarray(ends)
    assert ends.size >= 3
    np.testing.assert_allclose(lr[ends], 0.01, rtol=1e-6)
    assert np.all(lr[ends - 1] > 0.01 + 1e-6)  # off by one would capture one update early or late


def test_cosine_restart_cycle_ends():
    schedule = keras.optimizers.schedules.CosineDecayRestarts(0.1, first_decay_steps=4, t_mul=2.0)
    assert cycle_end_updates(schedule, 30) == [4, 12, 28]
    assert cycle_end_updates(0.01, 30) == []
    # Boundaries between steps (4, 4 + 5 = 9, 9 + 6.25 = 15.25): the cycle's last update is step 15,
    # so the count after it is 16 (rounding would capture one update early).
    uneven = keras.optimizers.schedules.CosineDecayRestarts(0.1, first_decay_steps=4, t_mul=1.25)
    assert cycle_end_updates(uneven, 16) == [4, 9, 16]
    lr = [float(uneven(step)) for step in range(17)]
    assert lr[15] < lr[14] and lr[16] > lr[15]  # step 15 is the low end, 16 restarts


def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    return model


def test_collector_captures_exactly_at_cycle_ends_during_fit():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    schedule = CyclicalLearningRate(base_lr=0.01, max_lr=0.1, step_size=2, step_size_down=3, initial_step=1)
    model = tiny_model()
    model.compile(keras.optimizers.SGD(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"])
    collector = SnapshotCollector(cycle_end_updates(schedule, 20), keep=2)
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[collector], shuffle=False)
    assert collector.captured_at == [4, 9, 14, 19]
    assert len(collector.snapshots) == 2


def test_ensemble_of_identical_snapshots_scores_like_the_single_model():
    x = np.random.default_rng(1).normal(size=(30, 3)).astype("float32")
    y = (x[:, 1] > 0).astype("int32")
    model = tiny_model()
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    single = model.evaluate(x, y, verbose=0, return_dict=True)
    weights = model.get_weights()
    ensemble = evaluate_ensemble(model, [weights, weights, weights], x, y)
    assert ensemble["accuracy"] == pytest.approx(single["accuracy"], abs=1e-7)
    assert ensemble["loss"] == pytest.approx(single["loss"], rel=1e-5)


def test_ensemble_averages_probabilities_and_restores_weights():
    x = np.random.default_rng(2).normal(size=(10, 3)).astype("float32")
    y = np.zeros(10, dtype="int32")
    model = tiny_model()
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    first = model.get_weights()
    second = [w * 0.5 for w in first]
    expected = (model.predict(x, verbose=0) + tiny_predict(model, second, x)) / 2
    model.set_weights(first)
    scores = evaluate_ensemble(model, [first, second], x, y)
    assert scores["loss"] == pytest.approx(float(np.mean(-np.log(expected[:, 0]))), rel=1e-5)
    for a, b in zip(model.get_weights(), first):
        np.testing.assert_array_equal(a, b)


def tiny_predict(model, weights, x):
    saved = model.get_weights()
    model.set_weights(weights)
    prediction = model.predict(x, verbose=0)
    model.set_weights(saved)
    return prediction


@pytest.mark.slow
def test_snapshot_columns_end_to_end_and_resume(tiny_experiment, tmp_path):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["training"]["epochs"] = 3
    experiment["strategies"] = {
        "clr": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2,
                "snapshots": {"keep": 2, "save_weights": True}},
        "cont": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2,
                 "across_folds": "continue", "snapshots": {"keep": 2}},
        "restarts": {"schedule": "cosine_restarts", "lr": 0.05, "cycle_epochs": 1, "snapshots": {"keep": 2}},
    }
    results = run_experiment(experiment, verbosity=0)
    folds = results.folds
    assert {"snapshot_val_accuracy", "snapshot_val_loss", "n_snapshots"} <= set(folds.columns)
    assert (folds["n_snapshots"] == 2).all() and folds["snapshot_val_accuracy"].notna().all()
    out = tmp_path / "results"
    with np.load(out / "folds" / "clr" / "r0_f0.snapshots.npz") as archive:
        assert len(archive.files) == 2 * 4  # two snapshots of a 4-array MLP
    assert not (out / "folds" / "cont" / "r0_f0.snapshots.npz").exists()
    comparison = pd.read_csv(out / "comparison.csv")
    assert "clr[snapshots]" in set(comparison["a"])
    again = run_experiment(experiment, verbosity=0).folds
    pd.testing.assert_frame_equal(folds, again)
