"""The snapshot ensemble is scored as Keras scores the model, regularisation penalty included (issue 22)."""

import copy
import sys
import textwrap

import numpy as np
import pytest

from kfold_clr.execution.experiment import run_experiment
from kfold_clr.training.trainer import evaluate_ensemble

L2 = 0.05


@pytest.fixture
def l2_module(tmp_path, monkeypatch):
    """A factory of a small MLP whose hidden kernel carries an L2 penalty."""
    (tmp_path / "l2_models.py").write_text(textwrap.dedent(f'''
        import keras

        def l2(input_shape, n_outputs):
            inputs = keras.Input(input_shape)
            x = keras.layers.Dense(8, activation="tanh",
                                   kernel_regularizer=keras.regularizers.L2({L2}))(inputs)
            return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(x))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "l2_models"
    sys.modules.pop("l2_models", None)


def test_an_ensemble_of_the_final_weights_scores_what_evaluate_scores_penalty_included(l2_module):
    import importlib

    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = importlib.import_module(l2_module).l2((5,), 2)
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    kernel = model.layers[1].kernel
    penalty = L2 * float(np.sum(keras.ops.convert_to_numpy(kernel) ** 2))
    assert penalty > 0.01  # large enough that leaving it out would show
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    weights = model.get_weights()
    scores = evaluate_ensemble(model, [weights], x, y)
    assert scores["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert scores["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-7)
    halved = [w * 0.5 for w in weights]  # two members: the mean of their penalties is added
    model.set_weights(halved)
    half_penalty = L2 * float(np.sum(keras.ops.convert_to_numpy(kernel) ** 2))
    model.set_weights(weights)
    mean = (model.predict(x, verbose=0) + _predict(model, halved, x)) / 2
    data_loss = float(np.mean(-np.log(mean[np.arange(len(y)), y])))
    assert evaluate_ensemble(model, [weights, halved], x, y)["loss"] == pytest.approx(
        data_loss + (penalty + half_penalty) / 2, rel=1e-5)


def _predict(model, weights, x):
    saved = model.get_weights()
    model.set_weights(weights)
    try:
        return model.predict(x, verbose=0)
    finally:
        model.set_weights(saved)


@pytest.mark.parametrize("fused", [False, True])
def test_one_snapshot_at_the_final_weights_scores_as_the_model_and_the_comparison_reads_equivalent(
        tiny_experiment, l2_module, fused):
    experiment = copy.deepcopy(tiny_experiment)
    experiment["model"] = {"factory": f"{l2_module}:l2"}
    experiment["training"]["metrics"] = ["accuracy"]
    # one cosine cycle over both epochs: its one snapshot is taken after the last update
    experiment["strategies"] = {"cosine": {"schedule": "cosine_restarts", "lr": 0.05, "cycle_epochs": 2,
                                           "snapshots": {"keep": 1}}}
    experiment["execution"] = {"fused_folds": fused}
    experiment["compare"] = {"rope": {"accuracy": 0.01, "loss": 0.01}}  # loss has no rope by default
    results = run_experiment(experiment, verbosity=0)
    folds = results.folds
    assert (folds["n_snapshots"] == 1).all() and (folds["fused"].astype(bool) == fused).all()
    np.testing.assert_allclose(folds["snapshot_val_loss"], folds["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(folds["snapshot_val_accuracy"], folds["val_accuracy"], atol=1e-7)
    comparison = results.comparison
    ensemble = comparison[comparison["a"] == "cosine[snapshots]"]
    assert set(ensemble["metric"]) == {"accuracy", "loss"}
    assert (ensemble["verdict"] == "practically equivalent").all()
