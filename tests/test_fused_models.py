"""Fused folds for any Keras model: each branch equals the sequential fold it stands for.

CNNs with batch norm and dropout, snapshots at each branch's own cycle ends, cyclical
momentum, early stopping per branch, regularised factory models, memory-bounded groups,
fused per-fold range tests, and the models that cannot be fused named.
"""

import copy
import sys
import textwrap

import numpy as np
import pytest

from kfold_clr.planning.preflight import prepare
from kfold_clr.training.fold_plans import fold_spec, plan_folds
from kfold_clr.training.fused import train_fused
from kfold_clr.training.trainer import PreparedFolds, train_fold

IMAGES = {
    "name": "images",
    "seed": 1,
    # 16 features as 4 x 4 x 1 images; 2 folds of 43 / 42 training rows: partial last batches.
    "data": {"source": "synthetic", "name": "classification", "image_shape": [4, 4, 1],
             "params": {"n_samples": 64, "n_features": 16, "n_informative": 8, "n_classes": 3}},
    "model": {"kind": "cnn", "filters": [4, 6], "kernel_size": 3, "hidden": [8], "dropout": 0.3,
              "batch_norm": True},
    "training": {"epochs": 2, "batch_size": 10, "optimizer": {"name": "sgd", "momentum": 0.9},
                 "train_scores": True},
    "cv": {"splitter": "stratified", "n_splits": 3},
    "execution": {"fused_folds": "auto"},
    "strategies": {
        "clr": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 4},
        "clr_continue": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.05, "step_size": 3,
                         "across_folds": "continue"},
    },
}
WEIGHT_TOLERANCE = 1e-5  # float32 weights after a few updates: summation order only


def _experiment(tmp_path, **changes):
    experiment = copy.deepcopy(IMAGES)
    experiment["output"] = {"dir": str(tmp_path / "results")}
    for path, value in changes.items():
        node = experiment
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return experiment


def _both_paths(experiment, keep_weights=True):
    """Every (strategy, fold) trained fused and one by one, with the same specs and data."""
    config, dataset, splits, _ = prepare(experiment)
    specs = [fold_spec(config, plan) for name in config.strategies
             for plan in plan_folds(name, config.strategies[name], splits, seed=config.seed,
                                    epochs=config.training.epochs, batch_size=config.training.batch_size)]
    data = PreparedFolds(dataset, splits, config.data)
    fused = train_fused(config, dataset, specs, fold_data=data, keep_weights=keep_weights)
    sequential = [train_fold(config, dataset, spec, fold_data=data[spec.key], keep_weights=keep_weights)
                  for spec in specs]
    return fused, sequential


def _assert_same_weights(fused, sequential, atol=WEIGHT_TOLERANCE):
    for a, b in zip(fused, sequential, strict=True):
        assert len(a["weights"]) == len(b["weights"])
        for got, want in zip(a["weights"], b["weights"]):
            np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5)


def test_a_cnn_with_batch_norm_and_dropout_trains_each_branch_as_its_sequential_fold(tmp_path):
    fused, sequential = _both_paths(_experiment(tmp_path))
    _assert_same_weights(fused, sequential)  # weights, moving statistics: Keras's own dropout masks
    for a, b in zip(fused, sequential):
        assert a["row"]["iterations"] == b["row"]["iterations"] == 10  # 5 batches a pass, the last partial
        for column in ("val_loss", "val_accuracy", "train_loss"):
            assert a["row"][column] == pytest.approx(b["row"][column], rel=1e-4, abs=1e-6)
        assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], rel=1e-4)


def test_snapshots_and_cyclical_momentum_follow_each_branchs_own_cycle(tmp_path):
    strategies = {
        "snap": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2, "snapshots": {"keep": 2},
                 "cycle_momentum": {"base_momentum": 0.8, "max_momentum": 0.95}},
        "snap_continue": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2,
                          "across_folds": "continue", "snapshots": {"keep": 3}},
    }
    experiment = _experiment(tmp_path, strategies=strategies, training__epochs=3,
                             training__optimizer={"name": "adam"})
    fused, sequential = _both_paths(experiment)
    _assert_same_weights(fused, sequential)
    for a, b in zip(fused, sequential):
        assert a["row"]["snapshot_iterations"] == b["row"]["snapshot_iterations"] != ""
        assert a["row"]["n_snapshots"] == b["row"]["n_snapshots"]
        assert a["row"]["snapshot_val_loss"] == pytest.approx(b["row"]["snapshot_val_loss"], rel=1e-4)
    offsets = {r["row"]["snapshot_iterations"] for r in fused if r["row"]["strategy"] == "snap_continue"}
    assert len(offsets) > 1  # continued folds reach their cycle ends at other updates


def test_early_stopping_stops_and_restores_each_branch_on_its_own(tmp_path):
    experiment = _experiment(tmp_path, training__epochs=8,
                             training__early_stopping={"monitor": "val_accuracy", "patience": 1},
                             strategies={"hot": {"schedule": "constant", "lr": 0.3},
                                         "calm": {"schedule": "constant", "lr": 0.02}})
    fused, sequential = _both_paths(experiment)
    lengths = [len(r["history"]) for r in fused]
    assert lengths == [len(r["history"]) for r in sequential]
    assert len(set(lengths)) > 1 and min(lengths) < 8  # branches stopped at different epochs
    _assert_same_weights(fused, sequential)  # the best epoch's weights, restored per branch
    for a, b in zip(fused, sequential):
        assert a["row"]["val_accuracy"] == pytest.approx(b["row"]["val_accuracy"], abs=1e-6)


@pytest.fixture
def model_module(tmp_path, monkeypatch):
    """A module of factories: a regularised functional model and one with its own train step."""
    (tmp_path / "my_models.py").write_text(textwrap.dedent('''
        import keras

        def regularised(input_shape, n_outputs, width=8):
            inputs = keras.Input(input_shape)
            x = keras.layers.Flatten()(inputs)
            x = keras.layers.Dense(width, activation="tanh", kernel_regularizer=keras.regularizers.l2(0.01))(x)
            x = keras.layers.LayerNormalization()(x)
            x = keras.layers.GaussianNoise(0.1)(x)
            return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(x))

        class OwnStep(keras.Model):
            def train_step(self, data):
                return super().train_step(data)

        def own_step(input_shape, n_outputs):
            inputs = keras.Input(input_shape)
            outputs = keras.layers.Dense(n_outputs, activation="softmax")(keras.layers.Flatten()(inputs))
            return OwnStep(inputs, outputs)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_models"
    sys.modules.pop("my_models", None)


def test_a_factory_model_with_regularisers_and_noise_matches_its_sequential_folds(tmp_path, model_module):
    experiment = _experiment(tmp_path, model={"factory": f"{model_module}:regularised", "params": {"width": 6}})
    fused, sequential = _both_paths(experiment)
    _assert_same_weights(fused, sequential)
    for a, b in zip(fused, sequential):  # the L2 penalty is part of the loss, as in Keras
        assert a["row"]["train_loss"] == pytest.approx(b["row"]["train_loss"], rel=1e-4)


def test_a_model_with_its_own_train_step_is_trained_fold_by_fold_and_true_refuses_it(tmp_path, model_module,
                                                                                      capsys):
    from kfold_clr.errors import ConfigError
    from kfold_clr.execution.experiment import run_experiment

    experiment = _experiment(tmp_path, model={"factory": f"{model_module}:own_step"})
    folds = run_experiment(experiment, verbosity=1).folds
    assert not folds["fused"].any() and (folds["status"] == "ok").all()
    assert "every fold trains one by one: OwnStep overrides train_step" in capsys.readouterr().err
    experiment["execution"]["fused_folds"] = True
    experiment["output"]["dir"] += "-true"
    with pytest.raises(ConfigError, match="execution.fused_folds: true, but the model cannot be fused "
                                          r"\(OwnStep overrides train_step"):
        run_experiment(experiment, verbosity=0)


def test_fused_groups_bound_the_branches_per_model_and_give_the_same_numbers(tmp_path):
    from kfold_clr.execution.experiment import run_experiment

    experiment = _experiment(tmp_path, execution={"fused_folds": True, "fused_group_size": 4})
    grouped = run_experiment(experiment, verbosity=0)
    experiment["execution"] = {"fused_folds": True}
    experiment["output"]["dir"] += "-whole"
    whole = run_experiment(experiment, verbosity=0)
    assert grouped.folds["fused"].all() and len(grouped.folds) == 6
    np.testing.assert_allclose(grouped.folds["val_loss"], whole.folds["val_loss"], rtol=1e-5)


def test_fused_group_size_is_what_fits_in_a_quarter_of_the_memory(tmp_path):
    import keras

    from kfold_clr.config import load_config
    from kfold_clr.data.memory import branch_bytes, fused_group_size

    config = load_config(_experiment(tmp_path))
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(100)])
    per_branch = branch_bytes(model, batch_size=10, optimizer=config.training.optimizer)
    assert per_branch >= 4 * 1700 * 4  # 1,700 weights: weights, gradients, a copy and a momentum slot
    assert fused_group_size(model, config, limit=40 * per_branch) == 10
    assert fused_group_size(model, config, limit=per_branch) == 1
    capped = config.model_copy(update={"execution": config.execution.model_copy(update={"fused_group_size": 3})})
    assert fused_group_size(model, capped, limit=40 * per_branch) == 3


def test_per_fold_range_tests_fused_give_the_range_tests_of_each_fold(tmp_path):
    from kfold_clr.errors import KfoldClrError
    from kfold_clr.planning.bounds import range_test_on_split, range_test_plan
    from kfold_clr.training.fused.range_tests import fused_range_tests

    experiment = _experiment(tmp_path, range_test={"min_lr": 1e-3, "max_lr": 30.0, "iterations": 30})
    config, dataset, splits, _ = prepare(experiment)
    plans = [range_test_plan(config, split) for split in splits]
    fused = fused_range_tests(config, dataset, plans, PreparedFolds(dataset, splits, config.data))
    for plan, result in zip(plans, fused):
        alone = range_test_on_split(config, dataset, plan)
        assert len(result.history) == len(alone.history)  # stopped at the same divergence, if any
        for column in ("lr", "loss", "accuracy", "smoothed_loss"):
            np.testing.assert_allclose(result.history[column], alone.history[column], rtol=1e-4, atol=1e-6,
                                       err_msg=column)
        assert list(result.history["used"]) == list(alone.history["used"])
        assert result.turned_up == alone.turned_up
        try:
            expected = alone.suggest().max_lr
        except KfoldClrError as error:  # an inconclusive curve is inconclusive on both paths
            with pytest.raises(type(error)):
                result.suggest()
        else:
            assert result.suggest().max_lr == pytest.approx(expected, rel=1e-6)


def test_a_run_fuses_its_per_fold_range_tests_and_saves_their_cost(tmp_path):
    import json

    from kfold_clr.execution.experiment import run_experiment

    experiment = _experiment(tmp_path, range_test={"min_lr": 1e-3, "max_lr": 30.0, "iterations": 30},
                             strategies={"tested": {"schedule": "clr", "bounds": "per_fold_range_test",
                                                    "step_size": 4}})
    results = run_experiment(experiment, verbosity=0)
    assert results.folds["fused"].all() and len(results.folds) == 3
    saved = [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "range_tests").glob("*.json"))]
    assert len(saved) == 3 and all(s["fused"] for s in saved)
    assert all(s["iterations"] == len(s["history"]) and s["seconds"] > 0 for s in saved)


def test_stacked_conv_kernels_run_as_one_grouped_convolution_and_unvectorisable_ops_are_named():
    import keras
    import tensorflow as tf

    from kfold_clr.config import OptimizerConfig
    from kfold_clr.training.fused import model_support
    from kfold_clr.training.fused.model import StackedModel
    from kfold_clr.training.fused.vectorize import looped_ops

    def model(*layers, shape=(8, 8, 1)):
        inputs = keras.Input(shape)
        x = inputs
        for layer in layers:
            x = layer(x)
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x)))

    loss = keras.losses.sparse_categorical_crossentropy
    images, labels = np.zeros((2, 8, 8, 1), "float32"), np.zeros(2, "int32")
    cnn = model(keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(), keras.layers.Dropout(0.2))
    found = []
    with looped_ops(found):
        states = [([v.numpy() for v in cnn.trainable_variables], [v.numpy() for v in cnn.non_trainable_variables])]
        stacked = StackedModel(cnn, states * 2, OptimizerConfig(), loss, [], [[0.1], [0.1]])
        stacked.traced_train_steps(tf.constant(images), tf.constant(labels))
    assert found and all("Random" in op for op in found)  # only dropout's masks loop over branches
    assert model_support(cnn, images, labels, loss) == (True, "")
    sequence = model(keras.layers.Conv1D(4, 3), keras.layers.LSTM(3), shape=(8, 8))
    assert model_support(sequence, np.zeros((2, 8, 8), "float32"), labels, loss) == (True, "")
    transposed = model(keras.layers.Conv2DTranspose(4, 3))
    assert model_support(transposed, images, labels, loss) == (
        False, "op Conv2DBackpropInput cannot be vectorised over branches")


def test_per_fold_range_tests_of_folds_with_other_sweep_lengths_run_in_groups_of_their_own(tmp_path):
    import json

    from kfold_clr.execution.experiment import run_experiment
    from kfold_clr.planning.bounds import range_test_on_split, range_test_plan

    # 70 rows in 3 folds: 46 / 47 / 47 training rows, 2 or 3 batches of 23, so 2 epochs are 4 or 6 updates.
    experiment = _experiment(tmp_path, data__params__n_samples=70, training__batch_size=23,
                             range_test={"min_lr": 1e-3, "max_lr": 30.0, "epochs": 2},
                             strategies={"tested": {"schedule": "clr", "bounds": "per_fold_range_test",
                                                    "step_size": 4}})
    experiment["cv"]["splitter"] = "kfold"
    run_experiment(experiment, verbosity=0)
    config, dataset, splits, _ = prepare(experiment)
    folder = tmp_path / "results" / "range_tests"
    lengths = set()
    for split in splits:
        saved = json.loads((folder / f"{split.key}.json").read_text())
        alone = range_test_on_split(config, dataset, range_test_plan(config, split)).history
        assert saved["iterations"] == len(saved["history"]) == len(alone)
        np.testing.assert_allclose([p["loss"] for p in saved["history"]], alone["loss"], rtol=1e-4)
        lengths.add(len(alone))
    assert lengths == {4, 6}
