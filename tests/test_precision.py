"""`training.precision` (issue 24 item 7): Keras's mixed-precision policy per run, float32 outputs,
fingerprints unchanged for float32 configs, the global policy put back after every run."""

import copy
import math

import keras
import numpy as np
import pytest

from kfold_clr.cli.main import main
from kfold_clr.config import load_config
from kfold_clr.errors import ConfigError
from kfold_clr.storage.provenance import fingerprint
from kfold_clr.training import models

POLICIES_SEEN = []  # dtype policies `recording_model` was built under (this process)


def recording_model(input_shape, n_outputs, fail_when_mixed=False, record_to=None):
    """A factory (imported as "test_precision:recording_model") that notes the policy it is built
    under (in `POLICIES_SEEN`, and in the file `record_to` when given: a worker process's)."""
    policy = keras.config.dtype_policy().name
    POLICIES_SEEN.append(policy)
    if record_to is not None:
        with open(record_to, "a") as seen:
            seen.write(policy + "\n")
    if fail_when_mixed and policy != "float32":
        raise ConfigError("model.factory: failing on purpose inside the run")
    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(hidden))


def _digits_experiment(tmp_path, precision, **training):
    return {
        "name": "precision", "seed": 1,
        "data": {"source": "sklearn", "name": "digits"},
        "model": {"kind": "mlp", "hidden": [16]},
        "training": {"epochs": 2, "batch_size": 64, "precision": precision, **training},
        "cv": {"splitter": "stratified", "n_splits": 2},
        "range_test": {"iterations": 30, "min_lr": 1.0e-3, "max_lr": 3.0},
        "execution": {"fused_folds": "auto"},
        "strategies": {"constant": {"schedule": "constant", "lr": 0.05},
                       "clr": {"schedule": "clr", "bounds": "shared_range_test", "step_size": 5}},
        "output": {"dir": str(tmp_path / "results")},
    }


def _assert_policy_restored():
    assert keras.config.dtype_policy().name == "float32"
    assert models._precision == "float32"


# ----------------------------------------------------------------------------- config and fingerprints
def test_mixed_resolves_to_bfloat16_on_a_cpu_and_enters_the_training_dump():
    config = load_config("experiments/digits-clr.yaml", overrides=["training.precision=mixed"])
    assert config.training.precision == "mixed_bfloat16"  # this machine has no GPU
    assert config.to_dict()["training"]["precision"] == "mixed_bfloat16"
    default = load_config("experiments/digits-clr.yaml")
    assert fingerprint(config.training.fingerprint_dump()) != fingerprint(default.training.fingerprint_dump())


def test_float32_configs_keep_the_fingerprint_they_had_before_precision_existed():
    # Hash of the example's `training` section as computed before `precision` (and `train_scores`,
    # which the example sets to what those versions did) were added.
    default = load_config("experiments/digits-clr.yaml")
    assert "precision" not in default.to_dict()["training"]
    assert fingerprint(default.training.fingerprint_dump()) == "7474363237cfa43e"
    explicit = load_config("experiments/digits-clr.yaml", overrides=["training.precision=float32"])
    assert explicit.training.fingerprint_dump() == default.training.fingerprint_dump()


def test_strategy_fingerprints_differ_between_float32_and_mixed(tmp_path):
    from kfold_clr.planning.preflight import prepare
    from kfold_clr.storage.provenance import strategy_fingerprint

    prints = {}
    for precision in ("float32", "mixed"):
        config, dataset, _, _ = prepare(_digits_experiment(tmp_path, precision))
        prints[precision] = strategy_fingerprint(config, dataset, "constant")
    assert prints["float32"] != prints["mixed"]


def test_an_unknown_precision_is_exit_2_naming_key_value_and_choices(write_yaml, tmp_path, capsys):
    path = write_yaml(_digits_experiment(tmp_path, "half"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for text in ("training.precision", "'half'", "float32", "mixed", "mixed_float16", "mixed_bfloat16"):
        assert text in err


def test_fused_folds_true_refuses_mixed_precision_in_one_line(write_yaml, tmp_path, capsys):
    experiment = _digits_experiment(tmp_path, "mixed_bfloat16")
    experiment["execution"]["fused_folds"] = True
    del experiment["strategies"]["clr"]
    assert main(["validate", str(write_yaml(experiment))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "training.precision 'mixed_bfloat16'" in err


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_models_compute_in_bfloat16_with_float32_weights_and_outputs(kind):
    config = load_config({"name": "m", "data": {"source": "sklearn", "name": "digits", "image_shape": [8, 8, 1]},
                          "model": {"kind": kind, "hidden": [8], "filters": [4]},
                          "strategies": {"c": {"schedule": "constant", "lr": 0.1}}})
    with models.precision_policy("mixed_bfloat16"):
        model = models.build_model(config.model, input_shape=(8, 8, 1), n_outputs=10, task="classification")
    _assert_policy_restored()
    computing = [layer for layer in model.layers if layer.weights]
    assert computing and all(layer.compute_dtype == "bfloat16" for layer in computing)
    assert all(weight.dtype == "float32" for weight in model.weights)
    prediction = model(np.zeros((2, 8, 8, 1), dtype="float32"))
    assert keras.backend.standardize_dtype(prediction.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(prediction).sum(axis=1), 1.0, rtol=1e-6)


def test_a_factory_model_gets_float32_outputs_under_mixed_precision():
    config = load_config({"name": "m", "data": {"source": "sklearn", "name": "digits"},
                          "model": {"factory": "test_precision:recording_model"},
                          "strategies": {"c": {"schedule": "constant", "lr": 0.1}}})
    with models.precision_policy("mixed_bfloat16"):
        model = models.build_model(config.model, input_shape=(64,), n_outputs=10, task="classification")
    assert model.layers[1].compute_dtype == "bfloat16"
    assert keras.backend.standardize_dtype(model.outputs[0].dtype) == "float32"


def _float16_model(learning_rate):
    """The default MLP for digits built under mixed_float16 and compiled (Keras adds loss scaling)."""
    config = load_config({"name": "m", "data": {"source": "sklearn", "name": "digits"},
                          "strategies": {"c": {"schedule": "constant", "lr": 0.1}}})
    with models.precision_policy("mixed_float16"):
        model = models.build_model(config.model, input_shape=(64,), n_outputs=10, task="classification")
    models.compile_model(model, models.make_optimizer(config.training.optimizer, learning_rate),
                         loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_float16_compiles_with_loss_scaling_and_a_reset_restores_the_scale():
    model = _float16_model(0.1)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = np.random.default_rng(0).normal(size=(32, 64)).astype("float32"), np.arange(32) % 10
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    optimizer.dynamic_scale.assign(4.0)
    models.reset_optimizer(optimizer)
    assert float(optimizer.dynamic_scale.numpy()) == optimizer.initial_scale
    assert int(optimizer.iterations.numpy()) == 0
    assert all(not np.any(v.numpy()) for v in optimizer.inner_optimizer.variables)


def test_the_policy_is_put_back_when_the_block_raises():
    with pytest.raises(RuntimeError), models.precision_policy("mixed_bfloat16"):
        assert models._precision == "mixed_bfloat16"
        raise RuntimeError("boom")
    _assert_policy_restored()


def test_a_pooled_model_is_not_reused_under_another_policy(monkeypatch):
    """A worker process (Ray keeps them across runs) keeps its compiled model between jobs; the
    pool keys on the policy, so a model compiled in float32 never trains a bfloat16 run."""
    from types import SimpleNamespace

    from kfold_clr.training import model_pool

    built = []
    monkeypatch.setattr(model_pool, "build_model", lambda *a, **k: built.append(models.current_precision()) or object())
    monkeypatch.setattr(model_pool, "compile_model", lambda *a, **k: None)
    monkeypatch.setattr(model_pool, "make_optimizer", lambda *a, **k: None)
    monkeypatch.setattr(model_pool, "LearningRateTable", lambda capacity: SimpleNamespace(capacity=capacity))
    pool = model_pool.ModelPool()
    config = SimpleNamespace(model=SimpleNamespace(model_dump_json=lambda: "{}"))
    spec = SimpleNamespace(optimizer=SimpleNamespace(model_dump_json=lambda: "{}"), loss="mse", metrics=(),
                           plan=SimpleNamespace(iterations=10))
    dataset = SimpleNamespace(n_outputs=2, task="classification")

    def pooled():
        return pool.model(config, dataset, spec, (4,), 1)[0]

    with models.precision_policy("float32"):
        first = pooled()
        assert pooled() is first  # same policy: kept
    with models.precision_policy("mixed_bfloat16"):
        second = pooled()
        assert second is not first and pooled() is second
    with models.precision_policy("float32"):
        assert pooled() is first  # the float32 model, kept beside the bfloat16 one
    assert built == ["float32", "mixed_bfloat16"]


def test_fused_support_names_the_precision():
    from kfold_clr.training.fused import fused_support

    config = load_config({"name": "m", "data": {"source": "sklearn", "name": "digits"},
                          "training": {"precision": "mixed_bfloat16"},
                          "strategies": {"c": {"schedule": "constant", "lr": 0.1}}})
    ok, reason = fused_support(config, ["c"])
    assert not ok and "training.precision 'mixed_bfloat16'" in reason
    assert fused_support(config.with_training(precision="float32"), ["c"]) == (True, "")


def test_a_range_test_on_a_float16_model_sweeps_and_puts_everything_back():
    from kfold_clr.range_test import lr_range_test

    model = _float16_model(0.01)
    x, y = np.random.default_rng(0).normal(size=(64, 64)).astype("float32"), np.arange(64) % 10
    model.optimizer.build(model.trainable_variables)
    before = [v.numpy().copy() for v in [*model.variables, *model.optimizer.variables]]
    result = lr_range_test(model, x, y, min_lr=1e-4, max_lr=1e-1, iterations=12, batch_size=16)
    history = result.history
    np.testing.assert_allclose(history["lr"], np.geomspace(1e-4, 1e-1, 12), rtol=1e-5)
    assert np.isfinite(history["loss"]).all()
    after = [v.numpy() for v in [*model.variables, *model.optimizer.variables]]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.01)


# ----------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_a_mixed_run_on_cpu_trains_in_bfloat16_and_leaves_float32_behind(tmp_path, capsys):
    from kfold_clr import run_experiment

    experiment = _digits_experiment(tmp_path, "mixed")
    experiment["model"] = {"factory": "test_precision:recording_model"}
    POLICIES_SEEN.clear()
    results = run_experiment(experiment, verbosity=1)
    _assert_policy_restored()
    # preflight's check builds in float32; the range test and every fold under the run's policy
    assert POLICIES_SEEN[0] == "float32" and set(POLICIES_SEEN[1:]) == {"mixed_bfloat16"}
    assert len(POLICIES_SEEN) >= 1 + 1 + 2
    folds = results.folds
    assert list(folds["status"]) == ["ok"] * 4 and not folds["fused"].any()
    assert all(math.isfinite(value) for value in folds["val_loss"])
    assert folds.loc[folds["strategy"] == "constant", "val_accuracy"].min() > 0.5
    err = capsys.readouterr().err
    assert "Keras dtype policy 'mixed_bfloat16'" in err
    assert "training.precision 'mixed_bfloat16'" in err  # why the folds were not fused


def test_the_policy_is_float32_again_after_a_failing_run(tmp_path):
    from kfold_clr import run_experiment

    experiment = copy.deepcopy(_digits_experiment(tmp_path, "mixed_bfloat16"))
    experiment["model"] = {"factory": "test_precision:recording_model", "params": {"fail_when_mixed": True}}
    del experiment["strategies"]["clr"]
    with pytest.raises(ConfigError, match="failing on purpose"):
        run_experiment(experiment, verbosity=0)
    _assert_policy_restored()


@pytest.mark.slow
def test_worker_processes_build_under_the_runs_policy(tmp_path):
    from kfold_clr import run_experiment

    seen = tmp_path / "policies.txt"
    experiment = _digits_experiment(tmp_path, "mixed_bfloat16")
    experiment["model"] = {"factory": "test_precision:recording_model", "params": {"record_to": str(seen)}}
    experiment["execution"] = {"executor": "processes", "workers": 1, "fused_folds": False}
    del experiment["strategies"]["clr"]
    results = run_experiment(experiment, verbosity=0)
    _assert_policy_restored()
    assert list(results.folds["status"]) == ["ok"] * 2
    policies = seen.read_text().split()
    assert policies[0] == "float32" and len(policies) >= 3  # preflight's check, then the worker's folds
    assert set(policies[1:]) == {"mixed_bfloat16"}
