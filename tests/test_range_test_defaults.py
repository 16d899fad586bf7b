"""`lr_range_test` from Python and the YAML's `range_test:` section share one set of defaults (issue 22)."""

import inspect

import keras
import numpy as np
import pytest

from kfold_clr.config.schema import RangeTestConfig
from kfold_clr.range_test import lr_range_test
from kfold_clr.range_test.smoothing import fitted_beta


def test_every_default_of_lr_range_test_is_the_config_models():
    parameters = inspect.signature(lr_range_test).parameters
    shared = [name for name in RangeTestConfig.model_fields if name in parameters]
    assert {"min_lr", "max_lr", "beta", "mode", "method", "smoothing", "divergence_threshold"} <= set(shared)
    for name in shared:
        assert parameters[name].default == RangeTestConfig.model_fields[name].default, name
    assert parameters["min_lr"].default == 1e-5 and parameters["max_lr"].default == 1.0
    assert parameters["beta"].default is None  # fitted to the sweep, as the YAML does


def test_a_range_test_with_the_defaults_sweeps_and_smooths_as_a_run_with_an_empty_range_test_section():

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(), "sparse_categorical_crossentropy")
    result = lr_range_test(model, x, y, iterations=40)
    assert result.settings["min_lr"] == 1e-5 and result.settings["max_lr"] == 1.0
    assert result.settings["beta"] == fitted_beta(40) == 0.6  # 1 - 20/40 clipped at 0.6
    assert result.history["lr"].iloc[0] == pytest.approx(1e-5)
    assert fitted_beta(1000) == 0.98 and fitted_beta(400) == pytest.approx(0.95)
