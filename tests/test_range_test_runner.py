"""The LR range test on tiny Keras models: sweep, per-batch records, restore, divergence, outputs."""

import math

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from kfold_clr.range_test import LRSweep, RangeTestResult, Suggestion, lr_range_test, sweep_values

N, D, K = 64, 4, 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(D, K)), axis=1)
    return x, y


def _classifier(optimizer, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(K, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _state(model):
    return ([v.numpy().copy() for v in model.variables], [v.numpy().copy() for v in model.optimizer.variables],
            model.optimizer.get_config())


def _assert_same_state(before, after):
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)  # bit for bit
    for a, b in zip(before[1], after[1]):
        np.testing.assert_array_equal(a, b)
    assert len(before[0]) == len(after[0]) and len(before[1]) == len(after[1])
    assert before[2] == after[2]


# ---------------------------------------------------------------- the sweep


@pytest.mark.parametrize("mode", ["linear", "exponential"])
def test_sweep_matches_closed_form(mode):
    sweep = LRSweep(1e-4, 1.0, num_steps=9, mode=mode)
    i = np.arange(12)
    t = np.minimum(i, 8) / 8
    expected = 1e-4 + (1.0 - 1e-4) * t if mode == "linear" else 1e-4 * (1.0 / 1e-4) ** t
    np.testing.assert_allclose([float(sweep(s)) for s in i], expected, rtol=1e-5)
    np.testing.assert_allclose(sweep_values(1e-4, 1.0, 9, mode=mode, steps=i), expected, rtol=1e-12)


def test_sweep_config_round_trip():
    sweep = LRSweep(1e-5, 3.0, num_steps=100, mode="linear")
    assert LRSweep.from_config(sweep.get_config()).get_config() == sweep.get_config()
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(sweep))
    assert isinstance(restored, LRSweep) and restored.get_config() == sweep.get_config()
    assert float(LRSweep(0.1, 1.0, num_steps=1)(5)) == pytest.approx(0.1)


# ---------------------------------------------------------------- restoring the model


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    lambda: keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5)),
], ids=["sgd-momentum", "adam-schedule"])
def test_weights_and_optimizer_state_are_restored_bit_for_bit(data, optimizer):
    x, y = data
    model = _classifier(optimizer())
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)  # non-zero slots, iterations = 8
    before = _state(model)
    assert int(model.optimizer.iterations.numpy()) == 8
    assert any(np.abs(v).sum() > 0 for v in before[1][2:])
    lr_before = float(model.optimizer.learning_rate)
    lr_range_test(model, x, y, min_lr=1e-4, max_lr=1.0, iterations=12, batch_size=16)
    _assert_same_state(before, _state(model))
    assert float(model.optimizer.learning_rate) == lr_before
    assert "train_step" not in vars(model)
    # The model trains on exactly as a twin that never saw the test.
    twin = _classifier(optimizer())
    twin.fit(x, y, batch_size=16, epochs=2, verbose=0)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    twin.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


class _Boom(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 3:
            raise RuntimeError("boom")


def test_state_is_restored_after_an_exception_in_a_callback(data):
    x, y = data
    model = _classifier(keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        lr_range_test(model, x, y, min_lr=1e-3, max_lr=10.0, iterations=10, batch_size=16, callbacks=[_Boom()])
    _assert_same_state(before, _state(model))
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)


def test_divergence_stops_the_test_and_restores(data):
    x, y = data
    model = _classifier(keras.optimizers.SGD(0.01))
    before = _state(model)
    result = lr_range_test(model, x, y, min_lr=1e-2, max_lr=1e6, iterations=60, batch_size=8, seed=1)
    h = result.history
    assert result.diverged and len(h) < 60
    first_unused = int(np.argmin(h["used"].to_numpy()))
    assert not h["used"].iloc[-1] and h["used"].iloc[:first_unused].all() and not h["used"].iloc[first_unused:].any()
    assert result.diverged_at_lr == pytest.approx(h["lr"].iloc[first_unused])
    s = h["smoothed_loss"].to_numpy()
    stop = s[first_unused]
    assert not np.isfinite(stop) or stop > 4.0 * np.min(s[:first_unused])
    assert len(result.curve()[0]) == first_unused
    _assert_same_state(before, _state(model))


# ---------------------------------------------------------------- what is recorded


def test_per_batch_loss_is_the_batch_loss_not_the_running_mean():
    rng = np.random.default_rng(5)
    n, batch_size = 50, 16  # batches of 16, 16, 16 and 2
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5]) + 3.0 + rng.normal(0, 1, n)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
    kernel, bias = (w.astype("float64") for w in model.get_weights())
    # LRs of 1e-12: the weights do not move, so each batch's loss is known in closed form.
    result = lr_range_test(model, x, y, min_lr=1e-12, max_lr=2e-12, epochs=1, batch_size=batch_size,
                           smoothing="window", window=2, seed=0)
    order = np.random.default_rng(0).permutation(n)  # the documented data order
    errors = (x.astype("float64") @ kernel + bias)[:, 0] - y
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    expected_loss = [np.mean(errors[b] ** 2) for b in batches]
    expected_mae = [np.mean(np.abs(errors[b])) for b in batches]
    h = result.history
    np.testing.assert_allclose(h["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(h["mae"], expected_mae, rtol=1e-5)
    sizes = np.array([len(b) for b in batches])
    running_mean = np.cumsum(np.array(expected_loss) * sizes) / np.cumsum(sizes)
    assert np.max(np.abs(h["loss"].to_numpy() - running_mean) / running_mean) > 0.01
    np.testing.assert_allclose(h["lr"], 1e-12 * 2.0 ** (np.arange(4) / 3), rtol=1e-12)
    np.testing.assert_allclose(h["smoothed_loss"], np.repeat([np.mean(expected_loss[:2]),
                                                              np.mean(expected_loss[2:])], 2), rtol=1e-5)
    assert result.settings["iterations"] == 4 == math.ceil(n / batch_size)


def test_monitor_accuracy_records_per_batch_accuracy(data):
    x, y = data
    model = _classifier(keras.optimizers.SGD(0.01))
    result = lr_range_test(model, x, y, min_lr=1e-3, max_lr=3.0, iterations=16, batch_size=8, monitor="accuracy")
    acc = result.history["accuracy"].to_numpy()
    np.testing.assert_allclose(acc * 8, np.round(acc * 8), atol=1e-5)  # a batch of 8 scores k/8
    assert result.monitor == "accuracy" and result.higher_is_better
    assert {"smoothed_accuracy", "smoothed_loss"} <= set(result.history.columns)


def test_holdout_evaluation(data):
    x, y = data
    model = _classifier(keras.optimizers.SGD(0.01))
    x_val, y_val = x[:20] + 0.5, y[:20]
    expected = model.evaluate(x_val, y_val, verbose=0, return_dict=True)
    result = lr_range_test(model, x, y, min_lr=1e-12, max_lr=2e-12, iterations=10, batch_size=16,
                           holdout=(x_val, y_val), eval_every=4, monitor="holdout_loss")
    h = result.history
    evaluated = np.flatnonzero(np.isfinite(h["holdout_loss"].to_numpy()))
    np.testing.assert_array_equal(evaluated, [0, 4, 8, 9])
    assert np.isfinite(h["holdout_accuracy"].iloc[evaluated]).all()
    np.testing.assert_allclose(h["holdout_loss"].iloc[evaluated], expected["loss"], rtol=1e-4)
    np.testing.assert_allclose(h["holdout_accuracy"].iloc[evaluated], expected["accuracy"], atol=1e-6)
    lrs, values = result.curve()
    assert len(values) == 4


def test_holdout_fraction_splits_and_validates_monitor(data):
    x, y = data
    model = _classifier(keras.optimizers.SGD(0.01))
    with pytest.raises(ValueError, match=r"`monitor` must be one of \['loss', 'accuracy', 'holdout_loss', "
                                         r"'holdout_accuracy'\]. Received: monitor='val_loss'"):
        lr_range_test(model, x, y, holdout=0.25, monitor="val_loss")
    result = lr_range_test(model, x, y, min_lr=1e-4, max_lr=1.0, epochs=1, batch_size=16, holdout=0.25)
    assert result.settings["n_train"] == 48 and result.settings["n_holdout"] == 16
    assert len(result.history) == 3  # ceil(48 / 16)


# ---------------------------------------------------------------- outputs


def _synthetic_result(method="regime"):
    x = np.linspace(-6, 1, 300)
    v = np.where(x < -4, 1.0, np.where(x < -1, 1.0 - 0.8 * (x + 4) / 3, 0.2 + 2.8 * ((x + 1) / 2) ** 2))
    rng = np.random.default_rng(0)
    loss = v + rng.normal(0, 0.02, len(x))
    history = pd.DataFrame({"iteration": np.arange(300), "lr": 10.0**x, "loss": loss,
                            "used": np.arange(300) < 290})
    settings = {"monitor": "loss", "method": method, "smoothing": "window", "window": 5, "mode": "exponential"}
    return RangeTestResult.from_frame(history, settings)


def test_save_writes_csv_and_png_and_from_frame_round_trips(tmp_path):
    result = _synthetic_result()
    paths = result.save(tmp_path / "rt")
    assert set(paths) == {"csv", "plot"}
    with open(paths["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    again = RangeTestResult.from_frame(pd.read_csv(paths["csv"]), result.settings)
    assert again.suggest() == result.suggest()
    assert again.diverged and again.diverged_at_lr == pytest.approx(10.0 ** np.linspace(-6, 1, 300)[290])


def test_divergence_is_read_from_the_used_column():
    history = pd.DataFrame({"iteration": range(4), "lr": [1e-3, 1e-2, 1e-1, 1.0], "loss": [1.0, 0.5, 0.4, 9.0]})
    result = RangeTestResult.from_frame(history, {})
    assert not result.diverged and result.diverged_at_lr is None
    result = RangeTestResult.from_frame(history.assign(used=[True, True, False, False]), {})
    assert result.diverged and result.diverged_at_lr == 0.1


def test_plot_renders_to_png(tmp_path):
    from kfold_clr.plots.range_test import plot_range_test

    result = _synthetic_result()
    ax = plot_range_test(result.history, monitor="loss", suggestion=result.suggest())
    assert ax.get_xscale() == "log"
    ax.figure.savefig(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_yaml_snippet_and_summary():
    result = _synthetic_result()
    snippet = result.yaml_snippet(Suggestion(1e-5, 0.0123, "regime", ""))
    assert snippet == "base_lr: 1.0e-05\nmax_lr: 0.0123\n"
    assert yaml.safe_load(snippet) == {"base_lr": 1e-5, "max_lr": 0.0123}
    lines = result.summary().splitlines()
    assert lines[0].startswith("regime: base_lr=")
    chosen_last = _synthetic_result(method="min_div").summary().splitlines()
    assert chosen_last[0].startswith("min_div: ")
    with pytest.raises(ValueError, match="Argument `method` must be one of"):
        result.suggest("nope")


# ---------------------------------------------------------------- bad settings


@pytest.mark.parametrize("kwargs, message", [
    ({"min_lr": 0.0}, r"`min_lr` must be > 0. Received: min_lr=0.0"),
    ({"min_lr": 1.0, "max_lr": 0.1}, r"`max_lr` must be > `min_lr`. Received: min_lr=1.0, max_lr=0.1"),
    ({"iterations": 0}, r"`iterations` must be >= 1. Received: iterations=0"),
    ({"epochs": -1}, r"`epochs` must be >= 1. Received: epochs=-1"),
    ({"iterations": 5, "epochs": 1}, r"only one of `iterations` and `epochs`. Received: iterations=5, epochs=1"),
    ({"iterations": 2.5}, r"`iterations` must be an integer >= 1. Received: iterations=2.5"),
    ({"mode": "log"}, r"`mode` must be one of 'exponential', 'linear'. Received: mode='log'"),
    ({"method": "x"}, r"`method` must be one of 'regime', 'steepest', 'valley', 'min_div'. Received: method='x'"),
    ({"smoothing": "median"}, r"`smoothing` must be one of 'ema', 'window'. Received: smoothing='median'"),
    ({"beta": 1.0}, r"`beta` must be in \(0, 1\). Received: beta=1.0"),
    ({"divergence_threshold": 1.0}, r"`divergence_threshold` must be > 1. Received: divergence_threshold=1.0"),
    ({"holdout": 1.5}, r"`holdout` must be None, a fraction in \(0, 1\)"),
    ({"monitor": "f1"}, r"`monitor` must be one of \['loss', 'accuracy'\]. Received: monitor='f1'"),
])
def test_bad_settings(data, kwargs, message):
    x, y = data
    model = _classifier(keras.optimizers.SGD(0.01))
    before = _state(model)
    with pytest.raises(ValueError, match=message):
        lr_range_test(model, x, y, **kwargs)
    _assert_same_state(before, _state(model))


def test_uncompiled_model_is_refused(data):
    x, y = data
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)])
    with pytest.raises(ValueError, match="must be a compiled Keras model"):
        lr_range_test(model, x, y)
