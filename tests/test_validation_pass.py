"""One validation pass per epoch gives Keras's scores bit for bit and the fold's predictions
(`kfold_clr.training.validation_pass`): no second pass over the validation rows, no number changed."""

import copy

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from helpers import TINY_EXPERIMENT
from kfold_clr.execution.experiment import run_experiment
from kfold_clr.training import fold_predictions, validation_pass

TIME = ("seconds", "started", "finished")


def _model(task, *, steps_per_execution=1):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((10, 10, 3))
    hidden = keras.layers.Conv2D(6, 3, activation="relu", kernel_regularizer="l2")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    hidden = keras.layers.Dropout(0.3)(keras.layers.Flatten()(hidden))
    if task == "classification":
        model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(hidden))
        model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"],
                      steps_per_execution=steps_per_execution)
    else:
        model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        model.compile("adam", "mse", metrics=["mae"], steps_per_execution=steps_per_execution)
    return model


@pytest.mark.parametrize("task,steps_per_execution", [("classification", 1), ("classification", 3),
                                                      ("regression", 2)])
def test_scores_and_outputs_are_evaluate_and_predict_bit_for_bit(task, steps_per_execution):
    rng = np.random.default_rng(0)
    x = rng.random((300, 10, 10, 3), dtype=np.float32)
    y = rng.integers(0, 5, 300) if task == "classification" else rng.standard_normal(300).astype(np.float32)
    model = _model(task, steps_per_execution=steps_per_execution)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    data = lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(64)  # noqa: E731 (a last batch of 44)
    assert validation_pass.supported(model)
    for _ in range(2):  # the second call reuses the traced step
        scores, outputs = validation_pass.score(model, data())
        assert scores == model.evaluate(data(), verbose=0, return_dict=True)
        assert list(scores) == sorted(scores)
        np.testing.assert_array_equal(outputs, fold_predictions.predict(model, x, batch_size=64))
        assert outputs.dtype == np.float32 and outputs.shape == (300, 5 if task == "classification" else 1)


def test_a_new_compile_traces_a_new_step():
    x, y = np.zeros((8, 10, 10, 3), np.float32), np.zeros(8, int)
    model = _model("classification")
    data = lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # noqa: E731
    validation_pass.score(model, data())
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy", "sparse_top_k_categorical_accuracy"])
    scores, _ = validation_pass.score(model, data())
    assert set(scores) == {"loss", "accuracy", "sparse_top_k_categorical_accuracy"}
    assert scores == model.evaluate(data(), verbose=0, return_dict=True)


class OwnTestStep(keras.Model):
    def test_step(self, data):
        return super().test_step(data)


def test_models_keras_validates_otherwise_are_left_to_keras():
    model = _model("classification")
    assert validation_pass.supported(model)
    inputs = keras.Input((3,))
    own = OwnTestStep(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    own.compile("sgd", "sparse_categorical_crossentropy")
    assert not validation_pass.supported(own)
    model.compile("sgd", "sparse_categorical_crossentropy", run_eagerly=True)
    assert not validation_pass.supported(model)


def _run(tmp_path, name, monkeypatch, *, one_pass, **training):
    experiment = copy.deepcopy(TINY_EXPERIMENT)
    experiment["training"].update(training)
    experiment["output"] = {"dir": str(tmp_path / name)}
    calls = []
    with monkeypatch.context() as patch:
        if not one_pass:  # Keras's validation_data and a second pass for the predictions, as before
            patch.setattr(validation_pass, "supported", lambda model: False)
        real = fold_predictions.predict
        patch.setattr(fold_predictions, "predict", lambda *a, **k: calls.append(1) or real(*a, **k))
        results = run_experiment(experiment, verbosity=0)
    return results.directory, len(calls)


@pytest.mark.parametrize("training", [{}, {"early_stopping": {"patience": 1, "restore_best_weights": True}},
                                      {"early_stopping": {"patience": 1, "restore_best_weights": False}}],
                         ids=["plain", "restore_best", "no_restore"])
def test_a_run_keeps_every_number_and_skips_the_second_pass(tmp_path, monkeypatch, training):
    training = {**training, "epochs": 4} if training else training
    before, predicted_before = _run(tmp_path, "two_passes", monkeypatch, one_pass=False, **training)
    after, predicted_after = _run(tmp_path, "one_pass", monkeypatch, one_pass=True, **training)
    folds = pd.read_csv(before / "folds.csv")
    assert predicted_before == len(folds) and (folds["status"] == "ok").all()
    assert predicted_after == 0  # the last epoch's pass (or the restored weights' own pass) gave them
    for name in ("folds.csv", "history.csv", "predictions.csv", "summary.csv", "comparison.csv"):
        old, new = pd.read_csv(before / name), pd.read_csv(after / name)
        assert list(old.columns) == list(new.columns), name
        keep = [c for c in old.columns if not any(t in c for t in TIME)]
        pd.testing.assert_frame_equal(old[keep], new[keep], check_exact=True, obj=name)


def test_the_traced_step_neither_keeps_the_model_alive_nor_goes_into_its_saved_file(tmp_path):
    import gc
    import weakref

    x, y = np.random.default_rng(1).random((8, 10, 10, 3), dtype=np.float32), np.arange(8) % 5
    model = _model("classification")
    validation_pass.score(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert len(loaded.weights) == len(model.weights)
    for got, want in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want))
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # the cache holds models weakly and the step only a weak reference
