"""The optimizer table: what it builds, the slots it counts (the memory estimates use them) and the
fused update rules, each checked against a built Keras optimizer."""

import math

import keras
import numpy as np
import pytest

from kfold_clr.config.optimizers import OPTIMIZERS, make_optimizer, momentum_key, slot_names, slots_per_weight
from kfold_clr.config.schema import OptimizerConfig
from kfold_clr.data.memory import branch_bytes
from kfold_clr.training.fused.model import _Optimizer

CONFIGS = [
    {"name": "sgd", "momentum": 0.0},
    {"name": "sgd", "momentum": 0.9},
    {"name": "sgd", "momentum": 0.8, "nesterov": True, "weight_decay": 0.01},
    {"name": "adam", "beta_1": 0.85, "clipnorm": 0.5},
    {"name": "rmsprop", "rho": 0.8, "weight_decay": 0.001},
]


def _model():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), keras.layers.Dense(3)])


def _slot_values(optimizer, model) -> int:
    """Values the built optimizer keeps per model, its step counter and learning rate aside."""
    optimizer.build(model.trainable_variables)
    counters = {"iteration", "learning_rate"}
    return sum(math.prod(v.shape) for v in optimizer.variables if v.path.split("/")[-1] not in counters)


@pytest.mark.parametrize("settings", CONFIGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_slot_count_matches_the_built_keras_optimizer(settings):
    cfg = OptimizerConfig(**settings)
    model = _model()
    weights = sum(math.prod(v.shape) for v in model.trainable_variables)
    assert _slot_values(make_optimizer(cfg, 0.01), model) == slots_per_weight(cfg) * weights


def test_sgd_without_momentum_is_estimated_without_a_momentum_slot():
    model = _model()
    weights = sum(math.prod(v.shape) for v in model.trainable_variables)
    plain, heavy = OptimizerConfig(name="sgd", momentum=0.0), OptimizerConfig(name="sgd", momentum=0.9)
    assert slot_names(plain) == () and slot_names(heavy) == ("m",)
    extra = branch_bytes(model, batch_size=8, optimizer=heavy) - branch_bytes(model, batch_size=8, optimizer=plain)
    assert extra == 4 * weights == 4 * (_slot_values(make_optimizer(heavy, 0.01), model)
                                        - _slot_values(make_optimizer(plain, 0.01), model))


@pytest.mark.parametrize("settings", CONFIGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_built_optimizer_carries_the_configured_hyper_parameters(settings):
    cfg = OptimizerConfig(**settings)
    optimizer = make_optimizer(cfg, 0.01)
    facts = OPTIMIZERS[cfg.name]
    assert type(optimizer).__name__ == facts.keras_class
    for key in facts.hyper_parameters:
        assert getattr(optimizer, key) == pytest.approx(getattr(cfg, key))
    assert optimizer.weight_decay == cfg.weight_decay and optimizer.clipnorm == cfg.clipnorm
    if cfg.name == "rmsprop":
        assert optimizer.momentum == 0.0


def test_momentum_key_names_what_cyclical_momentum_drives():
    assert momentum_key(OptimizerConfig(name="sgd", momentum=0.9)) == "momentum"
    assert momentum_key(OptimizerConfig(name="sgd", momentum=0.0)) is None
    assert momentum_key(OptimizerConfig(name="adam")) == "beta_1"
    assert momentum_key(OptimizerConfig(name="rmsprop")) is None


@pytest.mark.parametrize("settings", CONFIGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_fused_update_follows_keras_per_branch(settings):
    """Two branches with their own LRs, one of them paused for a step, each equal to a Keras
    optimizer stepping a single copy of the weights."""
    import tensorflow as tf

    cfg = OptimizerConfig(**settings)
    rng = np.random.default_rng(0)
    start = rng.normal(size=(2, 4, 3)).astype("float32")
    gradients = rng.normal(size=(4, 2, 4, 3)).astype("float32")
    rates = np.array([0.05, 0.2], "float32")
    active = np.array([[True, True], [True, False], [True, True], [True, True]])
    stacked = tf.Variable(start)
    fused = _Optimizer(cfg, [stacked])
    iterations = tf.Variable(tf.zeros([2], "int32"))
    for step in range(4):
        fused.apply([stacked], [tf.constant(gradients[step])], tf.constant(rates), iterations,
                    tf.constant(active[step]))
        iterations.assign_add(tf.cast(active[step], "int32"))
    assert sorted(fused.slots) == sorted(slot_names(cfg))
    for branch in range(2):
        single = keras.Variable(start[branch])
        optimizer = make_optimizer(cfg, float(rates[branch]))
        for step in range(4):
            if active[step, branch]:
                optimizer.apply([tf.constant(gradients[step, branch])], [single])
        np.testing.assert_allclose(stacked.numpy()[branch], single.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("optimizer", "refused"), [({"name": "sgd", "momentum": 0.0}, True),
                                                    ({"name": "rmsprop"}, True),
                                                    ({"name": "sgd", "momentum": 0.9}, False),
                                                    ({"name": "adam"}, False)])
def test_cyclical_momentum_needs_an_optimizer_with_momentum(tmp_path, optimizer, refused):
    import yaml

    from kfold_clr.config import load_config
    from kfold_clr.errors import ConfigError

    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "data": {"source": "sklearn", "name": "iris"},
        "training": {"epochs": 1, "optimizer": optimizer},
        "strategies": {"oc": {"schedule": "one_cycle", "max_lr": 0.1, "cycle_momentum": {}}}}))
    if not refused:
        assert load_config(path).strategies["oc"].momentum_cycle is not None
        return
    with pytest.raises(ConfigError, match=r"strategies\.oc\.cycle_momentum: .* no momentum to cycle"):
        load_config(path)
