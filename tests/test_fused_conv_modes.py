"""Stacked convolutions run either as one grouped convolution (GPUs) or one convolution per branch
(CPUs); both give each branch exactly what its own fold's model computes."""

import numpy as np
import pytest


@pytest.mark.parametrize(("mode", "side", "runs"), [("grouped", 8, "grouped"), ("split", 8, "split"),
                                                    (None, 8, "grouped"), (None, 40, "split")])
def test_both_ways_of_running_stacked_convolutions_train_each_branch_as_its_fold(mode, side, runs, monkeypatch):
    import keras
    import tensorflow as tf

    from kfold_clr.config import OptimizerConfig
    from kfold_clr.training.fused import vectorize
    from kfold_clr.training.fused.model import StackedModel

    monkeypatch.setattr(vectorize, "CONV_MODE", mode)
    converted = []
    for name in ("_grouped_conv2d", "_split_conv2d"):
        original = getattr(vectorize, name)
        def spy(pfor_input, _f=original, _n=name):
            converted.append(_n)
            return _f(pfor_input)

        monkeypatch.setattr(vectorize, name, spy)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((side, side, 2))
    x = keras.layers.Conv2D(3, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    template = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x)))
    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, side, side, 2)).astype("float32")
    labels = rng.integers(0, 3, 6).astype("int32")
    states = []
    for branch in range(3):  # other initial weights per branch
        kernels = [v.numpy() * (1 + 0.5 * branch) for v in template.trainable_variables]
        states.append((kernels, [v.numpy() for v in template.non_trainable_variables]))
    loss = keras.losses.sparse_categorical_crossentropy
    stacked = StackedModel(template, states, OptimizerConfig(name="sgd"), loss, [], np.full((3, 2), 0.1, "float32"))
    index = np.tile(np.arange(6, dtype="int32"), (1, 3, 1))
    stacked.train_steps(tf.constant(images), tf.constant(labels), index, np.ones((1, 3), bool),
                        np.zeros((1, 3), "int32")).numpy()
    assert converted and converted[-1] == f"_{runs}_conv2d"  # CPU: small inputs grouped, larger split
    trained = stacked.snapshot()[0]
    for branch, (kernels, _) in enumerate(states):
        model = keras.models.clone_model(template)
        model.set_weights(kernels)
        with tf.GradientTape() as tape:
            value = keras.ops.mean(loss(labels, model(images, training=True)))
        grads = tape.gradient(value, model.trainable_variables)
        for stack, variable, grad in zip(trained, model.trainable_variables, grads, strict=True):
            np.testing.assert_allclose(stack[branch], variable.numpy() - 0.1 * grad.numpy(), rtol=1e-5, atol=1e-6)
