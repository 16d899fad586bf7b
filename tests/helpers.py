"""Shared test helpers: the tiny experiment most runner tests start from and a tiny model factory.

Tests import them as `from helpers import ...` (tests/ is on `pythonpath` in pyproject.toml), never
`from tests.conftest import ...`, which breaks when an installed package ships a top-level `tests`.
"""

TINY_EXPERIMENT = {
    "name": "tiny",
    "seed": 3,
    "data": {"source": "synthetic", "name": "classification",
             "params": {"n_samples": 90, "n_features": 6, "n_informative": 4, "n_classes": 3}},
    "model": {"kind": "mlp", "hidden": [8]},
    # Training rows scored (not the default): the tests of exactness compare those scores too.
    "training": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "sgd", "momentum": 0.9},
                 "train_scores": True},
    "cv": {"splitter": "stratified", "n_splits": 3, "n_repeats": 1, "shuffle": True},
    # Tests of the runner's machinery (resume, kills, executors) train fold by fold; the fused
    # path and the `auto` default have their own tests.
    "execution": {"fused_folds": False},
    "strategies": {
        "constant": {"schedule": "constant", "lr": 0.05},
        "clr_reset": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 2,
                      "across_folds": "reset"},
        "clr_continue": {"schedule": "clr", "base_lr": 0.01, "max_lr": 0.1, "step_size": 3,
                         "across_folds": "continue"},
    },
}


def tiny_model(input_shape, n_outputs):
    """A one-layer softmax model: a factory that `cross_validate` imports as "helpers:tiny_model"."""
    import keras

    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(inputs))
